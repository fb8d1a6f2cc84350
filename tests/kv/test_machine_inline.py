"""Which of the KV machine's batches may run on the event loop
(``KVMachine.may_apply_inline``, the runtime's NodeConfig.inline_apply_entries
in ``liferaft serve``): only those whose work is bounded by their size.  A
range delete, a range read or compare in a txn, a lease revoke (its keys) and
a compaction may touch every key: over half a second for 100 000 keys,
which on the loop stalls every client and the heartbeats."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import TO_END, Compact, DeleteRange, Put, Range, Txn
from liferaft.kv.mvcc.codec import LeaseGrant, LeaseRevoke, OpenSession, Write, encode_command
from liferaft.kv.mvcc.ops import Compare
from liferaft.runtime.statemachine import ApplyEntry
from tests.runtime.cluster import MemCluster
from tests.runtime.test_durable_apply import drive, until

_ONE = Compare(b"a", "version", "=", 1)
_READ_D = (Range(b"d"),)
_WIDE = Compare(b"a", "version", "=", 1, range_end=TO_END)


@pytest.mark.parametrize(
    ("cmd", "inline"),
    [
        (None, True),
        (b"\x7fnot a command", True),  # refused: no work
        (Write(Put(b"k", b"v", prev_kv=True)), True),
        (Write(DeleteRange(b"k")), True),
        (OpenSession(), True),
        (LeaseGrant(0, 60), True),
        (Write(Txn((_ONE,), (Put(b"a", b""), Range(b"b"), DeleteRange(b"c")), _READ_D)), True),
        (Write(Txn(success=(Txn(success=(Put(b"a", b""),)),))), True),
        (Write(DeleteRange(b"a", b"z")), False),
        (Write(DeleteRange(b"", TO_END)), False),
        (Write(Txn(success=(Range(b"a", b"z"),))), False),
        (Write(Txn(failure=(DeleteRange(b"a", TO_END),))), False),
        (Write(Txn((_WIDE,), (Put(b"a", b""),))), False),
        (Write(Txn(success=(Txn(success=(Range(b"a", TO_END),)),))), False),
        (LeaseRevoke(9), False),
        (Compact(5), False),
    ],
)
def test_only_work_bounded_by_its_size_may_run_on_the_loop(
    tmp_path: Path, cmd: Any, inline: bool
) -> None:
    m = KVMachine(tmp_path / "m")
    try:
        data = cmd if isinstance(cmd, bytes) else b"" if cmd is None else encode_command(cmd)
        cheap = ApplyEntry(1, encode_command(Write(Put(b"x", b"y"))), 0.0)
        assert m.may_apply_inline([cheap, ApplyEntry(2, data, 0.0)]) is inline
    finally:
        m.close()


class _Threads(KVMachine):
    """Records the thread each batch ran on, and the batch's indexes."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.ran: list[tuple[int, list[int]]] = []

    def apply_batch(self, entries: Any) -> list[Any]:
        self.ran.append((threading.get_ident(), [e.index for e in entries]))
        return super().apply_batch(entries)


async def test_a_lone_range_delete_is_applied_off_the_loop(tmp_path: Path) -> None:
    c = MemCluster(3, inline_apply_entries=16)
    for nid in c.ids:
        c.sm_factory = lambda nid=nid: _Threads(tmp_path / nid)  # type: ignore[misc]
        await c.make(nid).start()
    try:
        ld = await c.leader()
        main = threading.get_ident()
        await drive(c, ld.propose(encode_command(Write(Put(b"k", b"v")))))
        put = ld.applied
        await drive(c, ld.propose(encode_command(Write(DeleteRange(b"\x00", TO_END)))))
        wide = ld.applied
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        for sm in c.sms.values():
            on = {i: t for t, ixs in sm.ran for i in ixs}
            assert on[put] == main, "a lone put skips the thread hops"
            assert on[wide] != main, "the range delete ran on the event loop"
            assert sm.revision() == 3  # the put, then the delete
    finally:
        await c.stop()
        for sm in c.sms.values():
            sm.close()
