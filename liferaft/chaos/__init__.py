"""liferaft.chaos: fault injection against real liferaft-kv processes."""
