"""The codec's nesting bound (liferaft/kv/mvcc/nesting.py) against a
recursive reference over msgpack documents of every type."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.kv.mvcc.nesting import deeper_than

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.text(max_size=40), st.binary(max_size=300),
    # every ext size: fixext 1..16 and ext 8/16
    st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=300)),
)  # fmt: skip
_docs = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=20)
    | st.dictionaries(st.text(max_size=3), inner, max_size=18),
    max_leaves=60,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


def _nest(v: Any, n: int) -> Any:
    for _ in range(n):
        v = [v]
    return v


@settings(max_examples=300, deadline=None)
@given(_docs, st.integers(0, 20), st.integers(0, 8), st.binary(max_size=4))
def test_deeper_than_agrees_with_the_depth_of_the_document(
    doc: Any, wrap: int, limit: int, tail: bytes
) -> None:
    doc = _nest(doc, wrap)
    data = msgspec.msgpack.encode(doc) + tail  # trailing bytes are not the document
    assert deeper_than(data, limit) == (_depth(doc) > limit)
    assert deeper_than(memoryview(data), limit) == (_depth(doc) > limit)


def test_large_containers_and_bad_bytes() -> None:
    wide = msgspec.msgpack.encode([[1]] * 70_000)  # array32 of fixarrays
    assert not deeper_than(wide, 2) and deeper_than(wide, 1)
    assert deeper_than(msgspec.msgpack.encode({"k": {"k": [1]}}), 2)
    # Truncated (a bin of 16 bytes holding 8): the decoder's to refuse.
    assert not deeper_than(b"\xc4\x10" + b"\x91" * 8, 3)
    assert deeper_than(b"\x91" * 8, 3)  # truncated after the limit: deep all the same
    assert not deeper_than(b"\x91\x91\xc1" + b"\x91" * 40, 3)  # a reserved byte ends the walk
    assert not deeper_than(b"", 0)
