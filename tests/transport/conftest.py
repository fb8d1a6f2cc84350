"""Fixtures: TCP transports on 127.0.0.1, port 0, closed after each test."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest

from liferaft.transport import TcpTransport

from .helpers import Recorder

Node = tuple[TcpTransport, Recorder]
MakeCluster = Callable[..., Awaitable[dict[str, Node]]]

FAST = {"min_backoff": 0.01, "max_backoff": 0.05, "handshake_timeout": 2.0}


@pytest.fixture
async def make_cluster() -> AsyncIterator[MakeCluster]:
    """``await make_cluster(["n1", "n2"], cluster_id="c", knows={...}, **kw)``.

    Every node listens on 127.0.0.1:0 and, unless ``knows`` says otherwise,
    knows every other node.  ``per_node`` maps an id to extra keyword
    arguments for its transport.
    """
    made: list[TcpTransport] = []

    async def make(
        ids: Iterable[str] = ("n1", "n2"),
        cluster_id: str = "c1",
        knows: dict[str, Iterable[str]] | None = None,
        per_node: dict[str, dict[str, Any]] | None = None,
        **kw: Any,
    ) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        for i, nid in enumerate(ids):
            args = {**FAST, "rng": random.Random(i), **kw, **(per_node or {}).get(nid, {})}
            cid = args.pop("cluster_id", cluster_id)
            t = TcpTransport(nid, cid, "127.0.0.1:0", **args)
            made.append(t)
            rec = Recorder(nid)
            await t.start(rec)
            assert not t.address.endswith(":0")
            nodes[nid] = (t, rec)
        addrs = {nid: t.address for nid, (t, _) in nodes.items()}
        for nid, (t, _) in nodes.items():
            known = addrs if knows is None else {k: addrs[k] for k in knows.get(nid, ())}
            t.set_peers(known)
        return nodes

    yield make
    # Last made first: a node that keeps dialing the others stops before they go.
    for t in reversed(made):
        await t.close()
