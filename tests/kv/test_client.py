"""liferaft.client against three in-process nodes: leader discovery, typed
errors, the sync wrapper, and retries that keep the write's session and seq
(more on sessions in test_sessions.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from liferaft.client import (
    AsyncClient,
    BadRequestError,
    Client,
    ClientTimeoutError,
    Item,
    NotFoundError,
    PreconditionFailedError,
    UnauthorizedError,
    UnavailableError,
)
from tests.kv.test_api import Api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    a = Api(tmp_path, timeout=1.0)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()


def endpoints(api: Api) -> str:
    return ",".join(u.removeprefix("http://") for u in api.urls.values())


async def test_async_client_round_trip_and_typed_errors(api: Api) -> None:
    async with AsyncClient(endpoints(api), timeout=5) as c:
        r = await c.put("a/b", "1")
        assert r.prev is None and r.revision > 0
        assert await c.get("a/b") == Item("a/b", "1", r.revision, r.revision, 1)
        assert await c.get("nope") is None
        r2 = await c.cas("a/b", "1", "2")
        assert r2.prev == Item("a/b", "1", r.revision, r.revision, 1)
        with pytest.raises(PreconditionFailedError) as e:
            await c.cas("a/b", "1", "3")
        assert e.value.current == Item("a/b", "2", r2.revision)
        items, rev = await c.list("a/")
        assert [i.key for i in items] == ["a/b"] and rev >= r2.revision
        await c.delete("a/b")
        with pytest.raises(NotFoundError):
            await c.delete("a/b")
        with pytest.raises(BadRequestError):
            await c.put("x" * 5000, "v")
        assert {m["id"] for m in await c.members()} == set(api.c.ids)
        assert c._leader == api.urls[(await api.c.leader()).id].removeprefix("http://")


async def test_writes_go_to_the_leader_even_when_listed_last(api: Api) -> None:
    ld = (await api.c.leader()).id
    eps = [u.removeprefix("http://") for n, u in api.urls.items() if n != ld]
    eps.append(api.urls[ld].removeprefix("http://"))
    async with AsyncClient(eps) as c:
        await c.put("k", "v")
        assert c._leader == eps[-1]


async def test_an_unreachable_endpoint_is_skipped(api: Api) -> None:
    dead = "127.0.0.1:1"
    async with AsyncClient([dead, *[u.removeprefix("http://") for u in api.urls.values()]]) as c:
        await c.put("k", "v")
        assert (await c.get("k")) is not None


async def test_no_quorum_ends_in_a_typed_error_by_the_deadline(api: Api) -> None:
    ld = await api.c.leader()
    for n in api.c.nodes.values():
        if n is not ld:
            await n.stop()
    async with AsyncClient(endpoints(api), timeout=2.5) as c:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises((ClientTimeoutError, UnavailableError)):
            await c.put("k", "v")
        assert loop.time() - t0 < 6


async def test_a_retry_after_an_unknown_outcome_keeps_its_session_and_seq(api: Api) -> None:
    """A 504 (the followers are cut off) is retried with the same session and
    seq once they are back; the write is applied exactly once."""
    ld = await api.c.leader()
    async with AsyncClient(api.urls[ld.id].removeprefix("http://"), timeout=8) as c:
        await c.put("k", "0")
        base = (await c.get("k"))
        assert base is not None
        for n in api.c.nodes.values():
            if n is not ld:
                n.transport.set_peers({})  # type: ignore[attr-defined]
        ld.transport.set_peers({})  # type: ignore[attr-defined]
        sent: list[dict[str, object]] = []
        once = c._once

        async def record(
            ep: str, method: str, path: str, body: object, left: float, *rest: object
        ) -> object:
            if method == "PUT":
                assert isinstance(body, dict)
                sent.append(body)
            return await once(ep, method, path, body, left, *rest)  # type: ignore[arg-type]

        c._once = record  # type: ignore[method-assign]
        task = asyncio.create_task(c.put("k", "1"))
        await asyncio.sleep(1.5)  # at least one attempt timed out (504)
        for n in api.c.nodes.values():
            n.membership.update_peers()
        r = await task
        assert len(sent) >= 2 and all(b == sent[0] for b in sent)  # one session, one seq
        held = api.c.sms[ld.id].session(c.session_id)
        assert held is not None and sent[0]["seq"] in held[1]  # the outcome is held
        got = await c.get("k")
        assert got is not None and got.value == "1" and got.revision == r.revision


async def test_auth_errors_are_typed(tmp_path: Path) -> None:
    a = Api(tmp_path, token="t0k")
    await a.start()
    try:
        async with AsyncClient(endpoints(a)) as c:
            with pytest.raises(UnauthorizedError):
                await c.put("k", "v")
        async with AsyncClient(endpoints(a), token="t0k") as c:
            await c.put("k", "v")
    finally:
        await a.stop()


async def test_the_sync_client_works_from_plain_threads(api: Api) -> None:
    eps = endpoints(api)
    out: list[object] = []

    def work() -> None:
        with Client(eps, timeout=5) as c:
            c.put("s", "v")
            out.append(c.get("s"))
            out.append(c.status()["role"])

    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():  # keep our loop (the cluster's) running meanwhile
        await asyncio.sleep(0.01)
    t.join()
    assert isinstance(out[0], Item) and out[0].value == "v"
    assert out[1] in ("leader", "follower")


async def test_https_and_peer_mtls_end_to_end(tmp_path: Path) -> None:
    """serve() with --client-cert/--client-key (HTTPS) and mutual TLS between
    peers (certificates from trustme); the client speaks HTTPS with its CA."""
    import ssl

    import trustme

    from liferaft.kv.serve import ServeOptions, serve
    from tests.kv.test_api import free_port

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    peer_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(peer_server)
    ca.configure_trust(peer_server)
    peer_server.verify_mode = ssl.CERT_REQUIRED
    peer_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(peer_client)
    peer_client.check_hostname = False
    cert.configure_cert(peer_client)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    peer, cli = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    opts = ServeOptions(
        "n1", tmp_path / "n1", peer, cli, initial_cluster={"n1": peer},
        peer_ssl_server=peer_server, peer_ssl_client=peer_client, client_ssl=server_ctx,
    )
    ready = asyncio.Event()
    task = asyncio.create_task(serve(opts, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with AsyncClient(cli, ssl=client_ctx, timeout=5) as c:
            await c.put("tls", "yes")
            got = await c.get("tls")
            assert got is not None and got.value == "yes"
        async with AsyncClient(cli, timeout=1) as plain:  # no TLS: no answer
            with pytest.raises((UnavailableError, ClientTimeoutError)):
                await plain.get("tls")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
