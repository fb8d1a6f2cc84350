"""The codec: exact roundtrips, refusal of malformed input, and fuzzing.

The contract under test: ``decode_message(encode_message(m)) == m`` for every
valid message, and ``decode_message`` raises ``DecodeError`` and nothing else
on any other input.
"""

from __future__ import annotations

import array

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.codec import (
    VERSION,
    DecodeError,
    EncodeError,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
)
from liferaft.codec.bench import measure
from liferaft.core.messages import (
    AppendEntries,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)

from .strategies import ALL_TYPES, conf_states, messages, one_of_each, snapshot_metas

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def raw(*fields: object) -> bytes:
    """A frame of our version holding an arbitrary msgpack array."""
    return bytes([VERSION]) + msgspec.msgpack.encode(list(fields))


def refused(buf: object) -> str:
    with pytest.raises(DecodeError) as info:
        decode_message(buf)  # type: ignore[arg-type]
    assert info.value.reason
    return info.value.reason


# -- roundtrips --------------------------------------------------------------------


def test_every_message_type_is_covered() -> None:
    assert {type(m) for m in one_of_each()} == ALL_TYPES


@pytest.mark.parametrize("msg", one_of_each(), ids=lambda m: type(m).__name__)
def test_roundtrip_each_type(msg: Message) -> None:
    buf = encode_message(msg)
    assert buf[0] == VERSION
    out = decode_message(buf)
    assert out == msg and type(out) is type(msg)


@SETTINGS
@given(messages)
def test_roundtrip_is_exact(msg: Message) -> None:
    buf = encode_message(msg)
    out = decode_message(buf)
    assert out == msg
    assert type(out) is type(msg)
    if isinstance(out, AppendEntries):
        assert all(type(e) is Entry and type(e.type) is EntryType for e in out.entries)
    # Deterministic: the same message always gives the same bytes.
    assert encode_message(out) == buf
    # Every buffer type decodes alike.
    assert decode_message(bytearray(buf)) == msg
    assert decode_message(memoryview(buf)) == msg


def test_append_entries_of_256_entries() -> None:
    ents = tuple(Entry(i, 7, bytes([i % 256]) * 100) for i in range(101, 357))
    msg = AppendEntries(7, "leader", "follower", 100, 6, ents, 90)
    assert decode_message(encode_message(msg)) == msg


@SETTINGS
@given(st.one_of(conf_states(), snapshot_metas))
def test_record_roundtrip(rec: ConfState | SnapshotMeta) -> None:
    assert decode_record(encode_record(rec), type(rec)) == rec


@pytest.mark.parametrize(
    "rec",
    [
        HardState(3, "n2", 9),
        HardState(),
        Entry(3, 2, b"x", EntryType.CONF_CHANGE),
        Snapshot(SnapshotMeta(4, 2, ConfState(frozenset({"a"}))), b"data"),
    ],
)
def test_record_roundtrip_examples(rec: object) -> None:
    assert decode_record(encode_record(rec), type(rec)) == rec  # type: ignore[arg-type]


def test_record_decoding_validates() -> None:
    with pytest.raises(DecodeError):
        decode_record(bytes([VERSION]) + msgspec.msgpack.encode([-1, 2, b"", 0]), Entry)
    with pytest.raises(DecodeError):
        decode_record(bytes([VERSION]) + msgspec.msgpack.encode([1, "", 2]), HardState)
    with pytest.raises(DecodeError):
        decode_record(encode_record(HardState(1, None, 2)), ConfState)
    with pytest.raises(TypeError):
        decode_record(b"", int)


# -- encode refuses what it cannot carry ---------------------------------------------


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(EncodeError):
        encode_message("hello")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_message(Message(1, "a", "b"))
    with pytest.raises(EncodeError):
        encode_message(Heartbeat(2**64, "a", "b", 0))  # msgpack has no room for it
    with pytest.raises(EncodeError):
        encode_message(Heartbeat(1, "a", "b", 0, ctx=object()))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_record(object())  # type: ignore[arg-type]


# -- decode refuses, with a reason -----------------------------------------------------


GOOD_HEARTBEAT = [3, 1, "n1", "n2", 5, b"c"]  # tag, term, frm, to, commit, ctx


def test_a_handmade_frame_decodes() -> None:
    assert decode_message(raw(*GOOD_HEARTBEAT)) == Heartbeat(1, "n1", "n2", 5, b"c")


