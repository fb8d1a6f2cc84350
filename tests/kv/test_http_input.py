"""Client input the API must refuse with a 400 (nothing proposed) rather
than misread or crash on, and the byte-capped, paged `list`.  One node
behind the real client listener (tests/kv/one_node.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.client import AsyncClient
from liferaft.kv.serve import ServeError, load_token
from tests.kv.one_node import OneNode


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[OneNode]:
    n = OneNode(tmp_path, timeout=2.0)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def _status_and_body(resp: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("rev", [2**63, 2**64, 10**26])
async def test_an_if_revision_past_63_bits_is_a_400_not_a_500(one: OneNode, rev: int) -> None:
    st, body = await one.call("PUT", "/v1/kv/a", raw=b'{"value":"x","if_revision":%d}' % rev)
    assert st == 400 and body["error"] == "bad_request" and "if_revision" in body["message"]
    st, body = await one.call("DELETE", "/v1/kv/a", raw=b'{"if_revision":%d}' % rev)
    assert st == 400 and body["error"] == "bad_request"
    # The largest legal revision (an int64, as etcd's) is accepted as input
    # (it does not hold).
    st, body = await one.call("PUT", "/v1/kv/a", {"value": "x", "if_revision": 2**63 - 1})
    assert st == 412


@pytest.mark.parametrize("field", ["if_value", "if_revision"])
async def test_a_null_condition_is_a_400_that_names_create_only(one: OneNode, field: str) -> None:
    await one.call("PUT", "/v1/kv/k", {"value": "old"})
    st, body = await one.call("PUT", "/v1/kv/k", {"value": "new", field: None})
    assert st == 400 and body["error"] == "bad_request"
    assert '"if_revision": 0' in body["message"]
    st, body = await one.call("DELETE", "/v1/kv/k", {field: None})
    assert st == 400 and '"if_revision": 0' in body["message"]
    st, body = await one.call("GET", "/v1/kv/k")
    assert (st, body["value"]) == (200, "old")  # nothing was written or deleted
    # Leaving the field out is still "no condition".
    st, _ = await one.call("PUT", "/v1/kv/k", {"value": "new"})
    assert st == 200


@pytest.mark.parametrize("path", ["/v1/kv/%zz", "/v1/kv/a%2", "/v1/kv/a%", "/v1/kv/%g0/b"])
async def test_a_malformed_percent_escape_in_a_key_is_a_400(one: OneNode, path: str) -> None:
    # Sent raw: an HTTP client library would re-quote the path.
    req = f"PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    body = b'{"value":"x"}'
    resp = await one.raw(req + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    st, data = _status_and_body(resp)
    assert st == 400 and data["error"] == "bad_request" and "percent" in str(data["message"])


async def test_percent_25_is_a_literal_percent_and_names_its_own_key(one: OneNode) -> None:
    st, _ = await one.call("PUT", "/v1/kv/%25zz", {"value": "pct"})
    assert st == 200
    st, body = await one.call("GET", "/v1/kv?prefix=%25")
    assert [i["key"] for i in body["items"]] == ["%zz"]


def test_a_token_file_open_to_group_or_others_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(f, mode)
        with pytest.raises(ServeError, match="chmod 600"):
            load_token(f)
    os.chmod(f, 0o600)
    assert load_token(f) == "s3cret"


async def test_list_pages_are_capped_by_bytes_and_chain_by_next(tmp_path: Path) -> None:
    one = OneNode(tmp_path, timeout=5.0)
    await one.start()
    try:
        mib = "v" * (1 << 20)
        for i in range(6):
            st, _ = await one.call("PUT", f"/v1/kv/big/{i}", {"value": mib})
            assert st == 200
        await one.call("PUT", "/v1/kv/bigger", {"value": "outside the prefix"})
        keys: list[str] = []
        start = ""
        for _ in range(10):  # bounded: 6 keys in pages of at least one
            st, body = await one.call("GET", f"/v1/kv?prefix=big/&start={start}")
            assert st == 200
            # The default cap is 4 MiB of keys and values per page.
            assert sum(len(i["value"]) for i in body["items"]) <= 4 << 20
            keys += [i["key"] for i in body["items"]]
            if "next" not in body:
                break
            start = body["next"]
        assert keys == [f"big/{i}" for i in range(6)]
        # A count limit pages the same way.
        st, body = await one.call("GET", "/v1/kv?prefix=big/&limit=2")
        assert [i["key"] for i in body["items"]] == ["big/0", "big/1"]
        assert body["next"] == "big/2"
        st, body = await one.call("GET", "/v1/kv?prefix=big/&start=big/5&limit=2")
        assert [i["key"] for i in body["items"]] == ["big/5"] and "next" not in body
    finally:
        await one.stop()


async def test_the_client_and_the_cli_follow_list_pages(tmp_path: Path) -> None:
    # 1 KiB pages over values of 300 bytes: three or so items a page.
    one = OneNode(tmp_path, timeout=5.0, max_list_bytes=1024)
    await one.start()
    try:
        ep = f"127.0.0.1:{one.port}"
        async with AsyncClient(ep, timeout=5) as c:
            for i in range(20):
                await c.put(f"p/{i:02d}", "x" * 300)
            await c.put("q", "outside")
            items, rev = await c.list("p/")
            assert [i.key for i in items] == [f"p/{i:02d}" for i in range(20)]
            assert rev >= max(i.revision for i in items)
            items, _ = await c.list("p/", limit=7)
            assert [i.key for i in items] == [f"p/{i:02d}" for i in range(7)]

        def cli() -> tuple[int, str]:
            r = CliRunner().invoke(
                main, ["kv", "list", "--prefix", "p/", "--json", "--endpoints", ep]
            )
            return r.exit_code, r.output

        code, out = await asyncio.to_thread(cli)  # the CLI runs its own loop
        assert code == 0, out
        assert [i["key"] for i in json.loads(out)["items"]] == [f"p/{i:02d}" for i in range(20)]
    finally:
        await one.stop()
