"""The one process harness (liferaft/harness, issue 13 section 4): it ends
only the processes it started, on every exit path; its pid registry names
a process for good (PID and start time) and refuses another version; and
``cluster up`` / ``cluster down`` stop exactly the recorded processes.

Every wait is bounded; nothing asserts timings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.harness import pidfile, ports
from liferaft.harness.procs import ProcessGroup, pid_alive, start_time
from liferaft.harness.serve import ServeCluster
from tests.kv.procs import (
    CLI,
    HOST,
    free_base_port,
    http,
    kill_pids,
    pids_with_arg,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_group_ends_its_children_even_when_the_body_fails(tmp_path: Path) -> None:
    outsider = subprocess.Popen(SLEEPER)  # not the group's: never touched
    try:
        with pytest.raises(RuntimeError), ProcessGroup() as g:
            kids = [g.start(f"k{i}", SLEEPER, log=tmp_path / f"k{i}.log") for i in range(3)]
            assert all(k.alive() for k in kids)
            raise RuntimeError("the caller failed")
        assert not [k for k in kids if pid_alive(k.pid)]
        assert g.live == {}  # each reaped, so its PID left the registry
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait(10)


def test_a_reaped_child_is_never_signalled_again(tmp_path: Path) -> None:
    with ProcessGroup() as g:
        k = g.start("k", SLEEPER)
        assert g.kill(k) == -9
        assert k.pid not in g.live
        # Its PID may now belong to anyone: the group refuses to signal it.
        assert g.signal(k, 15) is False


def test_terminate_wakes_a_stopped_child_and_sigterm_ends_it(tmp_path: Path) -> None:
    with ProcessGroup() as g:
        k = g.start("k", SLEEPER)
        assert g.signal(k, 19)  # SIGSTOP: it could not act on SIGTERM
        g.terminate([k], grace=10.0)
        assert k.returncode == -15  # SIGCONT first, so SIGTERM ended it, not SIGKILL


def test_pidfile_round_trip_and_a_recycled_pid_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / pidfile.NAME
    with ProcessGroup() as g:
        a, b = g.start("a", SLEEPER), g.start("b", SLEEPER)
        pidfile.write(path, {"a": a.pid, "b": b.pid})
        entries = {e.name: e for e in pidfile.read(path)}
        assert entries["a"].pid == a.pid and entries["a"].start == start_time(a.pid)
        assert all(e.running() for e in entries.values())
        # "b" as if its PID had been reused by another process since.
        forged = pidfile.Entry("b", b.pid, entries["b"].start + 1)
        stopped = pidfile.stop([entries["a"], forged], grace=10.0)
        assert [e.name for e in stopped] == ["a"]
        assert wait_for(lambda: a.popen.poll() is not None, 10, "a to exit")
        assert b.alive()


@pytest.mark.parametrize("text", ['{"version": 2, "pids": {}}', '{"pids": {}}'])
def test_pidfile_of_another_version_is_refused_naming_both(tmp_path: Path, text: str) -> None:
    path = tmp_path / pidfile.NAME
    path.write_text(text)
    with pytest.raises(pidfile.PidfileError) as exc:
        pidfile.read(path)
    msg = str(exc.value)
    assert "\n" not in msg and f"version {pidfile.VERSION}" in msg
    assert f"version {json.loads(text).get('version')}" in msg
    assert pidfile.read(tmp_path / "none") == []


def test_serve_cluster_kills_restarts_and_stops_a_node_by_pid(tmp_path: Path) -> None:
    with ServeCluster(tmp_path, flags=["--election-timeout", "300"]) as c:
        (n,) = c.add_nodes(1)
        c.start_all()
        c.wait_ready(30)
        first = n.pid
        c.kill("n1")
        assert not pid_alive(first) and n.expected_exit
        c.start("n1")  # again, on its data
        assert n.pids == [first, n.pid] and not n.expected_exit
        c.wait_ready(30)
        assert c.stop("n1") == 0  # SIGTERM: a clean exit
        assert "---- start" in n.log.read_text()
    assert c.closed and c.group.live == {}


def test_cluster_down_stops_what_cluster_up_started(tmp_path: Path) -> None:
    """`cluster down` stops exactly what `cluster up` started; `up` printed
    the web console's URL once, when its node answered."""
    d = (tmp_path / "c").resolve()
    base = free_base_port(1)
    cmd = [*CLI, "cluster", "up", "--nodes", "1", "--dir", str(d)]
    cmd += ["--base-port", str(base), "--no-table"]
    out = tmp_path / "up.log"
    with open(out, "wb") as f:
        up = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: http(f"{HOST}:{base + 1001}", "GET", "/readyz", timeout=1.0)[0] == 200,
            30,
            "the node of cluster up to be ready",
            0.2,
        )
        # `make run` prints where the web console is, once a node answers.
        console = f"console: http://{HOST}:{base + 1001}/ui/"
        wait_for(lambda: console in out.read_text(), 10, "cluster up's console line", 0.2)
        entries = {e.name: e.pid for e in pidfile.read(d / pidfile.NAME)}
        assert entries["cluster-up"] == up.pid and set(entries) == {"cluster-up", "n1"}

        again = run_cli("cluster", "up", "--nodes", "1", "--dir", str(d), "--no-table")
        assert again.returncode != 0 and "already runs" in again.stderr, again.stderr

        r = run_cli("cluster", "down", "--dir", str(d))
        assert r.returncode == 0, r.stderr
        assert f"cluster-up (pid {up.pid})" in r.stdout and f"n1 (pid {entries['n1']})" in r.stdout
        assert up.wait(timeout=20) == 0, out.read_text()
        assert "stopped: n1" in out.read_text()
        assert out.read_text().count("console: ") == 1, out.read_text()
        assert not pid_alive(entries["n1"])
        assert not (d / pidfile.NAME).exists()
        assert "no cluster runs" in run_cli("cluster", "down", "--dir", str(d)).stdout
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        kill_pids(pids_with_arg(f"--data-dir {d}/n") - {os.getpid()}, grace=3.0)


