"""Readers of the two log formats of ``liferaft serve`` for the tests: a
strict logfmt parser (every byte of a line must be a key=value pair) and the
JSON one."""

from __future__ import annotations

import json
import re
from typing import Any

_PAIR = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|[^\s"=]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line into its fields; AssertionError at the first byte that
    is not part of a pair.  Quoted values use JSON's escapes."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m, f"not logfmt at column {pos}: {line[pos:pos + 40]!r} in {line!r}"
        k, v = m.group(1), m.group(2)
        assert k not in out, f"key {k} twice in {line!r}"
        out[k] = json.loads(v) if v.startswith('"') else v
        pos = m.end()
    return out


def parse_json(line: str) -> dict[str, Any]:
    doc = json.loads(line)
    assert isinstance(doc, dict), line
    return doc
