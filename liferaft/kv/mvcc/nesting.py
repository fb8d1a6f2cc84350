"""How deeply a msgpack document nests, found without recursion.

Why the codec needs it (:mod:`.codec`): msgspec decodes nested containers
recursively, and past Python's recursion limit it raises ``RecursionError``
instead of a ``DecodeError``.  Where that limit falls depends on how deep
the caller's stack already is, so one committed entry that nests a few
hundred levels (inside a field the decoder skips, say) could decode on one
replica and fail on another: a node killed, or replicas that disagree
(docs/architecture.md, "Trust model").  The codec therefore refuses, before
decoding, any entry nested deeper than a fixed bound that no command comes
near, the same on every replica.

:func:`deeper_than` is exact but walks the document in Python, so it first
tries a bound in C: every level needs a container header byte, so a document
with no more such bytes than the limit cannot nest past it (most entries
stop there).
"""

from __future__ import annotations

# Container headers: fixmap 0x80-0x8f, fixarray 0x90-0x9f, array16/32
# 0xdc/0xdd, map16/32 0xde/0xdf.  Everything else is deleted by translate.
_CONTAINER = frozenset([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_NOT_CONTAINER = bytes(b for b in range(256) if b not in _CONTAINER)

# Bytes after the header byte that a fixed-size scalar occupies.
_FIXED = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# Header byte -> (bytes of the length that follows, extra bytes before the payload).
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext (a type byte)
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip


def deeper_than(data: bytes | memoryview, limit: int) -> bool:
    """True if the first msgpack object in ``data`` nests more than ``limit``
    containers deep.  Bytes that are not msgpack (truncated, a reserved
    byte) end the walk with False: the decoder refuses them itself."""
    buf = bytes(data)
    if len(buf.translate(None, _NOT_CONTAINER)) <= limit:
        return False
    pos, end = 0, len(buf)
    pending: list[int] = []  # items still to read in each open container
    while pos < end:
        b = buf[pos]
        pos += 1
        if pending:
            pending[-1] -= 1
        n = -1  # items of a container starting here (-1: not a container)
        if b <= 0x7F or b >= 0xE0:
            pass  # fixint
        elif b <= 0x8F:
            n = 2 * (b & 0x0F)
        elif b <= 0x9F:
            n = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F  # fixstr
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            width, extra = _SIZED[b]
            pos += width + extra + int.from_bytes(buf[pos : pos + width], "big")
        elif 0xDC <= b <= 0xDF:
            width = 2 if b in (0xDC, 0xDE) else 4
            n = int.from_bytes(buf[pos : pos + width], "big") * (2 if b >= 0xDE else 1)
            pos += width
        else:
            return False  # 0xC1: never used
        if n >= 0:  # a container, empty or not, is one level (msgspec recurses into it)
            if len(pending) + 1 > limit:
                return True
            if n:
                pending.append(n)
        while pending and pending[-1] == 0:
            pending.pop()
        if not pending:
            return False  # the first object is complete
    return False
