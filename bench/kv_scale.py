"""liferaft-kv with many keys: memory and restart (issue 15, "Memory stays bounded").

Loads KEYS keys of VALUE bytes into a real ``liferaft serve`` cluster
(transactions of 128 puts, the server's largest, over a few concurrent
connections), then reports:

- each node's RssAnon (anonymous resident memory, from /proc: it leaves out
  the store's memory-mapped pages, which the kernel may drop and reread),
  and its RssFile, after the load;
- the store's file size;
- restart: one node is stopped with SIGTERM and started again; the time from
  the start of its process to its first served linearizable read of a key.

    python bench/kv_scale.py --keys 1000000 --value 100 [--nodes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from liferaft.harness.serve import ServeCluster

TXN_OPS = 128


def proc_mem(pid: int) -> dict[str, int]:
    """RssAnon and RssFile of ``pid`` in kB (/proc/PID/status)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("RssAnon", "RssFile", "VmHWM"):
            out[name] = int(rest.split()[0])
    return out


async def load(url: str, keys: int, value: bytes, conns: int) -> float:
    """Put ``keys`` keys through ``url``; the seconds it took."""
    val = value.decode()
    todo = list(range(0, keys, TXN_OPS))
    t0 = time.monotonic()

    async def worker(http: aiohttp.ClientSession) -> None:
        while todo:
            start = todo.pop()
            ops = [{"put": {"key": f"k/{i:08d}", "value": val}}
                   for i in range(start, min(start + TXN_OPS, keys))]  # fmt: skip
            for _ in range(20):
                async with http.post(f"{url}/v1/txn", json={"success": ops}) as r:
                    if r.status == 200:
                        break
                    await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"txn at {start} kept failing: {r.status} {await r.text()}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(conns)))
    return time.monotonic() - t0


def first_read(url: str, key: str, started: float, timeout: float = 120.0) -> float:
    """Seconds from ``started`` to the first 200 for ``key`` at ``url``."""
    import urllib.error
    import urllib.request

    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(f"{url}/v1/kv/{key}", timeout=1.0) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"no read served within {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=None, help="keep the data here")
    a = ap.parse_args()
    root = a.dir or Path(tempfile.mkdtemp(prefix="kv-scale-"))
    try:
        run(a, root)
    finally:
        if a.dir is None:  # a temp dir of 220 MB per million keys: never leave it behind
            shutil.rmtree(root, ignore_errors=True)


def run(a: argparse.Namespace, root: Path) -> None:
    with ServeCluster(root, flags=["--election-timeout", "1000"]) as c:
        c.add_nodes(a.nodes)
        c.start_all()
        c.wait_ready(60)
        url = f"http://{c.nodes['n1'].client}"
        secs = asyncio.run(load(url, a.keys, b"v" * a.value, a.conns))
        time.sleep(2)  # let followers apply
        mem = {n.id: proc_mem(n.pid) for n in c.nodes.values()}
        db = os.path.getsize(next((root / "n1" / "kv").glob("store.*")) / "data.mdb")
        c.stop("n1")
        t0 = time.monotonic()
        c.start("n1")
        served = first_read(url, f"k/{a.keys - 1:08d}", t0)
        after = proc_mem(c.nodes["n1"].pid)
    print(json.dumps({
        "keys": a.keys, "value_bytes": a.value, "nodes": a.nodes,
        "load_seconds": round(secs, 1), "keys_per_second": round(a.keys / secs),
        "rss_kb_after_load": mem, "db_file_bytes": db,
        "restart_to_first_read_seconds": round(served, 2), "rss_kb_after_restart": after,
        "data": str(root) if a.dir else "(temp dir, removed)",
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
