"""The ``liferaft`` command as a script sees it: every exit code of
docs/operations.md, "Exit codes", from a real CLI process against a real
1-node cluster (one for the module), a closed port, a name that does not
resolve, or a server that accepts and never answers; and the output formats
with stdout captured (not a terminal).

No timing is asserted; every run is bounded (``run_cli``'s timeout and the
CLI's own ``--timeout``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from liferaft.cli.exit_codes import ExitCode
from liferaft.harness.ports import HOST, free_port
from liferaft.harness.serve import ServeCluster
from tests.kv.procs import FAST_TIMING, run_cli


@pytest.fixture(scope="module")
def ep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 1-node liferaft-kv process (ended by PID); its client HOST:PORT."""
    with ServeCluster(tmp_path_factory.mktemp("cli"), flags=FAST_TIMING, new_session=True) as c:
        c.add_nodes(1)
        c.start_all()
        c.wait_ready()
        yield c.nodes["n1"].client


def cli(ep: str, *args: str, timeout: str = "5") -> tuple[int, str, str]:
    r = run_cli(*args, "--endpoints", ep, "--timeout", timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def closed() -> str:
    """A port nothing listens on: every connection is refused."""
    return f"{HOST}:{free_port()}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never
    answers a byte."""
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(64)
    try:
        yield f"{HOST}:{s.getsockname()[1]}"
    finally:
        s.close()


class _Stalls(BaseHTTPRequestHandler):
    """Looks like a leader (status, sessions) but never answers a key write:
    the request reaches it, and its outcome stays unknown."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        host, port = self.server.server_address[:2]
        self._json({"leader_client_addr": f"{host}:{port}", "role": "leader"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json({"session": 1})

    def do_PUT(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.connection.settimeout(20)  # until the client gives up (bounded)
        with contextlib.suppress(OSError):
            self.rfile.read(1)

    def _json(self, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalls() -> Iterator[str]:
    srv = ThreadingHTTPServer((HOST, 0), _Stalls)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"{HOST}:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def test_ok_and_the_three_formats(ep: str) -> None:
    code, out, _ = cli(ep, "kv", "put", "fmt/a", "one\ttwo")
    assert code == ExitCode.OK and out.startswith("OK revision ")
    rev = out.split()[-1]
    code, out, _ = cli(ep, "kv", "put", "fmt/a", "one\ttwo", "-w", "simple")
    assert code == 0 and int(out) > int(rev)  # simple: the revision alone
    rev = out.strip()
    code, out, _ = cli(ep, "kv", "get", "fmt/a", "-w", "json")
    assert code == 0 and json.loads(out)["value"] == "one\ttwo"
    code, out, _ = cli(ep, "kv", "get", "fmt/a", "--json")  # the alias
    assert code == 0 and json.loads(out)["key"] == "fmt/a"
    code, out, _ = cli(ep, "kv", "list", "--prefix", "fmt/", "-w", "simple")
    assert code == 0 and out.splitlines() == [f"fmt/a\tone\\ttwo\t{rev}"]


def test_a_table_off_a_terminal_is_never_cut(ep: str) -> None:
    """stdout is a pipe here: rows are printed whole, whatever their width,
    with no "…" and no colour codes."""
    key, value = "wide/" + "k" * 150, "v" * 400
    assert cli(ep, "kv", "put", key, value)[0] == 0
    code, out, _ = cli(ep, "kv", "list", "--prefix", "wide/")
    assert code == 0 and "…" not in out and "\x1b[" not in out
    (row,) = [line for line in out.splitlines() if key in line]
    assert value in row
    code, out, _ = cli(ep, "status")
    assert code == 0 and "…" not in out and "leader" in out


def test_not_found(ep: str) -> None:
    code, out, err = cli(ep, "kv", "get", "no/such/key")
    assert (code, out) == (ExitCode.NOT_FOUND, "") and "not found" in err
    code, out, _ = cli(ep, "kv", "del", "no/such/key", "-w", "json")
    assert code == ExitCode.NOT_FOUND and json.loads(out)["error"] == "not_found"


def test_precondition_failed(ep: str) -> None:
    assert cli(ep, "kv", "put", "cas/k", "old")[0] == 0
    code, out, err = cli(ep, "kv", "cas", "cas/k", "other", "new", "-w", "json")
    assert code == ExitCode.PRECONDITION_FAILED, err
    doc = json.loads(out)
    assert doc["error"] == "precondition_failed" and doc["current"]["value"] == "old"
    code, _, err = cli(ep, "kv", "put", "cas/k", "x", "--if-revision", "0")
    assert code == ExitCode.PRECONDITION_FAILED and "current: 'old'" in err


def test_an_error_and_a_usage_error(ep: str) -> None:
    code, _, err = cli(ep, "members", "add", "n9", "not-an-address")
    assert code == ExitCode.ERROR and err.startswith("Error: "), err
    code, _, err = cli(ep, "kv", "put", "only-a-key")
    assert code == ExitCode.USAGE and "VALUE" in err
    code, _, err = cli(ep, "kv", "get", "k", "-w", "json", "--json", "-w", "simple")
    assert code == ExitCode.USAGE and "--json" in err


def test_refused_everywhere_is_unavailable(closed: str) -> None:
    """Connection refused on every endpoint, or a name that does not
    resolve: no attempt reached a server, so nothing was applied."""
    code, _, err = cli(f"{closed},no-such-host.invalid:8001", "kv", "put", "k", "v",
                       timeout="1")  # fmt: skip
    assert code == ExitCode.UNAVAILABLE, err
    code, _, err = cli(closed, "transfer-leader", timeout="0.5")
    assert code == ExitCode.UNAVAILABLE, err


def test_a_write_that_reached_a_silent_server_is_outcome_unknown(
    silent: str, stalls: str, closed: str
) -> None:
    # A node that accepts the connection and never answers: the write (no
    # session needed: transfer-leader) may have reached it.
    code, _, err = cli(silent, "transfer-leader", timeout="1.5")
    assert code == ExitCode.OUTCOME_UNKNOWN, err
    # A put whose session opened and whose write was sent, never answered;
    # that another endpoint refused every attempt changes nothing.
    code, out, err = cli(f"{closed},{stalls}", "kv", "put", "k", "v", "-w", "json",
                         timeout="1.5")  # fmt: skip
    assert code == ExitCode.OUTCOME_UNKNOWN, err
    assert json.loads(out)["error"] == "timeout" and "outcome unknown" in err
    # There the session could not even be opened: the put was never sent.
    code, _, err = cli(silent, "kv", "put", "k", "v", timeout="1.5")
    assert code == ExitCode.UNAVAILABLE and "not sent" in err, err


def test_status_with_an_endpoint_down(ep: str, closed: str) -> None:
    code, out, err = cli(f"{ep},{closed}", "status", "-w", "simple", timeout="1")
    assert code == ExitCode.ERROR and "1 of 2 endpoints unreachable" in err
    up, down = out.splitlines()
    assert up.split("\t")[:3] == [ep, "n1", "leader"]
    assert down.split("\t")[:3] == [closed, "-", "unreachable"]
    code, out, _ = cli(closed, "status", "-w", "json", timeout="1")
    assert code == ExitCode.UNAVAILABLE and "error" in json.loads(out)[0]


def test_bench_kv_is_a_click_command(ep: str, tmp_path: Path) -> None:
    out_file = tmp_path / "bench.json"
    r = run_cli("bench", "kv", "--endpoints", ep, "--connections", "1", "--seconds", "0.2",
                "--warmup", "0", "--keys", "5", "-w", "simple",
                "--json", str(out_file))  # fmt: skip
    assert r.returncode == 0, r.stderr
    ops = [line.split("\t")[:2] for line in r.stdout.splitlines()]
    assert ops == [["write", "1"], ["linearizable", "1"], ["stale", "1"]]
    assert len(json.loads(out_file.read_text())["steps"]) == 3
    r = run_cli("bench", "kv", "--endpoints", ep, "--connections", "1,x")
    assert r.returncode == ExitCode.USAGE and "not a list of integers" in r.stderr
