"""Golden bytes of the two formats a Replicated object writes: the command
envelope (one log entry per call) and the snapshot stream.

Both live in people's logs and snapshot files, so their bytes must never
change by accident.  ``tests/runtime/golden/`` holds the exact bytes of a
known entry and a known snapshot of :class:`Shelf`; each format is checked
both ways: encoding today's values gives exactly those bytes, and decoding
those bytes gives the values.

A deliberate new version (e.g. envelope version 2, issue 13 section 1) adds
new fixtures next to these; the version-1 files stay, because version-1
bytes must keep decoding.  To write a fixture that does not exist yet, run
with ``LIFERAFT_WRITE_GOLDEN=1``; it never overwrites an existing file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import msgspec

from liferaft.runtime.commands import Replicated, command, query
from liferaft.runtime.envelope import ENVELOPE_VERSION, decode_envelope
from liferaft.runtime.snapshot_format import SNAPSHOT_VERSION
from liferaft.runtime.statemachine import iter_chunks, join_chunks

GOLDEN = Path(__file__).parent / "golden"
LEADER_TIME = 1_700_000_000.25
INDEX = 42


class Shelf(Replicated):
    """A small replicated class whose every field type reaches the wire."""

    type_name = "golden.Shelf"  # pinned: the default (qualname) could move
    __state__ = ("stock", "notes", "last")
    stock: dict[str, int]
    notes: list[str]
    last: tuple[str, float] | None

    def __init__(self) -> None:
        super().__init__()
        self.stock = {}
        self.notes = []
        self.last = None

    @command(name="receive")
    def receive(self, item: str, count: int = 1, *, note: str = "") -> int:
        self.stock = {**self.stock, item: self.stock.get(item, 0) + count}
        if note:
            self.notes = [*self.notes, note]
        self.last = (item, self.leader_time)
        return self.stock[item]

    @query
    def level(self, item: str) -> int:
        return self.stock.get(item, 0)


def golden(name: str, produced: bytes) -> bytes:
    """The committed bytes of fixture ``name`` (written once, if asked and absent)."""
    path = GOLDEN / name
    if not path.exists() and os.environ.get("LIFERAFT_WRITE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(produced)
    return path.read_bytes()


def stamped(entry: bytes, leader_time: float) -> bytes:
    """What the leader does to an entry proposed with ``stamp_time=True``."""
    return struct.pack("<d", leader_time) + entry[8:]


def known_entry() -> bytes:
    return stamped(Shelf.receive.encode("bolts", 3, note="crate 7"), LEADER_TIME)


def known_shelf() -> Shelf:
    shelf = Shelf()
    shelf.apply(INDEX, known_entry())
    return shelf


def snapshot_of(shelf: Shelf) -> bytes:
    snap = shelf.snapshot()
    try:
        return join_chunks(snap.chunks())
    finally:
        snap.release()


# --- the command envelope, version 1 -------------------------------------------


def test_encoding_a_known_call_gives_the_golden_envelope() -> None:
    assert known_entry() == golden("envelope_v1.bin", known_entry())


def test_the_golden_envelope_is_laid_out_as_documented() -> None:
    data = golden("envelope_v1.bin", known_entry())
    assert data[:8] == struct.pack("<d", LEADER_TIME)  # offset 0: leader time
    assert data[8] == 1 == ENVELOPE_VERSION  # offset 8: version
    assert msgspec.msgpack.decode(data[9:]) == ["receive", ["bolts", 3, "crate 7"]]


def test_decoding_the_golden_envelope_gives_the_known_call() -> None:
    env = decode_envelope(golden("envelope_v1.bin", known_entry()))
    assert env.leader_time == LEADER_TIME
    assert env.command == "receive"
    assert Shelf.receive.decode_args(env.args) == (["bolts", 3], {"note": "crate 7"})


def test_applying_the_golden_envelope_runs_the_known_call() -> None:
    shelf = Shelf()
    assert shelf.apply(INDEX, golden("envelope_v1.bin", known_entry())) == 3
    assert (shelf.stock, shelf.notes, shelf.last) == (
        {"bolts": 3},
        ["crate 7"],
        ("bolts", LEADER_TIME),
    )
    assert (shelf.leader_time, shelf.log_index) == (LEADER_TIME, INDEX)


# --- the snapshot stream, version 1 --------------------------------------------


def test_a_snapshot_of_a_known_state_gives_the_golden_bytes() -> None:
    image = snapshot_of(known_shelf())
    assert image == golden("snapshot_v1.bin", image)


def test_the_golden_snapshot_is_laid_out_as_documented() -> None:
    data = golden("snapshot_v1.bin", snapshot_of(known_shelf()))
    assert data[:5] == b"LRSM" + bytes((SNAPSHOT_VERSION,)) and SNAPSHOT_VERSION == 1
    (length,) = struct.unpack_from("<Q", data, 5)
    header = msgspec.msgpack.decode(data[13 : 13 + length])
    assert header == {
        "type": "golden.Shelf",
        "index": INDEX,
        "leader_time": LEADER_TIME,
        "fields": 3,
    }
    assert data[-8:] == bytes(8)  # the end marker, u64 0


def test_restoring_the_golden_snapshot_gives_the_known_state() -> None:
    shelf = Shelf()
    shelf.restore(iter_chunks(golden("snapshot_v1.bin", snapshot_of(known_shelf())), 5))
    assert shelf.stock == {"bolts": 3}
    assert shelf.notes == ["crate 7"]
    assert shelf.last == ("bolts", LEADER_TIME)  # a tuple again: decoded with the annotation
    assert (shelf.leader_time, shelf.log_index) == (LEADER_TIME, INDEX)
