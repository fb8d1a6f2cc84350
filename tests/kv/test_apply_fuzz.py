"""Committed entries are trusted data, never trusted code (docs/architecture.md, Trust
model): applying any committed entry, however odd, must not raise out of
apply or kill a node.

Hypothesis makes committed entries of every kind the log can hold:

- kv commands: well-formed ``Put``/``Delete``/``SetAddr`` with odd fields
  (empty keys, huge revisions, client addresses that are no address at
  all), msgpack maps that almost decode, and junk bytes;
- membership changes whose context is odd: member addresses with no port,
  junk, numbers, nested objects, or not JSON at all.

They go (a) straight into the kv state machine, and (b) into a three-node
runtime cluster on the memory transport, committed through the leader's
core (``Node.rn``), so nothing validates them first, exactly what a buggy
member or an older version could commit.  The memory transport is wrapped to
refuse peer addresses the TCP transport cannot dial (it raises
``ValueError`` from ``set_peers``, as TcpTransport does), so the runtime
meets the same refusals it meets in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.core import ChangeType, ConfChange, ConfChangeError, ConfChangeSingle, NotLeaderError
from liferaft.kv.state import Delete, KVStore, Put, SetAddr, encode_command
from liferaft.runtime import Node
from liferaft.runtime.store import MemStore
from liferaft.transport.base import check_tcp_address, parse_address
from tests.runtime.cluster import MemCluster, fast_config

# -- strategies -------------------------------------------------------------------------

_text = st.text(max_size=40)
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
_rev = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))
_rid = st.one_of(st.none(), _text, st.just(":"), st.just("c:1"))

_puts = st.builds(Put, _text, _text, st.one_of(st.none(), _text), _rev, _rid)
_deletes = st.builds(Delete, _text, st.one_of(st.none(), _text), _rev, _rid)
_setaddrs = st.builds(SetAddr, st.one_of(st.sampled_from(["n1", "n2", "n3"]), _text), _junk_addr)

_msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=True),
        _text,
        st.binary(max_size=16),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=8,
)
_almost_commands = st.builds(
    lambda tag, fields: msgspec.msgpack.encode({"type": tag, **fields}),
    st.sampled_from(["put", "del", "addr", "PUT", "", "nope"]),
    st.dictionaries(
        st.sampled_from(
            [
                "key",
                "value",
                "if_value",
                "if_revision",
                "request_id",
                "node_id",
                "client_addr",
                "extra",
            ]
        ),
        _msgpack_values,
        max_size=5,
    ),
)

kv_entries = st.one_of(
    st.one_of(_puts, _deletes, _setaddrs).map(encode_command),
    _almost_commands,
    st.binary(min_size=1, max_size=64),
)

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
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
    st.one_of(kv_entries.map(lambda b: ("kv", b)), conf_changes().map(lambda c: ("conf", c))),
    min_size=1,
    max_size=6,
)

# -- (a) the state machine --------------------------------------------------------------


def _state(s: KVStore) -> bytes:
    return b"".join(s.snapshot().chunks())


@settings(max_examples=150, deadline=None)
@given(st.lists(kv_entries, min_size=1, max_size=20))
def test_the_kv_state_machine_refuses_or_applies_any_entry_alike_on_every_replica(
    datas: list[bytes],
) -> None:
    """Every entry is applied or refused with ValueError (the runtime's signal
    "this proposal failed"), a refused one changes nothing, two replicas end
    identical, and their snapshot restores to the same state."""
    a, b = KVStore(), KVStore()
    for index, data in enumerate(datas, start=2):
        before = _state(a)
        try:
            a.apply(index, data)
        except ValueError:
            assert _state(a) == before, "a refused entry changed the state"
        with contextlib.suppress(ValueError):
            b.apply(index, data)
    assert _state(a) == _state(b)
    c = KVStore()
    c.restore(a.snapshot().chunks())
    assert _state(c) == _state(a) and c.addrs == a.addrs


# -- (b) the runtime --------------------------------------------------------------------


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
    t.check_address = check_tcp_address  # type: ignore[method-assign]
    return t


class _KVCluster(MemCluster):
    """Three KVStore nodes whose peer addresses look like TCP ones."""

    def __init__(self) -> None:
        super().__init__(3, sm=KVStore, snapshot_entries=4)

    def make(self, nid: str, initial: bool = True) -> Node:
        sm = self.sm_factory()
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


async def _commit(c: _KVCluster, kind: str, item: Any) -> None:
    """Append ``item`` through the leader's core (no validation on the way)
    and wait, in simulated time, until every node has applied it.  A conf
    change the core itself refuses (say, removing a member that is not
    there) is skipped: it never reaches the log."""
    ld = await c.leader()
    assert ld.rn is not None
    try:
        index = ld.rn.propose(item) if kind == "kv" else ld.rn.propose_conf_change(item)
    except ConfChangeError:
        return
    except NotLeaderError:  # leadership moved between the two lines: try once more
        ld = await c.leader()
        assert ld.rn is not None
        index = ld.rn.propose(item) if kind == "kv" else ld.rn.propose_conf_change(item)
    await c.until(
        lambda: all(n.crashed.is_set() or n.applied >= index for n in c.nodes.values()), 10
    )


def _alive(c: _KVCluster) -> None:
    crashed = sorted(nid for nid, n in c.nodes.items() if n.crashed.is_set())
    assert not crashed, f"applying a committed entry killed {crashed}"


async def _still_serving(c: _KVCluster, key: str) -> None:
    ld = await c.leader()
    await c.drive(ld.propose(encode_command(Put(key, "ok"))))
    await c.until(lambda: all(sm.get(key) is not None for sm in c.sms.values()), 10)
    for n in c.nodes.values():
        n.status()  # answers, whatever the member book holds


async def _fuzz_runtime(items: list[tuple[str, Any]]) -> None:
    c = _KVCluster()
    await c.start()
    try:
        await c.leader()
        for kind, item in items:
            await _commit(c, kind, item)
            _alive(c)
        await _still_serving(c, "after-fuzz")
        # A full restart replays (or restores) the same entries.
        await c.stop()
        for nid in c.ids:
            await c.make(nid, initial=False).start()
        await c.leader()
        _alive(c)
        await _still_serving(c, "after-restart")
        states = {_state(sm) for sm in c.sms.values()}
        assert len(states) == 1, "the replicas differ"
    finally:
        await c.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    asyncio.run(_fuzz_runtime([("conf", bad), ("kv", encode_command(SetAddr("n1", "junk")))]))
