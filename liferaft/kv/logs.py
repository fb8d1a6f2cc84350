"""How ``liferaft serve`` writes its log: logfmt or JSON, one line per record.

Both formats carry the same fields, in this order: the time (UTC, ISO 8601
with milliseconds and no space: ``2026-12-07T04:30:00.123Z``), the level,
the node id and its current term, the logger, the message, then every
structured field the record carries (``extra=``: the runtime's ``role``,
``leader``, ``reason`` of a state change; the access log's ``method``,
``path``, ``status``...), then the traceback of an exception, if any, as one
field.  So a record is always exactly one line, whatever its message holds,
and a log shipper can split it without knowing Python's traceback layout
(docs/operations.md, "Logs").

The runtime and the library log through the standard :mod:`logging`
module only; this module is the server's choice of how to print.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from liferaft.runtime import Node

FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from
# ``extra=`` or a filter, and is a structured field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "node", "term",
}  # fmt: skip
# logfmt: a value with none of these characters goes bare.
_BARE = re.compile(r"[^\s=\"\\\x00-\x1f\x7f]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def timestamp(created: float) -> str:
    """``created`` (epoch seconds) as UTC with milliseconds and no space."""
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one record, in print order (see the module docstring)."""
    out: dict[str, Any] = {
        "time": timestamp(record.created),
        "level": record.levelname.lower(),
    }
    node = getattr(record, "node", None)
    if node is not None:
        out["node"] = node
    term = getattr(record, "term", None)
    if term is not None:
        out["term"] = term
    out["logger"] = record.name
    out["msg"] = record.getMessage()
    for k, v in vars(record).items():
        if k not in _STANDARD and not k.startswith("_"):
            out[k] = v
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    if record.stack_info:
        out["stack"] = formatter.formatStack(record.stack_info)
    return out


def logfmt_value(v: Any) -> str:
    """One logfmt value: bare when it can be, else quoted with escapes, so
    no value ever breaks the line or the key=value pairs."""
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    s = v if isinstance(v, str) else str(v)
    if _BARE.fullmatch(s):
        return s
    return '"' + "".join(map(_escape, s)) + '"'


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch < " " or ch == "\x7f":
        return f"\\u{ord(ch):04x}"
    return ch


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs, one line per record (``--log-format text``)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        fields["ts"] = fields.pop("time")  # logfmt's usual name, printed first
        order = ["ts", *(k for k in fields if k != "ts")]
        return " ".join(f"{_key(k)}={logfmt_value(fields[k])}" for k in order)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record, self), default=str, ensure_ascii=False)


def _key(k: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", k) or "_"


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``--log-format``; ValueError names the choices."""
    if fmt == "text":
        return LogfmtFormatter()
    if fmt == "json":
        return JsonFormatter()
    raise ValueError(f"unknown log format {fmt!r}: choose one of {', '.join(FORMATS)}")


class NodeContext(logging.Filter):
    """Adds ``node`` and ``term`` to every record.  A record that names its
    own term (a state change does) keeps it: it says which term it is about."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.node: Node | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        if not hasattr(record, "term"):
            node = self.node
            record.term = node.rn.term if node is not None and node.rn is not None else 0
        return True


def setup_logging(node_id: str, level: str = "INFO", fmt: str = "text") -> NodeContext:
    """Send every record to stderr in ``fmt``; returns the filter that the
    server hands its node to (for the term)."""
    ctx = NodeContext(node_id)
    handler = logging.StreamHandler()
    handler.addFilter(ctx)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would print a second, unformatted line per
    # request; the server's --access-log is the one (docs/operations.md).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return ctx


__all__ = [
    "FORMATS", "JsonFormatter", "LogfmtFormatter", "NodeContext", "formatter", "logfmt_value",
    "setup_logging", "timestamp",
]  # fmt: skip
