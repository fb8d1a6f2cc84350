"""The runtime's snapshot header (liferaft/runtime/store.py): versioned, and
the cluster's entry format carried in it (docs/statemachine.md)."""

from __future__ import annotations

import json
import struct

import pytest

from liferaft.runtime.store import SnapshotPayloadError, unwrap_snapshot, wrap_snapshot

BOOK = {"n1": {"addr": "127.0.0.1:7001"}}


def test_a_format_2_cluster_writes_version_2_with_its_entry_format() -> None:
    raw = b"".join(wrap_snapshot(BOOK, [b"state"], 2))
    assert raw[:5] == b"LRRT\x02"
    head, state = unwrap_snapshot([raw[:7], raw[7:]])
    assert (head.members, head.entry_format, b"".join(state)) == (BOOK, 2, b"state")


def test_a_format_1_cluster_keeps_the_header_an_earlier_build_reads() -> None:
    raw = b"".join(wrap_snapshot(BOOK, [b"state"], 1))
    assert raw[:5] == b"LRRT\x01"
    (hlen,) = struct.unpack_from("<I", raw, 5)
    assert json.loads(raw[9 : 9 + hlen]) == {"members": BOOK}  # nothing new in it
    head, state = unwrap_snapshot([raw])
    assert head.entry_format == 1 and b"".join(state) == b"state"


def _header(version: int, doc: object) -> bytes:
    head = json.dumps(doc).encode()
    return struct.pack("<4sBI", b"LRRT", version, len(head)) + head


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (_header(3, {"members": {}}), ["version 3", "1 and 2"]),
        (_header(2, {"members": {}, "entry_format": 9}), ["entry format 9", "1, 2"]),
        (_header(2, {"members": {}}), ["bad snapshot header"]),
        (b"NOPE" + b"\0" * 10, ["not a liferaft runtime snapshot"]),
        (_header(2, {"members": {}, "entry_format": 2})[:-3], ["truncated"]),
    ],
)
def test_a_header_this_build_cannot_read_is_refused_in_one_line(
    raw: bytes, words: list[str]
) -> None:
    with pytest.raises(SnapshotPayloadError) as e:
        unwrap_snapshot([raw])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
