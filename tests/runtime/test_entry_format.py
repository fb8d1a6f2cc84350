"""The runtime entry format (liferaft/runtime/entry_format.py): golden bytes
of the version-2 envelope both ways, round-trip properties, and a one-line
refusal for every entry this build must not misread.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liferaft.runtime import entry_format as ef
from liferaft.runtime.entry_format import EnvelopeError

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_V2 = GOLDEN / "runtime_envelope_v2.bin"
LEADER_TIME = 1_700_000_000.25
USER = b"hello"

times = st.floats(allow_nan=False, allow_infinity=False)


def test_golden_v2_bytes_both_ways() -> None:
    # The fixture is bytes people's logs will hold: never regenerate it; a
    # new layout is a new version with a fixture of its own beside this one.
    golden = GOLDEN_V2.read_bytes()
    # Spelled out, so a reader sees the layout: version 2, f64 LE time, user bytes.
    assert golden == bytes([2]) + struct.pack("<d", LEADER_TIME) + USER
    assert golden.hex() == "02" + "00001040fc54d941" + USER.hex()
    assert ef.encode(LEADER_TIME, USER) == golden
    assert ef.decode(golden) == (LEADER_TIME, USER)
    assert ef.unwrap(ef.ENTRY_FORMAT_ENVELOPED, golden) == (LEADER_TIME, USER)
    assert ef.HEADER_SIZE == 9


@given(times, st.binary(max_size=512))
def test_decode_inverts_encode(t: float, data: bytes) -> None:
    out = ef.encode(t, data)
    assert len(out) == ef.HEADER_SIZE + len(data)
    assert ef.decode(out) == (t, data)
    assert ef.unwrap(2, ef.wrap(2, t, data)) == (t if data else 0.0, data)


@given(times, st.binary(max_size=64), st.booleans())
def test_format_1_keeps_user_bytes(t: float, data: bytes, stamp: bool) -> None:
    """Format 1 (every existing cluster): raw bytes, the legacy stamp in data[0:8] only if asked."""
    wrapped = ef.wrap(1, t, data, stamp_time=stamp)
    if stamp and data:
        assert wrapped[:8] == struct.pack("<d", t) and wrapped[8:] == data[8:]
    else:
        assert wrapped == data
    assert ef.unwrap(1, wrapped) == (0.0, wrapped)


def test_empty_data_is_never_wrapped() -> None:
    """The core's no-op entry is empty: it stays empty and unwraps to nothing in both formats."""
    for fmt in ef.ENTRY_FORMATS:
        assert ef.wrap(fmt, LEADER_TIME, b"", stamp_time=True) == b""
        assert ef.unwrap(fmt, b"") == (0.0, b"")


@pytest.mark.parametrize("n", range(ef.HEADER_SIZE))
def test_short_entry_is_refused(n: int) -> None:
    with pytest.raises(EnvelopeError, match=f"entry of {n} bytes is shorter"):
        ef.decode(ef.encode(LEADER_TIME, USER)[:n])


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_unknown_version_is_refused_naming_both(version: int) -> None:
    data = bytes([version]) + ef.encode(LEADER_TIME, USER)[1:]
    with pytest.raises(EnvelopeError) as info:
        ef.decode(data)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"version {version};" in msg and "this build reads versions 2" in msg


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_time_is_refused_both_ways(bad: float) -> None:
    with pytest.raises(EnvelopeError, match="not a finite number"):
        ef.decode(bytes([2]) + struct.pack("<d", bad) + USER)
    with pytest.raises(EnvelopeError, match="not a finite number"):
        ef.encode(bad, USER)


@pytest.mark.parametrize("fmt", [0, 3])
def test_unknown_entry_format_is_refused_naming_both(fmt: int) -> None:
    for call in (lambda: ef.unwrap(fmt, USER), lambda: ef.wrap(fmt, 0.0, USER)):
        with pytest.raises(EnvelopeError, match=f"entry format {fmt} is unknown; .*formats 1, 2"):
            call()
    assert ef.check_format(2) == 2
