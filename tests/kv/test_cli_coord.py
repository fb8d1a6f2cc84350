"""The coordination commands of ``liferaft kv`` (docs/kv.md, "The CLI")
against one real 1-node cluster for the module: reads at a revision, ranges,
leases, transactions and compaction in process (click's runner: fast), and
the long-running ones (watch, lock, elect) as real CLI processes, stopped by
SIGINT as a terminal's Ctrl-C would.

No timing is asserted; every wait is bounded in count and time.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.cli.coord_cmds import event_output
from liferaft.cli.exit_codes import ExitCode
from liferaft.client import Event, Item
from liferaft.harness.procs import Child, ProcessGroup
from liferaft.harness.serve import ServeCluster
from tests.kv.procs import CLI, FAST_TIMING, wait_for

WAIT = 30.0  # the bound of every wait for a process or a line


@pytest.fixture(scope="module")
def ep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 1-node liferaft-kv process (ended by PID); its client HOST:PORT."""
    with ServeCluster(tmp_path_factory.mktemp("coord"), flags=FAST_TIMING,
                      new_session=True) as c:  # fmt: skip
        c.add_nodes(1)
        c.start_all()
        c.wait_ready()
        yield c.nodes["n1"].client


def kv(ep: str, *args: str, stdin: str | None = None) -> Any:
    """``liferaft kv ARGS`` in process; the result (exit_code, stdout, stderr)."""
    cut = args.index("--") if "--" in args else len(args)  # a command to run under a lock
    argv = ["kv", *args[:cut], "--endpoints", ep, "--timeout", "5", *args[cut:]]
    r = CliRunner().invoke(main, argv, input=stdin)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output, r.output
    return r


def put(ep: str, key: str, value: str, *extra: str) -> int:
    r = kv(ep, "put", key, value, *extra, "-w", "simple")
    assert r.exit_code == 0, r.output
    return int(r.stdout)


# -- reads at a revision, ranges ----------------------------------------------------------


def test_get_and_list_at_a_revision(ep: str) -> None:
    r1 = put(ep, "rev/k", "one")
    r2 = put(ep, "rev/k", "two")
    put(ep, "rev/l", "x")
    assert kv(ep, "get", "rev/k", "--rev", str(r1)).stdout == "one\n"
    doc = json.loads(kv(ep, "get", "rev/k", "-w", "json").stdout)
    assert (doc["value"], doc["revision"], doc["create_revision"], doc["version"]) == (
        "two", r2, r1, 2,
    )  # fmt: skip
    # Before the key existed: not found, exit 3.
    r = kv(ep, "get", "rev/k", "--rev", str(r1 - 1))
    assert r.exit_code == ExitCode.NOT_FOUND and f"at revision {r1 - 1}" in r.stderr
    # PREFIX as an argument, at a past revision: one snapshot.
    r = kv(ep, "list", "rev/", "--rev", str(r2), "-w", "simple")
    assert r.stdout.splitlines() == [f"rev/k\ttwo\t{r2}"]
    r = kv(ep, "list", "--prefix", "rev/", "--keys-only", "-w", "simple")
    assert [ln.split("\t")[0] for ln in r.stdout.splitlines()] == ["rev/k", "rev/l"]
    assert kv(ep, "list", "rev/", "--count-only", "-w", "simple").stdout == "2\n"
    assert kv(ep, "list", "rev/", "--count-only").stdout.startswith("2 keys (store revision ")
    doc = json.loads(kv(ep, "list", "rev/", "--limit", "1", "-w", "json").stdout)
    assert [i["key"] for i in doc["items"]] == ["rev/k"] and doc["count"] == 2
    # Bad input: one line and exit 2, nothing read.
    assert kv(ep, "list", "rev/", "--prefix", "other/").exit_code == ExitCode.USAGE
    assert kv(ep, "list", "--keys-only", "--count-only").exit_code == ExitCode.USAGE
    assert kv(ep, "get", "rev/k", "--rev", "-1").exit_code == ExitCode.USAGE


# -- leases -------------------------------------------------------------------------------


