"""A power loss undoes the KV store's last commit (``metasync=False``,
LMDB's ``MDB_NOMETASYNC``): the node restarts at the previous commit's
applied index, and the runtime applies the lost entries again from its WAL
(docs/kv.md, "LMDB sync policy").  One node, so its own WAL is the only
place the lost entries can come from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import Put, Range
from liferaft.kv.mvcc.codec import Write, encode_command
from tests.kv.mvcc.powerloss import lose_last_meta, meta_pages
from tests.runtime.cluster import TcpCluster


async def test_a_node_restarts_at_the_synced_index_and_replays_the_rest(tmp_path: Path) -> None:
    c = TcpCluster(tmp_path, 1, sm_at=lambda p: KVMachine(p, metasync=False))
    await c.start()
    try:
        ld = await c.leader()
        for i in range(5):
            await ld.propose(encode_command(Write(Put(b"k%d" % i, b"v"))), timeout=10)
        m = c.sms["n1"]
        p = m.applied_index()
        before, data = meta_pages(m.store), m.store.path / "data.mdb"
        await ld.propose(encode_command(Write(Put(b"late", b"x"))), timeout=10)
        a = m.applied_index()
        # One commit since ``before``, and only the one before it is synced.
        assert a > p == m.synced_applied_index()
        await c.stop()
        lose_last_meta(data, before)

        node = await c.make("n1")
        m = c.sms["n1"]
        assert m.applied_index() == p, "the power loss did not undo the last commit"
        assert not m.range(Range(b"late")).kvs
        await node.start()
        for _ in range(500):  # bounded: 10 s
            if node.applied >= a:
                break
            await asyncio.sleep(0.02)
        assert node.applied >= a and not node.crashed.is_set()
        assert [kv.value for kv in m.range(Range(b"late")).kvs] == [b"x"]
        assert m.applied_index() >= a
    finally:
        await c.stop()
