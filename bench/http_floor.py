"""What an httptools server would save against aiohttp's, per request (issue 18, option (b)).

    python -m venv /tmp/hv && /tmp/hv/bin/pip install aiohttp uvloop httptools
    /tmp/hv/bin/python bench/http_floor.py --rounds 5   # httptools: no liferaft dependency

One keep-alive connection from an aiohttp client (as ``bench/kv_one_conn.py``),
PUTs of a 100-byte JSON body, a small JSON answer; two servers, each a
child process on uvloop, measured interleaved (A B A B ...):

* ``aiohttp``: aiohttp's low-level ``web.Server`` with a handler that reads
  and decodes the body, as liferaft-kv's hot path (kv/hot_path.py) does;
* ``httptools``: an ``asyncio.Protocol`` over httptools' parser that writes
  the answer from a future's callback, as a proposal's would be.

Neither does any Raft or store work: the difference between them is the
most the client port's HTTP layer could give back. Reports p50 latency and
the server's CPU (utime + stime from /proc) per request. Every child is
killed by PID on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time

SERVER = r'''
import asyncio, json, sys, uvloop
kind, port = sys.argv[1], int(sys.argv[2])
BODY = json.dumps({"revision": 5, "key": "k"}).encode()

async def main():
    loop = asyncio.get_running_loop()
    if kind == "aiohttp":
        from aiohttp import web

        async def handler(req):
            json.loads(await req.read())
            return web.Response(body=BODY, content_type="application/json")

        await loop.create_server(web.Server(handler), "127.0.0.1", port)
    else:
        import httptools

        class Proto(asyncio.Protocol):
            def connection_made(self, t):
                self.t, self.body = t, []
                self.p = httptools.HttpRequestParser(self)

            def data_received(self, d):
                self.p.feed_data(d)

            def on_body(self, b):
                self.body.append(b)

            def on_message_complete(self):
                json.loads(b"".join(self.body))
                self.body = []
                fut = loop.create_future()
                loop.call_soon(fut.set_result, BODY)
                fut.add_done_callback(self.answer)

            def answer(self, f):
                b = f.result()
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(b), b))

        await loop.create_server(Proto, "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
'''


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def one(kind: str, port: int, ops: int) -> tuple[float, float]:
    import aiohttp

    child = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(port)],
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise SystemExit(f"the {kind} server did not start")
        body = json.dumps({"value": "x" * 100}).encode()
        url = f"http://127.0.0.1:{port}/v1/kv/k"
        lat = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            for _ in range(300):  # warm-up
                async with s.put(url, data=body) as r:
                    await r.read()
            c0 = cpu_seconds(child.pid)
            for _ in range(ops):
                t0 = time.perf_counter()
                async with s.put(url, data=body) as r:
                    await r.read()
                lat.append(time.perf_counter() - t0)
            c1 = cpu_seconds(child.pid)
        return statistics.median(lat) * 1e6, (c1 - c0) / ops * 1e6
    finally:
        child.kill()
        child.wait()


def free_port() -> int:
    # Not liferaft.harness.ports: this script runs in any venv with aiohttp,
    # uvloop and httptools, without liferaft's own dependencies.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(rounds: int, ops: int) -> None:
    got: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httptools": []}
    for r in range(rounds):
        for kind, runs in got.items():
            runs.append(await one(kind, free_port(), ops))
            print(f"round {r + 1} {kind}: p50 {runs[-1][0]:.0f} µs, "
                  f"server CPU {runs[-1][1]:.0f} µs/request", flush=True)  # fmt: skip
    print(f"\nmedians of {rounds} rounds, {ops} requests each, one connection")
    print("| server | p50 µs | server CPU µs/request |\n|---|---:|---:|")
    for kind, runs in got.items():
        p50 = statistics.median(x[0] for x in runs)
        cpu = statistics.median(x[1] for x in runs)
        print(f"| {kind} | {p50:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", type=int, default=4000)
    args = ap.parse_args()
    if importlib.util.find_spec("httptools") is None:
        raise SystemExit("httptools is not installed here (see the module doc)")
    asyncio.run(main(args.rounds, args.ops))
