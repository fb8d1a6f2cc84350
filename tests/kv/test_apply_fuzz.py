"""Committed entries are trusted data, never trusted code (docs/architecture.md, Trust
model): applying any committed entry, however odd, must not raise out of
apply or kill a node.

Hypothesis makes committed entries of every kind the log can hold for the KV
machine (liferaft/kv/machine.py, codec in liferaft/kv/mvcc/codec.py):

- every command of the codec with hostile fields: empty, 511/512-byte and
  non-bytes keys, ``range_end`` before ``key``, huge and negative revisions
  and limits, lease ids and TTLs at and past every bound, compactions at 0,
  below the compact revision and in the future, txns with nested txns or
  compactions, thousands of ops, duplicate keys, compare operands of the
  wrong type and compare ops and targets that do not exist, sessions with
  odd ids, seqs and ``lowest_pending``, and OpenSession floods past
  ``max_sessions`` (lowered here);
- msgpack that almost decodes (the right tag with wrong field types, extra
  fields, truncated), another version byte, an entry of the in-memory store
  of earlier builds (a msgpack map), nesting deep enough to exhaust a
  recursive decoder, and junk bytes;
- membership changes whose context is odd: member addresses with no port,
  junk, numbers, nested objects, or not JSON at all.

They go (a) straight into :meth:`KVMachine.apply_batch`, cut into batches
two different ways and also one entry at a time, and (b) into a three-node
runtime cluster on the memory transport, committed through the leader's
core (``Node.rn``), so nothing validates them first, exactly what a buggy
member or an older version could commit.  They are put in the cluster's
entry envelope (liferaft/runtime/entry_format.py) so that they reach the
machine: bare, the runtime itself refuses them first (some are sent bare,
for that refusal).  The memory transport is wrapped to
refuse peer addresses the TCP transport cannot dial (it raises
``ValueError`` from ``set_peers``, as TcpTransport does), so the runtime
meets the same refusals it meets in production.

The named regression tests at the end are the node-killers and divergences
this fuzz found, each fixed in liferaft/kv/mvcc.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.core import ChangeType, ConfChange, ConfChangeError, ConfChangeSingle, NotLeaderError
from liferaft.kv.errors import KVBadRequestError, KVError
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import (
    TO_END,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    Put,
    PutResult,
    Range,
    Txn,
    TxnResult,
    writer,
)
from liferaft.kv.mvcc.codec import (
    MAX_NESTING,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    SessionRef,
    Write,
    decode_command,
    encode_command,
)
from liferaft.kv.mvcc.leases import LeaseGrantResult, LeaseRevokeResult
from liferaft.kv.mvcc.ops import in_range
from liferaft.runtime import Node, entry_format
from liferaft.runtime.statemachine import ApplyEntry
from liferaft.runtime.store import MemStore
from liferaft.transport.base import check_tcp_address, parse_address
from tests.kv.machine_log import Recorder
from tests.runtime.cluster import MemCluster, fast_config
from tests.runtime.test_durable_apply import drive, until

MAX_SESSIONS = 3  # small, so a handful of OpenSession entries floods the table
# Examples per run; raise it for a long hunt offline (the suite keeps it small).
_SCALE = float(os.environ.get("LIFERAFT_FUZZ_SCALE", "1"))

# -- strategies: fields ------------------------------------------------------------------

_U64 = 2**64 - 1
_I64_MIN = -(2**63)
_text = st.text(max_size=40)


def _long(n: int) -> bytes:
    """A key or value of ``n`` bytes (built lazily: short reprs in reports)."""
    return b"k" * n


_keys = st.one_of(
    st.sampled_from([b"a", b"a/1", b"a/2", b"b", b"\x00", b"\xff", b""]),
    st.binary(max_size=6),
    st.builds(_long, st.sampled_from([511, 512, 4096])),
)
_range_ends = st.one_of(
    st.none(), st.just(TO_END), st.just(b""), st.sampled_from([b"a0", b"b", b"\x00\x00"]), _keys
)
_values = st.one_of(st.binary(max_size=8), st.just(b""), st.builds(_long, st.just(70_000)))
_bigints = st.sampled_from([_I64_MIN, -1, 0, 2**63 - 1, 2**63, _U64])
_revs = st.one_of(st.integers(0, 12), _bigints)
# Ids the entries of one example can name: log indices (grants of id 0,
# OpenSession) are small, so small ids hit live leases and sessions.
_ids = st.one_of(st.integers(0, 30), _bigints)
_ttls = st.one_of(st.integers(-2, 5), st.sampled_from([9_000_000_000, 9_000_000_001, _U64]))
_targets = st.sampled_from(["value", "version", "create_revision", "mod_revision", "lease"])
_cmp_ops = st.sampled_from(["=", "!=", "<", ">"])
_operands = st.one_of(st.binary(max_size=3), _revs)

_puts = st.builds(Put, _keys, _values, lease=_ids, prev_kv=st.booleans())
_deletes = st.builds(DeleteRange, _keys, _range_ends, prev_kv=st.booleans())
_ranges = st.builds(
    Range,
    _keys,
    _range_ends,
    revision=_revs,
    limit=st.one_of(st.integers(-1, 3), _bigints),
    keys_only=st.booleans(),
    count_only=st.booleans(),
)
_compares = st.builds(Compare, _keys, _targets, _cmp_ops, _operands)
# Fields of the wrong kind and ops that a txn may not hold: msgspec encodes
# a struct whatever its fields hold, so these reach the decoder as the
# bytes a buggy encoder would commit.
_odd_compares = st.builds(
    Compare,
    _keys,
    st.one_of(_targets, st.sampled_from(["", "value ", "revision", "ttl"])),
    st.one_of(_cmp_ops, st.sampled_from(["==", "<=", "", "in"])),
    st.one_of(_operands, st.just(1.5), st.none(), st.text(max_size=3), st.just([1])),
)
_txn_ops = st.one_of(_puts, _deletes, _ranges)
_nested: st.SearchStrategy[Any] = st.deferred(lambda: st.one_of(_txns, st.builds(Compact, _revs)))
_txns: st.SearchStrategy[Txn] = st.builds(
    Txn,
    st.lists(st.one_of(_compares, _odd_compares), max_size=3).map(tuple),
    st.lists(st.one_of(_txn_ops, _txn_ops, _nested), max_size=4).map(tuple),
    st.lists(_txn_ops, max_size=3).map(tuple),
)


def _many_ops(n: int, dup: bool) -> Txn:
    """A txn of thousands of ops; ``dup``: one key put twice (refused)."""
    ops: list[Any] = [Put(b"m%05d" % i, b"") for i in range(n)]
    ops += [DeleteRange(b"n%05d" % i, b"n%05dz" % i) for i in range(n)]
    if dup:
        ops.append(Put(b"m00000", b"again"))
    return Txn(success=tuple(ops))


_sessions = st.one_of(
    st.none(), st.builds(SessionRef, _ids, st.one_of(st.integers(0, 4), _bigints), _revs)
)
_writes = st.builds(
    Write,
    st.one_of(_puts, _deletes, _txns, st.builds(_many_ops, st.just(1500), st.booleans())),
    _sessions,
)
_commands = st.one_of(
    _writes,
    _writes,
    st.just(OpenSession()),
    st.builds(LeaseGrant, _ids, _ttls),
    st.builds(LeaseRevoke, _ids),
    st.builds(Compact, _revs),
)


def _encode(cmd: Any) -> bytes:
    """``encode_command``, for structs whatever their fields hold (an int
    past 64 bits cannot be msgpack: those stand as junk)."""
    try:
        return encode_command(cmd)
    except (OverflowError, TypeError):
        return b"\x01\xc1"


# -- strategies: bytes that almost decode ---------------------------------------------------

_msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=_I64_MIN, max_value=_U64),
        st.floats(allow_nan=True),
        _text,
        st.binary(max_size=16),
        # ext types, the timestamp (-1) among them, of every length
        st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=13)),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=8,
)
_fields = st.dictionaries(
    st.sampled_from(
        [
            "op",
            "session",
            "id",
            "ttl",
            "revision",
            "key",
            "value",
            "lease",
            "range_end",
            "compare",
            "success",
            "failure",
            "extra",
        ]
    ),
    _msgpack_values,
    max_size=4,
)
_almost = st.builds(
    lambda tag, fields: b"\x01" + msgspec.msgpack.encode({"type": tag, **fields}),
    st.sampled_from(
        ["Write", "OpenSession", "LeaseGrant", "LeaseRevoke", "Compact", "Put", "Txn", "", "write"]
    ),
    _fields,
)
# A real command with one field of the wrong kind or one field too many.
_wrong_field = st.builds(
    lambda cmd, name, value: (
        b"\x01" + msgspec.msgpack.encode({**msgspec.to_builtins(cmd), name: value})
    ),
    st.one_of(
        st.builds(LeaseGrant, st.integers(0, 9), st.integers(1, 9)),
        st.builds(LeaseRevoke, st.integers(1, 9)),
        st.builds(Compact, st.integers(1, 9)),
    ),
    st.sampled_from(["id", "ttl", "revision", "extra"]),
    _msgpack_values,
)
# The in-memory store of earlier builds wrote msgpack maps (never version 1).
_legacy = st.builds(
    lambda tag, key, value: msgspec.msgpack.encode({"type": tag, "key": key, "value": value}),
    st.sampled_from(["put", "del", "addr"]),
    _text,
    _text,
)


def _deep(depth: int, where: str) -> bytes:
    """A Put whose extra field (or the op itself) nests ``depth`` arrays deep."""
    nested = b"\x91" * depth + b"\xc0"
    op = msgspec.msgpack.encode({"type": "Put", "key": b"k", "value": b"v"})
    if where == "op":
        op = b"\x84" + op[1:] + msgspec.msgpack.encode("x") + nested
    head = b"\x83" if where == "write" else b"\x82"
    body = msgspec.msgpack.encode("type") + msgspec.msgpack.encode("Write")
    body += msgspec.msgpack.encode("op") + op
    if where == "write":
        body += msgspec.msgpack.encode("x") + nested
    return b"\x01" + head + body


_deeps = st.builds(
    _deep, st.sampled_from([30, 200, 900, 2_000, 50_000]), st.sampled_from(["op", "write"])
)


@st.composite
def _truncated(draw: st.DrawFn) -> bytes:
    data = _encode(draw(_commands))
    return data[: draw(st.integers(1, max(1, len(data) - 1)))]


@st.composite
def _other_version(draw: st.DrawFn) -> bytes:
    data = _encode(draw(_commands))
    return bytes([draw(st.integers(0, 255).filter(lambda v: v != 1))]) + data[1:]


kv_entries = st.one_of(
    _commands.map(_encode),
    _commands.map(_encode),
    _almost,
    _wrong_field,
    _legacy,
    _deeps,
    _truncated(),
    _other_version(),
    st.binary(min_size=1, max_size=64),
    st.just(b""),  # a no-op or membership entry
)

# -- (a) the state machine -----------------------------------------------------------------

_RESULTS = (
    PutResult,
    DeleteResult,
    TxnResult,
    CompactResult,
    LeaseGrantResult,
    LeaseRevokeResult,
    int,
    type(None),
)


def _same(r: Any) -> Any:
    """A result as replicas must agree on it (an error by class, code and text)."""
    if isinstance(r, KVError):
        return (type(r).__name__, r.code, str(r), r.extra)
    return r


def _data(m: KVMachine) -> Any:
    """Everything replicated but the sessions: revisions, every version of
    every key still kept, the leases and their keys."""
    rev, compact = m.revision(), m.compact_revision()
    history = [
        m.range(Range(b"\x00", TO_END, revision=r)).kvs for r in range(max(compact, 1), rev + 1)
    ]
    leases = [(lease, ttl, m.lease(lease)) for lease, ttl in m.leases()]
    return rev, compact, history, leases


def _state(m: KVMachine, history: bool = True) -> Any:
    """The replicated state (``history``: every version, else the current ones)."""
    sessions = [(sid, m.session(sid)) for sid in m.sessions()]
    data = _data(m) if history else (m.revision(), m.compact_revision(), _everything(m), m.leases())
    return data, sessions, m.applied_index()


def _everything(m: KVMachine) -> Any:
    return m.range(Range(b"\x00", TO_END)).kvs


def _is_session_write(data: bytes) -> bool:
    """A session write counts as a use of its session even when refused."""
    try:
        cmd = decode_command(data)
    except KVError:
        return False
    return isinstance(cmd, Write) and cmd.session is not None


def _batches(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(zip(edges, edges[1:], strict=False))


def _machine(path: Path) -> tuple[KVMachine, Recorder]:
    rec = Recorder()
    return KVMachine(path, sync=False, listener=rec, max_sessions=MAX_SESSIONS), rec


def _apply_all(
    m: KVMachine,
    entries: list[ApplyEntry],
    spans: list[tuple[int, int]],
    each: Callable[[ApplyEntry, Any, Any], None] | None = None,
) -> list[Any]:
    out: list[Any] = []
    for lo, hi in spans:
        before = _state(m, history=False) if each is not None else None
        results = m.apply_batch(entries[lo:hi])  # must never raise
        assert len(results) == hi - lo, "an entry without a result"
        for r in results:
            assert isinstance(r, (KVError, *_RESULTS)), f"not a result: {r!r}"
        if each is not None:
            each(entries[lo], results[0], before)
        out += results
    return out


def _events(rec: Recorder) -> tuple[list[Any], ...]:
    """What the listener was told, batch boundaries left out."""
    fields = ("events", "granted", "revoked")
    return tuple([x for b in rec.batches for x in getattr(b, f)] for f in fields)


@settings(
    max_examples=int(120 * _SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(kv_entries, min_size=1, max_size=24), st.lists(st.integers(0, 30), max_size=6))
def test_the_kv_machine_applies_or_refuses_any_entry_alike_in_any_batching(
    datas: list[bytes], cuts: list[int]
) -> None:
    """apply_batch never raises and gives every entry a result (a value or a
    KVError instance); a refused entry changes nothing; replicas applying the
    same entries cut into other batches (one at a time, in one batch, at
    random cuts) answer alike, end identical and tell the same events; and a
    checkpoint of one restores to the same state."""
    entries = [ApplyEntry(i, d, 0.0) for i, d in enumerate(datas, start=1)]
    n = len(entries)

    def unchanged_if_refused(e: ApplyEntry, r: Any, before: Any) -> None:
        if not isinstance(r, KVError | None):  # None: an empty entry, applied as nothing
            return
        after = _state(one, history=False)
        if _is_session_write(e.data):
            assert after[0] == before[0], f"a refused session write changed the data: {r}"
        else:
            assert after[:2] == before[:2], f"a refused entry changed the state: {r}"

    with tempfile.TemporaryDirectory() as tmp:
        (one, rec1), (whole, rec2), (cut, rec3) = (_machine(Path(tmp) / s) for s in "abc")
        try:
            r1 = _apply_all(one, entries, [(i, i + 1) for i in range(n)], unchanged_if_refused)
            r2 = _apply_all(whole, entries, [(0, n)])
            r3 = _apply_all(cut, entries, _batches(n, cuts))
            assert [_same(r) for r in r1] == [_same(r) for r in r2] == [_same(r) for r in r3]
            assert _state(one) == _state(whole) == _state(cut), "batching changed the state"
            assert _events(rec1) == _events(rec2) == _events(rec3), "batching changed the events"
            copy, _ = _machine(Path(tmp) / "d")
            try:
                copy.restore(whole.checkpoint_chunks())
                assert _state(copy) == _state(whole)
            finally:
                copy.close()
        finally:
            for m in (one, whole, cut):
                m.close()


# -- (b) the runtime ----------------------------------------------------------------------

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_junk_addr = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "",
            ":",
            "junk",
            "127.0.0.1:",
            ":80",
            "127.0.0.1:99999",
            "[::1",
            "a:b:c",
            "127.0.0.1:-1",
            "host:0x50",
            "\x00:1",
            "ünï:1",
            "127.0.0.1:8080 ",
        ]
    ),
    _text,
)
_info = st.one_of(
    st.fixed_dictionaries({"addr": _junk_addr}),
    st.fixed_dictionaries({"addr": _json_values}),
    st.dictionaries(_text, st.one_of(_text, st.integers(), st.none()), max_size=3),
    st.one_of(st.none(), st.integers(), _text, st.lists(st.integers(), max_size=2)),
)


@st.composite
def contexts(draw: st.DrawFn, node_id: str) -> bytes:
    """The context of a conf change: usually JSON naming ``node_id`` with odd
    info, sometimes JSON of another shape, sometimes not JSON at all."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return json.dumps({node_id: draw(_info)}).encode()
    if kind == 1:
        other = draw(st.sampled_from(["n1", "n2", "n3", node_id]))
        return json.dumps({other: draw(_info), node_id: draw(_info)}).encode()
    if kind == 2:
        return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), _text))).encode()
    return draw(st.binary(max_size=32))