# -- review of issue 13's harness: what a careless caller or an unlucky exit does ---------

ORPHAN_SCRIPT = """
import gc, sys
from liferaft.harness.procs import ProcessGroup

def careless():  # starts a child, never closes its group, drops it
    g = ProcessGroup()
    print(g.start("s", [sys.executable, "-c", "import time; time.sleep(60)"]).pid, flush=True)

careless()
gc.collect()
"""


def test_a_group_nobody_closed_or_kept_still_ends_its_children_at_exit() -> None:
    # The atexit hook is the last resort for a group nobody closed; it must
    # not lose the group when the caller also dropped every reference to it.
    r = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", ORPHAN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.split()[0])
    try:
        assert not pid_alive(pid), f"pid {pid} outlived the process that started it"
    finally:
        kill_pids([pid], grace=3.0)


def test_free_base_port_fits_when_the_ephemeral_range_starts_low(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ip_local_port_range "1024 65535" (some hosts, containers): there is no
    # room below it, which must not crash the search (randint's empty range)
    # or hand out ports past 65535.
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 1024)
    for nodes in (1, 9):
        base = ports.free_base_port(nodes)
        assert base >= ports.LOW and base + 1000 + nodes <= 65535


@pytest.mark.timeout(20)
def test_free_port_gives_up_instead_of_looping_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every candidate taken (or already handed out): a clear error, bounded.
    monkeypatch.setattr(ports, "port_is_free", lambda p: False)
    monkeypatch.setattr(ports, "_given", {47999})
    monkeypatch.setattr(ports, "free_ports", lambda n: [47999])
    with pytest.raises(RuntimeError, match="no free port"):
        ports.free_port()


def _up(d: Path, *args: str) -> list[str]:
    return [*CLI, "cluster", "up", "--dir", str(d), "--no-table", *args]


