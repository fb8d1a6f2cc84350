"""What etcd's JSON gateway refuses in a request body that protobuf's own
JSON parser, as the gateway calls it, would take.

etcd 3.4's gateway decodes a body with Go's encoding/json (through jsonpb):
a ``bytes`` field must be standard base64 with its padding (newlines
aside), and an enum given by name must be one of the enum's.  protobuf's
Python parser decodes base64 leniently (it drops characters outside the
alphabet and pads what is short), so a careless ``{"key": "foo"}`` (a key
not base64-encoded) would write some other key without a word; and with
``ignore_unknown_fields`` (unknown *fields* are skipped, as etcd's gateway
does) it also drops an enum name it does not know, so a misspelt
``"sort_order"`` would quietly mean none.  :func:`check` refuses both with
etcd's texts before the body is parsed.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from .errors import Code, EtcdError

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _bad(message: str) -> EtcdError:
    return EtcdError(Code.INVALID_ARGUMENT, message)


def _check_base64(s: str) -> None:
    """Go's ``base64.StdEncoding`` (as encoding/json decodes ``[]byte``):
    newlines are skipped, anything else must be the standard alphabet with
    the padding in place; the error names the offset as Go's does."""
    text = s.replace("\r", "").replace("\n", "")
    try:
        if _B64.fullmatch(text):
            base64.b64decode(text, validate=True)
            return
    except (binascii.Error, ValueError):
        pass
    at = next((i for i, ch in enumerate(text) if ch not in _ALPHABET), None)
    if at is None:  # a quantum cut short, or misplaced padding
        at = (len(text.rstrip("=")) // 4) * 4
    raise _bad(f"illegal base64 data at input byte {at}")


def _go_enum_name(f: FieldDescriptor) -> str:
    """``etcdserverpb.RangeRequest_SortOrder``: Go's name of the enum."""
    enum = f.enum_type
    assert enum is not None
    package = enum.file.package
    inner = enum.full_name[len(package) + 1 :] if package else enum.full_name
    return f"{package}.{inner.replace('.', '_')}" if package else inner


def _fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    out = {f.json_name: f for f in desc.fields}
    out.update(desc.fields_by_name)
    return out


def check(value: Any, desc: Descriptor) -> None:
    """Refuse, with etcd's gateway's text, what :mod:`json_format` would take
    but etcd would not (the module docstring); anything else malformed is
    left for the parser to report."""
    if not isinstance(value, dict):
        return
    fields = _fields(desc)
    for name, v in value.items():
        f = fields.get(name)
        if f is None:
            continue
        # A list only parses for a repeated field (else the parser says so).
        for x in v if isinstance(v, list) else [v]:
            if f.type == FieldDescriptor.TYPE_BYTES and isinstance(x, str):
                _check_base64(x)
            elif f.type == FieldDescriptor.TYPE_ENUM and isinstance(x, str):
                assert f.enum_type is not None
                if x not in f.enum_type.values_by_name:
                    raise _bad(f'unknown value "{x}" for enum {_go_enum_name(f)}')
            elif f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None:
                check(x, f.message_type)
