"""The high-level API: commands replicate, apply refuses bad entries, snapshots stream.

A :class:`FakeCluster` stands in for the runtime: its proposer encodes
through the real path (``counter.add(5)``), stamps the leader time from a
clock the test controls, and applies every entry in order to three replicas,
checking that they all reach the same outcome.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.runtime.commands import (
    ENVELOPE_VERSION,
    BadArgumentsError,
    BadEnvelopeError,
    CommandError,
    NotAttachedError,
    Replicated,
    UnknownCommandError,
    command,
    decode_envelope,
    query,
)
from liferaft.runtime.statemachine import (
    BytesSnapshot,
    ChunkReader,
    SnapshotFormatError,
    StateMachine,
    StateSnapshot,
    StreamSnapshot,
    iter_chunks,
    join_chunks,
    rechunk,
)

M = TypeVar("M", bound=Replicated)
T = TypeVar("T")

START = 1_700_000_000.0


class FakeClock:
    """The leader's wall clock, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProposer:
    """What ``runtime.Node`` provides to one replica: propose and read."""

    def __init__(self, cluster: FakeCluster[Any], home: int) -> None:
        self.cluster = cluster
        self.home = home

    async def propose(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> Any:
        self.cluster.proposals.append((data, stamp_time, timeout))
        await asyncio.sleep(0)  # a real proposal suspends until applied
        return self.cluster.replicate(data, stamp_time, self.home)

    async def read(self, fn: Callable[[], T], *, consistency: str = "linearizable") -> T:
        self.cluster.reads.append(consistency)
        await asyncio.sleep(0)
        return fn()


class FakeCluster(Generic[M]):
    """Three replicas of one state machine, fed one log in order.

    ``replicate`` is the leader: it stamps ``data[0:8]`` with the clock when
    asked, appends the entry, applies it to every replica and checks that all
    of them return equal results or raise the same type of exception.
    """

    def __init__(self, factory: Callable[[], M], n: int = 3, clock: FakeClock | None = None):
        self.replicas = [factory() for _ in range(n)]
        self.clock = clock or FakeClock()
        self.log: list[bytes] = []
        self.proposals: list[tuple[bytes, bool, float | None]] = []
        self.reads: list[str] = []
        for i, replica in enumerate(self.replicas):
            replica.attach(FakeProposer(self, i))

    @property
    def leader(self) -> M:
        return self.replicas[0]

    def replicate(self, data: bytes, stamp_time: bool, home: int) -> Any:
        entry = bytearray(data)
        if stamp_time:
            entry[0:8] = struct.pack("<d", self.clock.now)
        self.log.append(bytes(entry))
        index = len(self.log)
        outcomes: list[tuple[bool, Any]] = []
        for replica in self.replicas:
            try:
                outcomes.append((True, replica.apply(index, bytes(entry))))
            except Exception as e:
                outcomes.append((False, e))
        ok, value = outcomes[home]
        for other_ok, other in outcomes:
            assert other_ok == ok, f"replicas disagree on entry {index}: {outcomes}"
            if ok:
                assert other == value
            else:
                assert type(other) is type(value)
        if not ok:
            raise value
        return value

    def assert_agree(self) -> bytes:
        """Every replica serializes to the same snapshot bytes; return them."""
        images = {snapshot_bytes(r) for r in self.replicas}
        assert len(images) == 1, "replicas diverged"
        return images.pop()


def snapshot_bytes(sm: StateMachine) -> bytes:
    snap = sm.snapshot()
    try:
        return b"".join(snap.chunks())
    finally:
        snap.release()


def restored(factory: Callable[[], M], image: bytes, chunk: int = 7) -> M:
    """A fresh instance restored from ``image``, fed in awkward chunk sizes."""
    fresh = factory()
    fresh.restore(iter_chunks(image, chunk))
    return fresh


def stamped(entry: bytes, leader_time: float) -> bytes:
    return struct.pack("<d", leader_time) + entry[8:]


def envelope(name: str, args: list[Any], version: int = ENVELOPE_VERSION) -> bytes:
    return bytes(8) + bytes((version,)) + msgspec.msgpack.encode((name, args))


# --- state machines under test ---------------------------------------------


class Counter(Replicated):
    """The example of the brief: no __state__, public attributes are the state."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @command
    def add(self, n: int) -> int:
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value


class Registry(Replicated):
    """Typed arguments, defaults, keyword-only parameters, time and failing bodies."""

    __state__ = ("entries", "stamps")
    entries: dict[str, list[int]]
    stamps: list[tuple[int, float]]

    def __init__(self) -> None:
        super().__init__()
        self.entries = {}
        self.stamps = []

    @command
    def put(self, key: str, values: list[int], *, replace: bool = False) -> int:
        if not replace and key in self.entries:
            raise KeyError(key)  # raised before mutating: every replica stays equal
        self.entries[key] = values
        self.stamps = [*self.stamps, (self.log_index, self.leader_time)]
        return len(self.entries)

    @command(name="rm", timeout=3.0)
    def remove(self, key: str, default: int = -1) -> int:
        values = self.entries.pop(key, None)
        return default if values is None else sum(values)

    @command
    def now(self) -> float:
        return self.leader_time

    @query(consistency="lease")
    def lookup(self, key: str) -> list[int] | None:
        values = self.entries.get(key)
        return None if values is None else list(values)


# --- commands replicate -----------------------------------------------------


async def test_a_call_replicates_and_resolves_with_the_bodys_result() -> None:
    cluster = FakeCluster(Counter)
    counter = cluster.leader
    assert await counter.add(5) == 5
    assert await counter.add(-2) == 3
    assert [r.value for r in cluster.replicas] == [3, 3, 3]
    cluster.assert_agree()
    # every command is stamped with the leader's time
    assert all(stamp for _, stamp, _ in cluster.proposals)


async def test_a_follower_gets_its_own_replicas_result() -> None:
    cluster = FakeCluster(Counter)
    follower = cluster.replicas[2]
    assert await follower.add(7) == 7
    assert cluster.leader.value == 7
    assert await cluster.replicas[1].get() == 7


async def test_commands_are_registered_by_name_at_class_creation() -> None:
    assert set(Counter.commands) == {"add"}
    assert Counter.commands["add"] is Counter.add
    assert set(Registry.commands) == {"put", "rm", "now"}
    assert Registry.remove.name == "rm"
    assert set(Registry.queries) == {"lookup"}
    assert Registry.put.__wrapped__.__name__ == "put"
    cluster = FakeCluster(Registry)
    await cluster.leader.put("a", [1, 2])
    assert await cluster.leader.remove("a") == 3
    assert decode_envelope(cluster.log[-1]).command == "rm"


async def test_local_runs_the_body_without_proposing() -> None:
    cluster = FakeCluster(Counter)
    assert Counter.add.local(cluster.leader, 4) == 4
    assert cluster.leader.add.local(1) == 5
    assert Counter.get.local(cluster.leader) == 5
    assert cluster.proposals == [] and cluster.replicas[1].value == 0


async def test_arguments_are_decoded_with_the_type_hints() -> None:
    cluster = FakeCluster(Registry)
    assert await cluster.leader.put("k", [1, 2], replace=True) == 1
    assert await cluster.leader.put("j", values=[3]) == 2
    for replica in cluster.replicas:
        assert replica.entries == {"k": [1, 2], "j": [3]}
    assert await cluster.leader.remove("missing") == -1
    assert await cluster.leader.remove("missing", default=9) == 9
    cluster.assert_agree()


async def test_keyword_only_and_default_arguments_travel_in_signature_order() -> None:
    data = Registry.put.encode("k", [1], replace=True)
    env = decode_envelope(data)
    assert env.leader_time == 0.0 and data[:8] == bytes(8) and data[8] == ENVELOPE_VERSION
    assert env.command == "put"
    assert [msgspec.msgpack.decode(a) for a in env.args] == ["k", [1], True]
    # the caller fills defaults in, so replicas never depend on them...
    assert [
        msgspec.msgpack.decode(a) for a in decode_envelope(Registry.remove.encode("k")).args
    ] == [
        "k",
        -1,
    ]


async def test_an_entry_without_trailing_defaulted_arguments_still_applies() -> None:
    # ...but an entry from an older version, without a newer trailing parameter, applies.
    registry = Registry()
    registry.entries["k"] = [4, 5]
    assert registry.apply(1, envelope("rm", ["k"])) == 9
    assert registry.apply(2, envelope("put", ["k", [1]])) == 1
    assert registry.entries == {"k": [1]}


# --- bad calls are refused before proposing --------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("x",), {}, "argument 'n': Expected `int`, got `str`"),
        ((1.5,), {}, "argument 'n': Expected `int`, got `float`"),
        ((True,), {}, "Expected `int`, got `bool`"),
        ((), {}, "missing a required argument: 'n'"),
        ((1, 2), {}, "too many positional arguments"),
        ((1,), {"m": 2}, "unexpected keyword argument 'm'"),
        ((object(),), {}, "argument 'n' cannot be encoded"),
        ((2**70,), {}, "argument 'n' cannot be encoded"),
    ],
)
async def test_bad_arguments_are_refused_before_proposing(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    cluster = FakeCluster(Counter)
    with pytest.raises(BadArgumentsError, match=match) as info:
        _ = cluster.leader.add(*args, **kwargs)
    assert isinstance(info.value, CommandError) and isinstance(info.value, TypeError)
    assert "Counter.add()" in str(info.value)
    assert cluster.proposals == [] and cluster.log == []


async def test_nested_types_are_checked_before_proposing() -> None:
    cluster = FakeCluster(Registry)
    with pytest.raises(
        BadArgumentsError, match=r"argument 'values': Expected `int`, got `str` - at `\$\[1\]`"
    ):
        _ = cluster.leader.put("k", [1, "2"])  # type: ignore[list-item]
    with pytest.raises(BadArgumentsError, match="argument 'replace'"):
        _ = cluster.leader.put("k", [1], replace="yes")  # type: ignore[arg-type]
    with pytest.raises(BadArgumentsError, match="lookup"):
        _ = cluster.leader.lookup(1, 2)  # type: ignore[call-arg, arg-type]
    assert cluster.proposals == [] and cluster.reads == []


async def test_an_unattached_instance_refuses_calls() -> None:
    counter = Counter()
    with pytest.raises(NotAttachedError, match="not attached"):
        _ = counter.add(1)
    with pytest.raises(NotAttachedError):
        _ = counter.get()
    assert counter.proposer is None


# --- apply refuses bad entries without changing state ----------------------


async def test_unknown_command_at_apply_raises_and_changes_nothing() -> None:
    cluster = FakeCluster(Counter)
    await cluster.leader.add(3)
    before = cluster.assert_agree()
    with pytest.raises(
        UnknownCommandError, match="Counter has no command 'reset'.*known: add"
    ) as info:
        cluster.replicate(envelope("reset", []), True, 0)
    assert info.value.name == "reset" and isinstance(info.value, LookupError)
    assert cluster.assert_agree() == before
    assert await cluster.leader.add(1) == 4  # and the replicas carry on


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (envelope("add", ["x"]), "argument 'n': Expected `int`, got `str`"),
        (envelope("add", []), "missing argument 'n'"),
        (envelope("add", [1, 2]), "takes 1 arguments but the entry carries 2"),
    ],
)
async def test_bad_arguments_at_apply_raise_and_change_nothing(entry: bytes, match: str) -> None:
    cluster = FakeCluster(Counter)
    await cluster.leader.add(3)
    before = cluster.assert_agree()
    with pytest.raises(BadArgumentsError, match=match):
        cluster.replicate(entry, True, 0)
    assert cluster.assert_agree() == before


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (b"", "too short"),
        (bytes(8), "too short"),
        (envelope("add", [1], version=2), "unsupported command envelope version 2"),
        (bytes(9), "unsupported command envelope version 0"),
        (bytes(8) + b"\x01" + b"\xc1", "malformed"),
        (bytes(8) + b"\x01" + msgspec.msgpack.encode({"add": 1}), "malformed"),
        (struct.pack("<d", math.nan) + envelope("add", [1])[8:], "not a finite number"),
    ],
)
def test_a_malformed_envelope_raises_bad_envelope(entry: bytes, match: str) -> None:
    counter = Counter()
    with pytest.raises(BadEnvelopeError, match=match):
        counter.apply(1, entry)
    assert counter.value == 0 and counter.log_index == 0


async def test_a_body_that_raises_fails_only_that_proposal() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("k", [1])
    before = cluster.assert_agree()
    with pytest.raises(KeyError):
        await cluster.replicas[1].put("k", [2])
    assert cluster.assert_agree() != before  # log_index moved on, and only that
    assert [r.entries for r in cluster.replicas] == [{"k": [1]}] * 3
    assert await cluster.leader.put("j", [2]) == 2


# --- leader time ------------------------------------------------------------


async def test_bodies_see_the_leaders_time_and_the_log_index() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("a", [1])
    cluster.clock.advance(2.5)
    await cluster.replicas[2].put("b", [2])
    assert await cluster.leader.now() == START + 2.5
    for replica in cluster.replicas:
        assert replica.stamps == [(1, START), (2, START + 2.5)]
        assert replica.leader_time == START + 2.5 and replica.log_index == 3
    cluster.assert_agree()


def test_leader_time_is_zero_when_the_runtime_did_not_stamp() -> None:
    registry = Registry()
    assert registry.apply(1, Registry.now.encode()) == 0.0
    assert registry.apply(2, stamped(Registry.now.encode(), 12.5)) == 12.5


# --- queries and options ----------------------------------------------------


async def test_queries_read_through_the_proposer_and_are_not_replicated() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("k", [1, 2])
    assert await cluster.replicas[1].lookup("k") == [1, 2]
    assert await cluster.replicas[1].lookup.with_consistency("stale")("nope") is None
    assert cluster.reads == ["lease", "stale"]
    assert len(cluster.proposals) == 1
    counter_cluster = FakeCluster(Counter)
    assert await counter_cluster.leader.get() == 0
    assert counter_cluster.reads == ["linearizable"]


async def test_timeouts_reach_the_proposer() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("k", [1])
    await cluster.leader.remove("k")
    await cluster.leader.put.with_timeout(0.5)("j", [1])
    assert [t for _, _, t in cluster.proposals] == [None, 3.0, 0.5]


# --- class creation ---------------------------------------------------------


def test_unsupported_signatures_and_names_are_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"\*args parameters are not supported"):

        class Star(Replicated):
            @command
            def f(self, *args: int) -> None: ...

    with pytest.raises(TypeError, match="belongs to Replicated itself"):

        class Clash(Replicated):
            @command
            def restore(self, n: int) -> None: ...  # type: ignore[override]

    with pytest.raises(TypeError, match="two commands are registered as 'x'"):

        class Twice(Replicated):
            @command(name="x")
            def f(self) -> None: ...

            @command(name="x")
            def g(self) -> None: ...

    with pytest.raises(TypeError, match="__state__ must be"):

        class BadState(Replicated):
            __state__ = "value"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="non-empty str"):
        command(name="")

    class Unresolvable(Replicated):
        @command
        def f(self, x: Undefined) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="Unresolvable.f: cannot resolve type hints"):
        Unresolvable().attach(FakeProposer(FakeCluster(Counter), 0))


def test_subclasses_inherit_and_override_commands() -> None:
    class Doubling(Counter):
        @command
        def add(self, n: int) -> int:
            self.value += 2 * n
            return self.value

        @command
        def reset(self) -> None:
            self.value = 0

    assert set(Doubling.commands) == {"add", "reset"}
    assert set(Counter.commands) == {"add"}
    d = Doubling()
    assert d.apply(1, Doubling.add.encode(3)) == 6
    assert Doubling.type_name == "test_subclasses_inherit_and_override_commands.<locals>.Doubling"
    assert isinstance(d, StateMachine)


# --- snapshots ----------------------------------------------------------------


async def test_a_restored_instance_equals_the_original() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("a", [1, 2])
    cluster.clock.advance(1)
    await cluster.leader.put("b", [])
    image = cluster.assert_agree()
    fresh = restored(Registry, image)
    assert fresh.entries == {"a": [1, 2], "b": []}
    assert fresh.stamps == [(1, START), (2, START + 1)]  # decoded with the annotation's types
    assert fresh.log_index == 2 and fresh.leader_time == START + 1
    assert snapshot_bytes(fresh) == image


async def test_without_state_declared_public_attributes_are_the_state() -> None:
    cluster = FakeCluster(Counter)
    await cluster.leader.add(41)
    fresh = Counter()
    fresh.extra = "gone after restore"  # type: ignore[attr-defined]
    fresh._private = 1  # type: ignore[attr-defined]
    fresh.restore([snapshot_bytes(cluster.leader)])
    assert fresh.value == 41 and not hasattr(fresh, "extra") and fresh._private == 1  # type: ignore[attr-defined]


async def test_a_snapshot_streams_the_state_it_captured() -> None:
    cluster = FakeCluster(Registry)
    await cluster.leader.put("a", [1])
    snap = cluster.leader.snapshot()
    # the state moves on after the capture; the snapshot does not
    await cluster.leader.put("b", [2])
    await cluster.leader.put("a", [9], replace=True)
    await cluster.leader.remove("a")
    old = restored(Registry, b"".join(snap.chunks()))
    snap.release()
    assert old.entries == {"a": [1]} and old.log_index == 1
    assert cluster.leader.entries == {"b": [2]}
    with pytest.raises(RuntimeError, match="released"):
        snap.chunks()


async def test_snapshots_stream_in_chunks_of_the_class_size() -> None:
    class Small(Registry):
        snapshot_chunk_size = 16

    s = Small()
    s.entries = {f"k{i}": list(range(i)) for i in range(20)}
    snap = s.snapshot()
    assert isinstance(snap, StateSnapshot)
    chunks = list(snap.chunks())
    assert len(chunks) > 10 and {len(c) for c in chunks[:-1]} == {16}
    fresh = Small()
    fresh.restore(iter(chunks))
    assert fresh.entries == s.entries


def _image_with_records(type_name: str, records: list[bytes], fields: int | None = None) -> bytes:
    header = msgspec.msgpack.encode(
        {
            "type": type_name,
            "index": 1,
            "leader_time": 0.0,
            "fields": len(records) if fields is None else fields,
        }
    )
    out = b"LRSM\x01" + struct.pack("<Q", len(header)) + header
    for r in records:
        out += struct.pack("<Q", len(r)) + r
    return out + struct.pack("<Q", 0)


def _field(name: str, value: Any) -> bytes:
    return msgspec.msgpack.encode((name, value))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (b"", "truncated"),
        (b"XXXX\x01", "bad magic"),
        (b"LRSM\x09", "unsupported snapshot version 9"),
        (_image_with_records("Counter", [_field("value", 1)]), "snapshot is of 'Counter'"),
        (_image_with_records("Registry", [_field("entries", {})]), r"lacks fields \['stamps'\]"),
        (
            _image_with_records(
                "Registry", [_field("entries", {"a": ["x"]}), _field("stamps", [])]
            ),
            "field 'entries': Expected `int`, got `str`",
        ),
        (
            _image_with_records("Registry", [_field("nope", 1)]),
            "'nope' is not in Registry.__state__",
        ),
        (
            _image_with_records("Registry", [_field("stamps", []), _field("stamps", [])]),
            "holds field 'stamps' twice",
        ),
        (_image_with_records("Registry", [_field("entries", {})], fields=2), "ends early"),
        (_image_with_records("Registry", [b"\xc1"]), "bad snapshot record"),
        (b"LRSM\x01" + struct.pack("<Q", 2) + b"\x90\x90", "bad snapshot header"),
    ],
)
def test_a_bad_snapshot_is_refused_and_changes_nothing(image: bytes, match: str) -> None:
    registry = Registry()
    registry.entries = {"keep": [1]}
    with pytest.raises(SnapshotFormatError, match=match):
        registry.restore(iter_chunks(image, 3) if image else [])
    assert registry.entries == {"keep": [1]}


def test_trailing_or_truncated_bytes_are_refused() -> None:
    image = snapshot_bytes(Registry())
    with pytest.raises(SnapshotFormatError, match="trailing bytes"):
        Registry().restore([image, b"x"])
    with pytest.raises(SnapshotFormatError, match="truncated"):
        Registry().restore([image[:-1]])
    two = _image_with_records("Registry", [_field("entries", {}), _field("stamps", [])], fields=1)
    with pytest.raises(SnapshotFormatError, match="more records than its 1 fields"):
        Registry().restore([two])


def test_a_snapshot_without_state_declared_cannot_shadow_methods_or_privates() -> None:
    for name in ("add", "get", "_proposer", "apply", "not an identifier"):
        with pytest.raises(SnapshotFormatError, match="not a public attribute"):
            Counter().restore([_image_with_records("Counter", [_field(name, 1)])])


def test_an_unencodable_field_fails_the_snapshot_with_a_clear_error() -> None:
    counter = Counter()
    counter.lock = asyncio.Lock()  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="state field 'lock' cannot be encoded"):
        snapshot_bytes(counter)


# --- the chunk helpers ----------------------------------------------------------


def test_chunk_helpers() -> None:
    assert list(iter_chunks(b"abcdefg", 3)) == [b"abc", b"def", b"g"]
    assert list(iter_chunks(b"", 3)) == []
    assert list(rechunk([b"ab", b"", b"cdefg", b"h"], 3)) == [b"abc", b"def", b"gh"]
    assert join_chunks([b"ab", b"c"]) == b"abc"
    with pytest.raises(SnapshotFormatError, match="larger than 2 bytes"):
        join_chunks([b"ab", b"c"], max_size=2)
    with pytest.raises(ValueError, match="chunk size"):
        list(iter_chunks(b"a", 0))
    with pytest.raises(ValueError, match="chunk size"):
        list(rechunk([b"a"], 0))
    reader = ChunkReader([b"ab", b"cde"])
    assert reader.read_exact(3) == b"abc" and reader.offset == 3 and not reader.at_eof()
    with pytest.raises(SnapshotFormatError, match="truncated at byte 5: needed 3 bytes at byte 3"):
        reader.read_exact(3)


def test_bytes_and_stream_snapshots() -> None:
    b = BytesSnapshot(b"hello", chunk_size=2)
    assert list(b.chunks()) == [b"he", b"ll", b"o"]
    b.release()
    with pytest.raises(RuntimeError):
        b.chunks()
    released: list[int] = []
    s = StreamSnapshot(lambda: [b"x", b"y"], on_release=lambda: released.append(1))
    assert isinstance(s, StateSnapshot) and list(s.chunks()) == [b"x", b"y"]
    s.release()
    s.release()
    assert released == [1]
    with pytest.raises(RuntimeError):
        s.chunks()


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(1, 50))
def test_rechunk_and_chunk_reader_preserve_the_bytes(pieces: list[bytes], size: int) -> None:
    whole = b"".join(pieces)
    chunks = list(rechunk(pieces, size))
    assert b"".join(chunks) == whole
    assert all(len(c) == size for c in chunks[:-1]) and all(chunks)
    reader = ChunkReader(pieces)
    got = b""
    while not reader.at_eof():
        got += reader.read_exact(min(size, len(whole) - len(got)))
    assert got == whole


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5)),
    st.integers(1, 64),
)
def test_snapshot_roundtrips_at_any_chunking(entries: dict[str, list[int]], chunk: int) -> None:
    registry = Registry()
    registry.entries = entries
    image = snapshot_bytes(registry)
    fresh = restored(Registry, image, chunk)
    assert fresh.entries == entries and snapshot_bytes(fresh) == image


def _records(chunks: Iterable[bytes]) -> list[bytes]:
    """The framed records of a snapshot stream (for a format test)."""
    reader = ChunkReader(chunks)
    assert reader.read_exact(5) == b"LRSM\x01"
    out = []
    while (n := struct.unpack("<Q", reader.read_exact(8))[0]) != 0:
        out.append(reader.read_exact(n))
    assert reader.at_eof()
    return out


def test_the_snapshot_format_is_as_documented() -> None:
    counter = Counter()
    counter.apply(7, stamped(Counter.add.encode(3), 5.0))
    header, field = _records([snapshot_bytes(counter)])
    assert msgspec.msgpack.decode(header) == {
        "type": "Counter",
        "index": 7,
        "leader_time": 5.0,
        "fields": 1,
    }
    assert msgspec.msgpack.decode(field) == ["value", 3]