def _refused(cmd: list[str], tmp_path: Path) -> str:
    """Run a ``cluster up`` that must refuse at once: its stderr.  Bounded:
    one that starts anyway is killed by PID, with every node it started."""
    up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = up.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        up.kill()
        out, err = up.communicate(timeout=10)
    finally:
        kill_pids(pids_with_arg(f"--data-dir {tmp_path}") - {os.getpid()}, grace=3.0)
    assert up.returncode not in (0, None), f"cluster up did not refuse:\n{out}\n{err}"
    assert not pids_with_arg(f"--data-dir {tmp_path}"), "a node was started anyway"
    return err


def test_cluster_up_refuses_a_port_in_use_naming_it(tmp_path: Path) -> None:
    # A careless operator: another program (or another cluster) holds one
    # of the ports.  Before, its node died at start and `up` went on
    # watching "n1=down" forever, exit status 0 once stopped.
    d = (tmp_path / "c").resolve()
    base = free_base_port(1)
    with socket.socket() as s:
        s.bind((HOST, base + 1001))
        s.listen()
        err = _refused(_up(d, "--nodes", "1", "--base-port", str(base)), tmp_path)
    assert f"{HOST}:{base + 1001}" in err and "n1" in err and "--base-port" in err, err
    assert not (d / pidfile.NAME).exists()


@pytest.mark.parametrize("problem", ["missing", "open to others"])
def test_cluster_up_refuses_a_bad_token_file_before_starting_a_node(
    tmp_path: Path, problem: str
) -> None:
    token = tmp_path / "token"
    if problem != "missing":
        token.write_text("s3cret\n")
        token.chmod(0o644)
    d = (tmp_path / "c").resolve()
    base = free_base_port(1)
    cmd = _up(d, "--nodes", "1", "--base-port", str(base), "--token-file", str(token))
    err = _refused(cmd, tmp_path)
    assert "--token-file" in err and str(token) in err, err


def test_two_cluster_ups_in_one_dir_cannot_both_start(tmp_path: Path) -> None:
    # The registry check alone is a race (both read "nothing runs", both
    # start nodes on the same data dirs); `up` holds DIR's lock instead.
    import fcntl

    d = (tmp_path / "c").resolve()
    d.mkdir()
    with open(d / "cluster.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `up` would
        base = free_base_port(1)
        err = _refused(_up(d, "--nodes", "1", "--base-port", str(base)), tmp_path)
    assert "already runs" in err and str(d) in err, err


def test_cluster_up_reports_a_node_that_died_and_a_hangup_stops_the_rest(
    tmp_path: Path,
) -> None:
    # The terminal closes (SIGHUP): the nodes are in their own sessions, so
    # `up` must stop them itself, or they run on, orphaned.
    d = (tmp_path / "c").resolve()
    base = free_base_port(2)
    out = tmp_path / "up.log"
    with open(out, "wb") as f:
        up = subprocess.Popen(
            _up(d, "--nodes", "2", "--base-port", str(base)),
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    nodes: dict[str, int] = {}
    try:

        def both_recorded() -> bool:
            nodes.update((e.name, e.pid) for e in pidfile.read(d / pidfile.NAME))
            return {"n1", "n2"} <= set(nodes)

        wait_for(both_recorded, 30, "cluster up to record both nodes", 0.1)
        kill_pids([nodes["n2"]], grace=0.0)  # SIGKILL at once, as a crash would
        wait_for(lambda: "n2 (pid" in out.read_text(), 20, "up to report n2's exit", 0.1)
        assert f"n2 (pid {nodes['n2']}) exited" in out.read_text()
        up.send_signal(signal.SIGHUP)
        up.wait(timeout=30)
        assert not pid_alive(nodes["n1"]), out.read_text()
        assert "stopped: n1" in out.read_text()
        assert not (d / pidfile.NAME).exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        kill_pids(pids_with_arg(f"--data-dir {d}/n") - {os.getpid()}, grace=3.0)
