"""A replicated configuration store over HTTP: aiohttp in front of a
``ReplicatedDict``, one process per node.

Start three nodes (three terminals, or three machines with their own
addresses)::

    PEERS=n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103
    python examples/config_service.py --id n1 --peers $PEERS --http 127.0.0.1:8101
    python examples/config_service.py --id n2 --peers $PEERS --http 127.0.0.1:8102
    python examples/config_service.py --id n3 --peers $PEERS --http 127.0.0.1:8103

Then ask any of them; a follower forwards writes to the leader::

    curl -X PUT 127.0.0.1:8102/config/feature.x -d '{"value": true}'
    curl 127.0.0.1:8103/config/feature.x          # {"key": "feature.x", "value": true}
    curl 127.0.0.1:8101/config                    # every key
    curl 127.0.0.1:8101/status                    # role, term, leader

kill -9 the leader: within about a second another node leads and every
acknowledged write is still there.  Reads are linearizable (a ReadIndex
round, docs/runtime.md); ``?consistency=stale`` answers from this node's
own state at once.  Needs ``pip install 'liferaft[kv]'`` (for aiohttp).

What an error means (docs/architecture.md, "Outcomes"): 503 the write was
not applied (retry anywhere); 504 the outcome is unknown (retrying a
``PUT`` of the same value is safe: it is idempotent).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web
from peer_node import emit, main, make_node, parse_args, serve

from liferaft.runtime import Node, NodeError, NodeTimeoutError, ReplicatedDict

CONSISTENCIES = ("linearizable", "lease", "stale")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def make_app(node: Node, store: ReplicatedDict) -> web.Application:
    """The HTTP routes over ``store``; ``node`` answers /status."""

    async def call(request: web.Request, op: Any, *args: Any) -> Any:
        consistency = request.query.get("consistency")
        if consistency is not None:
            if consistency not in CONSISTENCIES:
                raise web.HTTPBadRequest(
                    text=json.dumps({"error": f"consistency must be one of {CONSISTENCIES}"}),
                    content_type="application/json")
            op = op.with_consistency(consistency)
        return await op(*args)

    async def get_all(request: web.Request) -> web.Response:
        return web.json_response(dict(await call(request, store.items)))

    async def by_key(request: web.Request, op: Any, field: str) -> web.Response:
        """``op(key)``; None (no such key) is a 404."""
        key = request.match_info["key"]
        value = await call(request, op, key)
        if value is None:
            return _error(404, f"no key {key!r}")
        return web.json_response({"key": key, field: value})

    async def get_one(request: web.Request) -> web.Response:
        return await by_key(request, store.get, "value")

    async def put(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            body = json.loads(await request.read())
            value = body["value"]
        except (ValueError, TypeError, KeyError):
            return _error(400, 'the body must be JSON: {"value": ...}')
        if value is None:
            return _error(400, "value must not be null (DELETE removes a key)")
        previous = await call(request, store.set, key, value)
        return web.json_response({"key": key, "value": value, "previous": previous})

    async def delete(request: web.Request) -> web.Response:
        return await by_key(request, store.delete, "previous")

    async def status(request: web.Request) -> web.Response:
        st = node.status()
        return web.json_response({
            "id": st.id, "role": st.role, "term": st.term, "leader": st.leader,
            "commit_index": st.commit_index, "applied_index": st.applied_index,
        })

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except NodeTimeoutError as exc:
            return _error(504, str(exc), outcome="unknown")
        except NodeError as exc:  # NotLeader, Stopped, Dropped, StorageFailed: not applied
            return _error(503, str(exc), outcome="not applied")

    app = web.Application(middlewares=[errors])
    app.add_routes([
        web.get("/config", get_all),
        web.get("/config/{key}", get_one),
        web.put("/config/{key}", put),
        web.delete("/config/{key}", delete),
        web.get("/status", status),
    ])
    return app


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    return host, int(port)


def _http_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", required=True, type=_host_port, help="host:port of the HTTP API")


async def run(args: argparse.Namespace) -> None:
    store = ReplicatedDict()
    node = make_node(args, store)
    host, port = args.http
    runner = web.AppRunner(make_app(node, store))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        emit("listening", node=args.id, http=f"{host}:{port}")

        async def idle(stopping: Any) -> None:  # aiohttp serves; nothing else to do
            await stopping.wait()

        await serve(node, idle)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main(run(parse_args(__doc__.splitlines()[0], _http_flag)))