@pytest.mark.parametrize(
    "buf, words",
    [
        (b"", "empty"),
        (bytes([VERSION + 1]) + raw(*GOOD_HEARTBEAT)[1:], "version"),
        (bytes([0]) + raw(*GOOD_HEARTBEAT)[1:], "version"),
        (raw(*GOOD_HEARTBEAT) + b"\x00", "trailing"),
        (raw(*GOOD_HEARTBEAT)[:-1], "truncated"),
        (bytes([VERSION]), "truncated"),
        (raw(99, 1, "n1", "n2"), "Invalid value 99"),
        (raw("heartbeat", 1, "n1", "n2", 5, b""), "$[0]"),
        (raw(3, -1, "n1", "n2", 5, b""), ">= 0"),
        (raw(3, 1, "n1", "n2", -5, b""), ">= 0"),
        (raw(3, "1", "n1", "n2", 5, b""), "Expected `int`"),
        (raw(3, 1.0, "n1", "n2", 5, b""), "Expected `int`"),
        (raw(3, True, "n1", "n2", 5, b""), "Expected `int`"),
        (raw(3, 1, "", "n2", 5, b""), "length >= 1"),
        (raw(3, 1, "n1", "x" * 2000, 5, b""), "length <= "),
        (raw(3, 1, "n1", 7, 5, b""), "Expected `str`"),
        (raw(3, 1, "n1", "n2", 5, "ctx"), "Expected `bytes`"),
        (raw(3, 1, "n1", "n2", 5, b"", b"extra"), ""),
        (raw(3, 1, "n1", "n2"), ""),
        (raw(6, 1, "n1", "n2", 1, False), "Expected `bool`"),
        (bytes([VERSION]) + msgspec.msgpack.encode({"t": 3}), "Expected `array`"),
        (bytes([VERSION]) + b"\xc1", "malformed"),
    ],
)
def test_malformed_frames_are_refused(buf: bytes, words: str) -> None:
    assert words in refused(buf)


def test_non_bytes_are_refused() -> None:
    refused("a string")
    refused(None)
    refused(12)
    refused(array.array("i", [1, 2]))


def test_odd_buffers_decode() -> None:
    msg = TimeoutNow(1, "a", "b")
    buf = encode_message(msg)
    doubled = bytes(c for pair in zip(buf, buf, strict=True) for c in pair)
    assert decode_message(memoryview(doubled)[::2]) == msg  # not contiguous
    assert decode_message(memoryview(bytearray(buf)).cast("c")) == msg


def _append(prev: tuple[int, int], ents: list[list[object]], term: int = 5) -> bytes:
    return raw(1, term, "n1", "n2", prev[0], prev[1], ents, 0)


def test_append_entries_checks_its_entries() -> None:
    ok = _append((4, 2), [[5, 2, b"", 0], [6, 3, b"", 1]])
    assert len(decode_message(ok).entries) == 2  # type: ignore[attr-defined]
    assert "contiguous" in refused(_append((4, 2), [[6, 2, b"", 0]]))
    assert "contiguous" in refused(_append((4, 2), [[5, 2, b"", 0], [7, 2, b"", 0]]))
    assert "contiguous" in refused(_append((4, 2), [[5, 2, b"", 0], [5, 2, b"", 0]]))
    assert "terms" in refused(_append((4, 2), [[5, 3, b"", 0], [6, 2, b"", 0]]))
    assert "terms" in refused(_append((4, 2), [[5, 1, b"", 0]]))
    assert "terms" in refused(_append((4, 2), [[5, 6, b"", 0]], term=5))
    assert refused(_append((4, 2), [[5, 2, b"", 9]]))  # no such EntryType
    assert refused(_append((4, 2), [[5, 2, "text", 0]]))
    assert refused(_append((4, 2), [[5, -2, b"", 0]]))
    assert refused(_append((4, 2), [[5, 2, b"", 0, "extra"]]))
    assert refused(_append((4, 2), [5, 2, b"", 0]))


def _install(conf: list[object]) -> bytes:
    return raw(7, 1, "n1", "n2", [[3, 1, conf], b""])


def test_install_snapshot_checks_its_configuration() -> None:
    ok = decode_message(_install([["a"], ["b"], [], [], False]))
    assert isinstance(ok, InstallSnapshot)
    assert ok.snapshot.meta.conf_state == ConfState(frozenset({"a"}), frozenset({"b"}))
    assert "conf state" in refused(_install([["a"], ["a"], [], [], False]))
    assert "conf state" in refused(_install([["a"], [], [], ["a"], False]))
    assert "conf state" in refused(_install([["a"], [], [], [], True]))
    assert refused(_install([["a"], [], [], [], 1]))
    assert refused(_install([[""], [], [], [], False]))
    assert refused(_install([["a"], [], [], []]))


# -- fuzzing: only DecodeError may escape -------------------------------------------------


def _decode_or_refuse(buf: bytes) -> None:
    try:
        msg = decode_message(buf)
    except DecodeError as e:
        assert isinstance(e.reason, str) and e.reason
    else:
        # Anything accepted must be a core message that re-encodes.
        assert decode_message(encode_message(msg)) == msg


@SETTINGS
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(buf: bytes) -> None:
    _decode_or_refuse(buf)
    _decode_or_refuse(bytes([VERSION]) + buf)


@SETTINGS
@given(messages, st.data())
def test_fuzz_mutated_frames(msg: Message, data: st.DataObject) -> None:
    buf = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[pos]
    _decode_or_refuse(bytes(buf))


@SETTINGS
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=30,
    ),
    st.integers(0, 12),
)
def test_fuzz_well_formed_msgpack_of_the_wrong_shape(body: object, tag: int) -> None:
    """Valid msgpack with a plausible tag reaches the schema checks, not just the parser."""
    _decode_or_refuse(raw(tag, *body) if isinstance(body, list) else raw(tag, body))
    _decode_or_refuse(bytes([VERSION]) + msgspec.msgpack.encode(body))


def test_bench_runs() -> None:
    figures = measure(entries=4, size=10, rounds=5)
    assert set(figures) >= {"encode_us", "decode_us", "frame_bytes"}
