"""What the coordination API tests share (tests/kv/test_coord_*.py): one
in-process 3-node :class:`~tests.kv.test_api.Api` per test module, and a
reader of the NDJSON watch stream (docs/kv.md, "Watch")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.kv.test_api import Api


def module_api(**kw: Any) -> Any:
    """A module-scoped ``api`` fixture: one cluster for every test of the module."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
        a = Api(Path(tmp_path_factory.mktemp("coord")), timeout=2.0, **kw)
        await a.start()
        try:
            yield a
        finally:
            await a.stop()

    return api


async def put(api: Api, nid: str, key: str, value: str, **kw: Any) -> int:
    """Put through ``nid``; the store revision of the write."""
    st, body, _ = await api.call(nid, "PUT", f"/v1/kv/{key}", {"value": value, **kw})
    assert st == 200, body
    rev: int = body["revision"]
    return rev


class Stream:
    """One ``GET /v1/watch`` response, read a line at a time."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.status = resp.status

    async def line(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
        assert raw, "the stream ended"
        got: dict[str, Any] = json.loads(raw)
        return got

    async def events_until(self, revision: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Event lines (skipping progress) up to and including ``revision``."""
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout  # progress lines must not keep it waiting forever
        while not out or out[-1]["revision"] < revision:
            assert loop.time() < end, f"no event at {revision} in {timeout}s: {out}"
            got = await self.line(timeout)
            assert "error" not in got, got
            if "events" in got:
                out.append(got)
        return out

    def close(self) -> None:
        self.resp.close()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def watch(api: Api, nid: str, query: str) -> Stream:
    """Open a watch on ``nid``; a 200 stream has had its ``created`` line read."""
    assert api.http is not None
    resp = await api.http.get(api.urls[nid] + "/v1/watch?" + query)
    s = Stream(resp)
    if resp.status == 200:
        head = await s.line()
        assert head["created"] is True and set(head) == {"created", "start_revision", "revision"}
    return s
