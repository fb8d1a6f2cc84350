"""The two log formats of ``liferaft serve`` (liferaft/kv/logs.py) and the
access log's redaction: each record is one line that parses back to the
fields it was given, whatever the message holds."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from liferaft.kv.access_log import safe_query
from liferaft.kv.logs import JsonFormatter, LogfmtFormatter, NodeContext, formatter, logfmt_value
from tests.kv.logparse import parse_json, parse_logfmt

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NASTY = 'he said "stop"\nthen = left\tand \\ went \x01 away  '


def _record(msg: str, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("liferaft.test", logging.WARNING, __file__, 1, "%s", (msg,), exc_info)
    rec.__dict__.update(extra)
    NodeContext("n1").filter(rec)
    return rec


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_record_with_quotes_newlines_and_a_traceback_is_one_parseable_line(fmt: str) -> None:
    line = formatter(fmt).format(_record(NASTY, exc=True, reason="higher term from n2", term=7))
    assert "\n" not in line
    doc = parse_logfmt(line) if fmt == "text" else parse_json(line)
    assert TS.match(doc["ts" if fmt == "text" else "time"]), doc
    assert doc["level"] == "warning" and doc["logger"] == "liferaft.test"
    assert doc["msg"] == NASTY
    assert doc["node"] == "n1" and str(doc["term"]) == "7"  # the record's own term wins
    assert doc["reason"] == "higher term from n2"
    assert doc["exc"].startswith("Traceback (most recent call last):\n")
    assert doc["exc"].endswith("ValueError: boom\nsecond line")


def test_logfmt_quotes_only_what_needs_it() -> None:
    line = LogfmtFormatter().format(_record("plain", role="leader", empty="", none=None))
    assert " msg=plain " in line and " role=leader" in line
    assert ' empty=""' in line and ' none=""' in line
    assert logfmt_value("a=b") == '"a=b"' and logfmt_value("é") == "é"
    assert logfmt_value(True) == "true" and logfmt_value(3) == "3"
    assert logfmt_value("\x7f") == '"\\u007f"'


def test_json_keeps_types_and_stringifies_the_rest() -> None:
    doc = parse_json(JsonFormatter().format(_record("m", status=200, obj=object())))
    assert doc["status"] == 200 and doc["term"] == 0 and doc["obj"].startswith("<object")
    assert "exc" not in doc


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="text, json"):
        formatter("xml")


def test_the_access_log_never_shows_a_secret_query_value() -> None:
    assert safe_query("") == ""
    q = safe_query("prefix=a/b&token=s3cret&Password=x&consistency=stale")
    assert "s3cret" not in q and "=x" not in q
    assert q == "prefix=a/b&token=REDACTED&Password=REDACTED&consistency=stale"


def test_the_access_log_shows_only_the_apis_own_query_values() -> None:
    """A secret can hide in a value whose name says nothing (`x=1;token=...`:
    the server splits on `&` only), or be the name itself (`?s3cret`): only
    the API's own parameters keep their values."""
    for query in (
        "x=1;token=s3cret",
        "q=%0Atoken%3Ds3cret",
        "%zz=s3cret",
        "s3cret",
        "prefix=a&s3cret=",
        "limit=5&key=s3cret",
    ):
        q = safe_query(query)
        assert "s3cret" not in q, (query, q)
    assert safe_query("prefix=a/b&start=c&limit=5&consistency=stale") == (
        "prefix=a/b&start=c&limit=5&consistency=stale"
    )
    assert safe_query("x=1;token=s3cret&limit=5") == "x=REDACTED&limit=5"