def test_lease_commands(ep: str) -> None:
    r = kv(ep, "lease", "grant", "30", "-w", "json")
    assert r.exit_code == 0, r.output
    lease = json.loads(r.stdout)
    lid = str(lease["id"])
    assert lease["ttl"] >= 30
    assert kv(ep, "lease", "grant", "30").stdout.startswith("lease ")
    put(ep, "leased/a", "1", "--lease", lid)
    r = kv(ep, "lease", "info", lid, "--keys", "-w", "simple")
    head, *keys = r.stdout.splitlines()
    assert head.split("\t")[:2] == [lid, str(lease["ttl"])] and keys == ["leased/a"]
    assert "leased/a" in kv(ep, "lease", "info", lid, "--keys").stdout
    assert json.loads(kv(ep, "get", "leased/a", "-w", "json").stdout)["lease"] == int(lid)
    hexid = hex(int(lid))  # lock and election keys name leases in hex
    r = kv(ep, "lease", "keepalive", hexid, "--once", "-w", "simple")
    assert r.stdout.split("\t")[0] == lid
    listed = kv(ep, "lease", "list", "-w", "simple").stdout.splitlines()
    assert f"{lid}\t{lease['ttl']}" in listed
    r = kv(ep, "lease", "revoke", lid)
    assert r.exit_code == 0 and r.stdout.startswith(f"lease {lid} revoked (revision ")
    # Its key went with it; the lease is gone everywhere: exit 3.
    assert kv(ep, "get", "leased/a").exit_code == ExitCode.NOT_FOUND
    r = kv(ep, "lease", "info", lid, "-w", "json")
    assert r.exit_code == ExitCode.NOT_FOUND and json.loads(r.stdout)["error"] == "lease_not_found"
    for args in (("lease", "revoke", lid), ("lease", "keepalive", lid),
                 ("put", "leased/b", "v", "--lease", lid)):  # fmt: skip
        r = kv(ep, *args)
        assert r.exit_code == ExitCode.NOT_FOUND and "not found" in r.stderr, args
    assert kv(ep, "get", "leased/b").exit_code == ExitCode.NOT_FOUND  # nothing was written
    for bad in ("x", "0", str(1 << 63)):
        r = kv(ep, "lease", "info", bad)
        assert r.exit_code == ExitCode.USAGE and "lease id" in r.stderr, bad
    assert kv(ep, "lease", "grant", "0").exit_code == ExitCode.USAGE


# -- transactions -------------------------------------------------------------------------


def _txn(value: str) -> str:
    return json.dumps({
        "compare": [{"key": "txn/cfg", "target": "value", "op": "=", "value": value}],
        "success": [{"put": {"key": "txn/cfg", "value": "new"}},
                    {"delete": {"prefix": "txn/tmp/"}}],
        "failure": [{"range": {"prefix": "txn/"}}],
    })  # fmt: skip