@st.composite
def conf_changes(draw: st.DrawFn) -> ConfChange:
    """A learner joining (new ids, odd contexts), or the learner ``x1`` leaving
    (a no-op if it never joined: the entry is applied all the same)."""
    if draw(st.booleans()):
        nid = draw(st.sampled_from(["x1", "x2", "learner with spaces", "ü"]))
        return ConfChange(
            (ConfChangeSingle(ChangeType.ADD_LEARNER, nid),), context=draw(contexts(nid))
        )
    return ConfChange(
        (ConfChangeSingle(ChangeType.REMOVE_NODE, "x1"),), context=draw(contexts("x1"))
    )


entries = st.lists(
    st.one_of(
        kv_entries.map(lambda b: ("kv", b)),
        kv_entries.map(lambda b: ("kv", b)),
        st.binary(min_size=1, max_size=24).map(lambda b: ("raw", b)),
        conf_changes().map(lambda c: ("conf", c)),
    ),
    min_size=1,
    max_size=6,
)


def _strict_transport(c: MemCluster, nid: str) -> Any:
    """The node's memory transport, refusing what TcpTransport refuses: an
    address that is not HOST:PORT fails ``check_address`` and raises
    ValueError in ``set_peers``."""
    t = c.net.transport(nid)
    plain = t.set_peers

    def set_peers(peers: Mapping[str, str]) -> None:
        for addr in peers.values():
            parse_address(addr)
        plain(peers)

    t.set_peers = set_peers  # type: ignore[method-assign]
    # The transport contract: check_address refuses what set_peers would.
    t.check_address = check_tcp_address  # type: ignore[method-assign,assignment]
    return t


