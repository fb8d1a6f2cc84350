"""``python -m liferaft.verify revisions|leases``: a good file passes (exit
0), a planted bug fails (exit 1) with its message, an unreadable file is a
one-line error (exit 2)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from liferaft.verify.__main__ import main
from liferaft.verify.leases import KeyGone
from liferaft.verify.rev_history import rev_to_json

from .test_leases import HELD
from .test_watches import EVENTS, good, history


def test_revisions_with_watches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h, w = tmp_path / "history.json", tmp_path / "watches.json"
    h.write_text(json.dumps(rev_to_json(history())))
    w.write_text(json.dumps([asdict(good())]))
    assert main(["revisions", str(h), "--watches", str(w)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == ("rev_ops=5 rev_pinned=0 rev_gaps=0 rev_violations=0 watch_streams=1 "
                           "watch_events=5 watch_gaps=0 watch_dups=0 watch_disorder=0 "
                           "watch_mismatch=0")
    w.write_text(json.dumps([asdict(replace(good(), events=EVENTS + EVENTS[-1:]))]))
    assert main(["revisions", str(h), "--watches", str(w)]) == 1
    out = capsys.readouterr().out
    assert "watch 1 dups: put app/b='4' at revision 5" in out and "watch_dups=1" in out
    assert main(["revisions", str(h)]) == 0
    assert "watch_" not in capsys.readouterr().out


def test_leases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "leases.json"
    lease = replace(HELD, gone=(KeyGone("lock/a", 6.0),))
    f.write_text(json.dumps({"leases": [asdict(lease)], "leaderless": []}))
    assert main(["leases", str(f)]) == 1
    assert "lease_early_expiry=1" in capsys.readouterr().out
    f.write_text(json.dumps({"leases": [asdict(lease)], "leaderless": [[0.5, 4.5]]}))
    assert main(["leases", str(f)]) == 0


@pytest.mark.parametrize("sub", ["revisions", "leases"])
def test_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1}]' if sub == "revisions" else '{"leases": [{"id": 1}]}')
    assert main([sub, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {bad}:") and err.count("\n") == 1
    assert main([sub, str(tmp_path / "missing.json")]) == 2
