"""A child process for tests/kv/test_recipes_proc.py: it takes a Lock (or
campaigns in an Election) through a real cluster, says so on stdout, and
holds it until it is killed.

    python -m tests.kv.recipe_child lock|elect ENDPOINTS NAME TTL [VALUE]
"""

from __future__ import annotations

import asyncio
import sys

from liferaft.client import AsyncClient, Election, Lock


async def main(kind: str, endpoints: str, name: str, ttl: int, value: str) -> None:
    async with AsyncClient(endpoints, timeout=10) as c:
        if kind == "lock":
            lock = Lock(c, name, ttl=ttl)
            await lock.acquire()
            assert lock.lease is not None
            print(f"HELD {lock.lease.id} {lock.lease.ttl}", flush=True)
        else:
            e = Election(c, name, ttl=ttl)
            await e.campaign(value)
            assert e.lease is not None
            print(f"LEADER {e.lease.id} {e.lease.ttl}", flush=True)
        await asyncio.sleep(3600)  # held until killed


if __name__ == "__main__":
    kind, eps, name, ttl = sys.argv[1:5]
    asyncio.run(main(kind, eps, name, int(ttl), sys.argv[5] if len(sys.argv) > 5 else ""))