class _KVCluster(MemCluster):
    """Three KVMachine nodes (LMDB under ``tmp``) whose peer addresses look
    like TCP ones; a restarted node reopens its own store."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(3, snapshot_entries=4)
        self.tmp = tmp

    def make(self, nid: str, initial: bool = True) -> Node:
        if nid in self.sms:
            self.sms[nid].close()
        sm = KVMachine(self.tmp / nid, sync=False, max_sessions=MAX_SESSIONS)
        book = {i: f"127.0.0.1:{7000 + k}" for k, i in enumerate(self.ids, start=1)}
        node = Node(
            fast_config(nid, **self.cfg),
            sm,
            _strict_transport(self, nid),
            store=self.stores.setdefault(nid, MemStore()),
            initial_members=book if initial else None,
            clock=self.clock,
        )
        self.nodes[nid] = node
        self.sms[nid] = sm
        return node

    def close(self) -> None:
        for sm in self.sms.values():
            sm.close()


def _propose(ld: Node, kind: str, item: Any) -> int:
    """Append through the core: kv bytes in the cluster's entry envelope (so
    they reach the machine as they are), "raw" bytes without it (the
    runtime's own refusal of a bad envelope), or a conf change."""
    assert ld.rn is not None
    if kind == "conf":
        return ld.rn.propose_conf_change(item)
    if kind == "kv":
        item = entry_format.wrap(ld.applier.entry_format, 0.0, item)
    return ld.rn.propose(item)


async def _commit(c: _KVCluster, kind: str, item: Any) -> None:
    """Append ``item`` through the leader's core (no validation on the way)
    and wait until every node has applied it.  A conf change the core itself
    refuses (say, removing a member that is not there) is skipped: it never
    reaches the log."""
    ld = await c.leader()
    try:
        index = _propose(ld, kind, item)
    except ConfChangeError:
        return
    except NotLeaderError:  # leadership moved between the two lines: try once more
        index = _propose(await c.leader(), kind, item)
    await until(c, lambda: all(n.crashed.is_set() or n.applied >= index for n in c.nodes.values()))


def _alive(c: _KVCluster) -> None:
    crashed = sorted(nid for nid, n in c.nodes.items() if n.crashed.is_set())
    assert not crashed, f"applying a committed entry killed {crashed}"


async def _still_serving(c: _KVCluster, key: bytes) -> None:
    ld = await c.leader()
    await drive(c, ld.propose(encode_command(Write(Put(key, b"ok")))))
    await until(c, lambda: all(_get(sm, key) for sm in c.sms.values()))
    for n in c.nodes.values():
        n.status()  # answers, whatever the member book holds


def _get(m: KVMachine, key: bytes) -> bool:
    with m.read() as view:
        return view.get(key) is not None


async def _fuzz_runtime(items: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        c = _KVCluster(Path(tmp))
        await c.start()
        try:
            await c.leader()
            for kind, item in items:
                await _commit(c, kind, item)
                _alive(c)
            await _still_serving(c, b"after-fuzz")
            # A full restart resumes after each store's applied index.
            await c.stop()
            for nid in c.ids:
                await c.make(nid, initial=False).start()
            await c.leader()
            _alive(c)
            await _still_serving(c, b"after-restart")
            ld = await c.leader()
            await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
            states = {repr(_state(sm)[:2]) for sm in c.sms.values()}
            assert len(states) == 1, "the replicas differ"
        finally:
            await c.stop()
            c.close()


@settings(
    max_examples=int(50 * _SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(entries)
def test_no_committed_entry_kills_a_node_or_stops_the_cluster(
    items: list[tuple[str, Any]],
) -> None:
    asyncio.run(_fuzz_runtime(items))


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(json.dumps({"n4": {"addr": "127.0.0.1"}}).encode(), id="address-without-port"),
        pytest.param(b"[]", id="context-not-an-object"),
        pytest.param(json.dumps({"n4": {"addr": 5}}).encode(), id="address-not-a-string"),
    ],
)
def test_these_committed_membership_changes_keep_the_cluster_serving(context: bytes) -> None:
    """Fixed examples: the poison pill of issue 12 (defect 1), and two more
    the fuzz found: a context that is JSON but not an object, and an address
    that is a number."""
    bad = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "n4"),), context=context)
    junk = b"\x01" + msgspec.msgpack.encode({"type": "Write", "op": {"type": "Put", "key": 5}})
    asyncio.run(_fuzz_runtime([("conf", bad), ("kv", junk)]))