def test_txn(ep: str, tmp_path: Path) -> None:
    put(ep, "txn/cfg", "old")
    put(ep, "txn/tmp/1", "x")
    f = tmp_path / "t.json"
    f.write_text(_txn("old"))
    r = kv(ep, "txn", "--file", str(f), "-w", "simple")
    assert r.exit_code == 0, r.output
    head, put_row, del_row = r.stdout.splitlines()
    rev = int(head.split("\t")[1])
    assert head == f"SUCCESS\t{rev}" and put_row == f"put\t{rev}" and del_row == "delete\t1"
    assert kv(ep, "get", "txn/cfg").stdout == "new\n"
    # The compare fails now: the failure branch runs (exit 0), from stdin.
    r = kv(ep, "txn", "-w", "json", stdin=_txn("old"))
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["succeeded"] is False
    (only,) = doc["results"]
    assert [i["key"] for i in only["range"]["items"]] == ["txn/cfg"]
    r = kv(ep, "txn", stdin=_txn("old"))
    assert r.stdout.splitlines()[:3] == [f"FAILURE (revision {rev})", "range: 1 keys",
                                         f"  txn/cfg = new (revision {rev})"]  # fmt: skip
    # Bad input: one line, exit 1, nothing applied.
    bad = [
        ("not json", "not JSON"),
        ("[1]", "a txn is a JSON object"),
        ('{"compare": [], "sucess": []}', "unknown field 'sucess'"),
        ('{"compare": [{"key": "k"}]}', "compare[0] needs exactly"),
        ('{"success": [{"get": {"key": "k"}}]}', "success[0] must be one of"),
        ('{"success": [{"put": {"key": "txn/cfg"}}]}', "value"),  # the server's check
    ]
    for text, message in bad:
        r = kv(ep, "txn", stdin=text)
        assert r.exit_code == ExitCode.ERROR and message in r.stderr, (text, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    r = kv(ep, "txn", "--file", str(tmp_path / "none.json"))
    assert r.exit_code == ExitCode.ERROR and "No such file" in r.stderr
    assert kv(ep, "get", "txn/cfg").stdout == "new\n"


# -- watch: formats in process, the stream as a process -----------------------------------


def test_event_formats() -> None:
    put_ev = Event("k", "v2", 7, 3, 2, 0, "put", Item("k", "v1", 3))
    gone = Event("k", "", 8, 0, 0, 0, "delete", None)
    assert event_output(put_ev, False).line == "7 PUT k v2"
    assert event_output(gone, False).rows == [["8", "DELETE", "k"]]
    with_prev = event_output(put_ev, True)
    assert with_prev.rows == [["7", "PUT", "k", "v2", "v1"]]
    assert with_prev.line == "7 PUT k v2 (was 'v1')"
    assert event_output(gone, True).rows == [["8", "DELETE", "k", "", ""]]
    doc = event_output(put_ev, True).data
    assert (doc["type"], doc["revision"], doc["prev"]["value"]) == ("put", 7, "v1")


class Streaming:
    """A CLI process whose stdout lines are read as they come (bounded waits)."""

    def __init__(self, group: ProcessGroup, log: Path, *args: str) -> None:
        self.child: Child = group.start(log.stem, [*CLI, *args], log=log,
                                        stdout=subprocess.PIPE)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.child.popen.stdout is not None
        for raw in self.child.popen.stdout:
            self.lines.put(raw.decode().rstrip("\n"))

    def line(self) -> str:
        return self.lines.get(timeout=WAIT)

    def stop(self, group: ProcessGroup, sig: int = signal.SIGINT) -> int | None:
        """Send ``sig`` (Ctrl-C) and wait for the exit; its status."""
        group.signal(self.child, sig)
        group.reap(self.child, WAIT)
        return self.child.returncode


def test_watch_prints_each_change_until_ctrl_c(ep: str, tmp_path: Path) -> None:
    r0 = put(ep, "w/a", "1")
    with ProcessGroup(new_session=True) as g:
        # From r0: its first line is w/a, whenever the watch connects.
        w = Streaming(g, tmp_path / "watch.log", "kv", "watch", "--prefix", "w/", "--rev", str(r0),
                      "--endpoints", ep, "-w", "simple")  # fmt: skip
        assert w.line() == f"{r0}\tPUT\tw/a\t1"
        r1 = put(ep, "w/b", "2")  # made while it watches
        put(ep, "other", "x")  # not under the prefix: not printed
        r2 = int(kv(ep, "del", "w/a", "-w", "simple").stdout)
        assert [w.line(), w.line()] == [f"{r1}\tPUT\tw/b\t2", f"{r2}\tDELETE\tw/a"]
        assert w.stop(g) == 0
    assert "Traceback" not in (tmp_path / "watch.log").read_text()


def test_lock_holds_while_the_command_runs(ep: str, tmp_path: Path) -> None:
    """A second `kv lock` waits while the first one's command runs, and runs
    its own once that one exits; each sees the lock's key."""
    release = tmp_path / "release"
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    hold = ("import os, pathlib, time; "
            f"pathlib.Path({str(first_out)!r}).write_text(os.environ['LIFERAFT_LOCK_KEY']); "
            f"[time.sleep(0.05) for _ in range(600) "
            f"if not pathlib.Path({str(release)!r}).exists()]")
    note = ("import os, pathlib; "
            f"pathlib.Path({str(second_out)!r}).write_text(os.environ['LIFERAFT_LOCK_KEY'])")
    base = ["kv", "lock", "cl/job", "--endpoints", ep, "--ttl", "5", "--"]
    with ProcessGroup(new_session=True) as g:
        first = g.start("first", [*CLI, *base, sys.executable, "-c", hold],
                        log=tmp_path / "first.log")  # fmt: skip
        key = wait_for(lambda: first_out.exists() and first_out.read_text() or None, WAIT,
                       "the first lock")  # fmt: skip
        assert key.startswith("cl/job/")
        second = g.start("second", [*CLI, *base, sys.executable, "-c", note],
                         log=tmp_path / "second.log")  # fmt: skip
        # The second is queued (its key exists) and must not run its command.
        wait_for(lambda: kv(ep, "list", "cl/job/", "--count-only", "-w", "simple").stdout == "2\n",
                 WAIT, "the second in the queue")  # fmt: skip
        time.sleep(0.5)  # room for a broken lock to run it (not a timing assertion)
        assert not second_out.exists()
        release.touch()
        assert g.reap(first, WAIT) and first.returncode == 0
        assert g.reap(second, WAIT), "the second lock never ran its command"
        assert second.returncode == 0, (tmp_path / "second.log").read_text()
        assert second_out.read_text().startswith("cl/job/") and second_out.read_text() != key
    # Both released their place.
    assert kv(ep, "list", "cl/job/", "--count-only", "-w", "simple").stdout == "0\n"


def test_lock_exit_status_and_ctrl_c(ep: str, tmp_path: Path) -> None:
    r = kv(ep, "lock", "cl/st", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert r.exit_code == 7, r.output
    r = kv(ep, "lock", "cl/st", "--", str(tmp_path / "no-such-command"))
    assert r.exit_code == ExitCode.ERROR and "cannot run" in r.stderr
    with ProcessGroup(new_session=True) as g:
        held = Streaming(g, tmp_path / "lock.log", "kv", "lock", "cl/st", "--endpoints", ep,
                         "-w", "json")  # fmt: skip
        doc = json.loads(held.line())
        assert doc["name"] == "cl/st" and doc["key"].startswith("cl/st/")
        assert held.stop(g) == 0
    assert kv(ep, "list", "cl/st/", "--count-only", "-w", "simple").stdout == "0\n"


def test_elect_and_listen(ep: str, tmp_path: Path) -> None:
    r = kv(ep, "elect", "el/svc")
    assert r.exit_code == ExitCode.USAGE and "--listen" in r.stderr
    assert kv(ep, "elect", "el/svc", "v", "--listen").exit_code == ExitCode.USAGE
    args = ("--endpoints", ep, "-w", "simple")
    with ProcessGroup(new_session=True) as g:
        a = Streaming(g, tmp_path / "a.log", "kv", "elect", "el/svc", "alpha", *args)
        assert a.line().split("\t")[1] == "alpha"  # leads
        listen = Streaming(g, tmp_path / "listen.log", "kv", "elect", "--listen", "el/svc", *args)
        assert listen.line() == "alpha"
        b = Streaming(g, tmp_path / "b.log", "kv", "elect", "el/svc", "beta", *args)
        wait_for(lambda: kv(ep, "list", "el/svc/", "--count-only", "-w", "simple").stdout == "2\n",
                 WAIT, "beta in the queue")  # fmt: skip
        assert a.stop(g) == 0  # resigns: beta leads
        assert b.line().split("\t")[1] == "beta" and listen.line() == "beta"
        assert b.stop(g) == 0 and listen.stop(g) == 0


# -- compaction (last: it drops the history the tests above do not need) -----------------


def test_compact_and_reads_before_it(ep: str) -> None:
    r1 = put(ep, "cmp/k", "1")
    r2 = put(ep, "cmp/k", "2")
    r = kv(ep, "compact", str(r2))
    assert r.exit_code == 0 and r.stdout.startswith(f"compacted at revision {r2}")
    r = kv(ep, "get", "cmp/k", "--rev", str(r1), "-w", "json")
    doc = json.loads(r.stdout)
    assert r.exit_code == ExitCode.ERROR and doc["error"] == "compacted"
    assert doc["compact_revision"] == r2 and f"use --rev {r2} or later" in r.stderr
    assert kv(ep, "get", "cmp/k", "--rev", str(r2)).stdout == "2\n"
    # A watch from before it ends at once with the first revision it may start at.
    r = kv(ep, "watch", "cmp/k", "--rev", str(r1))
    assert r.exit_code == ExitCode.ERROR and "compacted" in r.stderr and "use --rev" in r.stderr
    assert kv(ep, "compact", "0").exit_code == ExitCode.USAGE
    r = kv(ep, "compact", str(r2 + 1000))
    assert r.exit_code == ExitCode.ERROR and r.stderr.startswith("Error: ")
