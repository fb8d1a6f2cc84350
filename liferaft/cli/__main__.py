"""``python -m liferaft.cli``: the same as the ``liferaft`` command."""

from . import run

run()