# -- regressions: what the fuzz found ---------------------------------------------------------


def _apply_at_stack_depth(m: KVMachine, entries: list[ApplyEntry], frames: int) -> list[Any]:
    """``apply_batch`` called with ``frames`` more Python frames on the stack
    (replicas' apply paths differ in depth: plain ``apply``, a thread, a
    newer Python)."""
    if frames:
        return _apply_at_stack_depth(m, entries, frames - 1)
    return m.apply_batch(entries)


@pytest.mark.parametrize("where", ["op", "write"])
def test_regression_deep_nesting_is_refused_alike_at_any_stack_depth(
    tmp_path: Path, where: str
) -> None:
    """Found by the fuzz: an entry nesting ~1000 arrays in a field the
    decoder skips raised RecursionError out of apply_batch (every replica
    down), and one nesting a few hundred decoded on a shallow stack but
    raised on a deeper one (replicas that disagree).  Now any entry deeper
    than the codec's bound is refused the same way on every replica."""
    depths = [MAX_NESTING + 1, 400, 900, 2_000, 50_000]
    shallow, deep = (_machine(tmp_path / s)[0] for s in "ab")
    try:
        for i, depth in enumerate(depths, start=1):
            entry = [ApplyEntry(i, _deep(depth, where), 0.0)]
            got = [_apply_at_stack_depth(m, entry, f)[0] for m, f in ((shallow, 0), (deep, 700))]
            refused = [isinstance(r, KVError) and r.code == "bad_command" for r in got]
            assert all(refused), (depth, got)
            assert _same(got[0]) == _same(got[1])
        assert _state(shallow) == _state(deep) and shallow.revision() == 1
        # A command nested as deep as the bound allows still applies.
        ok = [ApplyEntry(len(depths) + 1, _deep(MAX_NESTING - 3, where), 0.0)]
        assert isinstance(shallow.apply_batch(ok)[0], PutResult)
    finally:
        shallow.close()
        deep.close()


class _CountedKey(bytes):
    """A key that counts the order comparisons made with it."""

    compared = 0
    __hash__ = bytes.__hash__


def _counting(name: str) -> Callable[[bytes, object], bool]:
    plain = getattr(bytes, name)

    def compare(self: bytes, other: object) -> bool:
        _CountedKey.compared += 1
        return bool(plain(self, other))

    return compare


for _name in ("__lt__", "__gt__", "__le__", "__ge__"):
    setattr(_CountedKey, _name, _counting(_name))


def test_regression_a_txn_of_many_puts_and_delete_ranges_is_checked_in_near_linear_time(
    tmp_path: Path,
) -> None:
    """Found by the fuzz (most of its run time): etcd's duplicate-key rule was
    checked put by delete range, so one committed txn of n puts and n delete
    ranges cost n^2 key comparisons in every replica's apply (a 16 MB entry:
    hours with the apply stalled, again at each restart).  Counted in
    comparisons, not seconds."""
    n = 2_000
    ok, dup = _many_ops(n, False), _many_ops(n, True)
    inside = Txn(success=(*ok.success, Put(b"n01999x", b"in a range")))
    counted = tuple(msgspec.structs.replace(o, key=_CountedKey(o.key)) for o in ok.success)
    _CountedKey.compared = 0
    writer.check_no_duplicate_keys(counted)
    assert _CountedKey.compared <= 50 * n, f"{_CountedKey.compared} comparisons for {n} + {n} ops"
    m, _ = _machine(tmp_path / "m")
    try:
        results = m.apply_batch(
            [
                ApplyEntry(i, encode_command(Write(t)), 0.0)
                for i, t in enumerate((ok, dup, inside), 1)
            ]
        )
        assert isinstance(results[0], TxnResult) and results[0].succeeded
        for r in results[1:]:
            assert isinstance(r, KVError) and "duplicate key" in str(r)
    finally:
        m.close()


_branch_keys = st.sampled_from([b"a", b"b", b"c", b"ca", b"d", b"\x00", b"\xff"])
_branch = st.lists(
    st.one_of(
        st.builds(Put, _branch_keys, st.just(b"")),
        st.builds(DeleteRange, _branch_keys, st.one_of(st.none(), st.just(TO_END), _branch_keys)),
        st.builds(Range, _branch_keys),
    ),
    max_size=7,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(_branch)
def test_the_duplicate_key_rule_is_etcds_pairwise_rule(branch: tuple[Any, ...]) -> None:
    """The faster check refuses exactly what the pairwise definition does: a
    key put twice, or a put inside any delete range of the branch."""
    puts = [o.key for o in branch if isinstance(o, Put)]
    dels = [(o.key, o.range_end) for o in branch if isinstance(o, DeleteRange)]
    clash = len(set(puts)) < len(puts) or any(in_range(k, s, e) for k in puts for s, e in dels)
    try:
        writer.check_no_duplicate_keys(branch)
    except KVBadRequestError:
        assert clash
    else:
        assert not clash
