"""Turning peer authentication on from the command line (issue 12, defect 2):
``serve --peer-secret-file`` / ``--insecure-peers`` and ``cluster up``.

The processes here exit at once (a refused flag, or a bind to 192.0.2.1,
an address of TEST-NET-1 that no machine owns), except one node on
127.0.0.1 ports 21101/21201, stopped in a finally block."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from liferaft.cli import cluster as cluster_cli
from liferaft.kv.serve import serve_argv
from liferaft.transport import CallError, TcpTransport
from liferaft.transport.secret import is_loopback

from .helpers import Recorder

OUTSIDE = "192.0.2.1"  # not loopback, and not ours: binding it fails


def serve(tmp: Path, peer_host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    peer = f"{peer_host}:21001"
    cmd = serve_argv("n1", tmp / "n1", peer, "127.0.0.1:21002", "--initial-cluster", f"n1={peer}")
    return subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, timeout=60, env=_env(), check=False
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.getcwd(), "LIFERAFT_NO_UVLOOP": "1"}


def secret_file(tmp: Path, mode: int = 0o600, text: str = "s" * 32) -> Path:
    path = tmp / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_serve_refuses_an_outside_peer_address_without_authentication(tmp_path: Path) -> None:
    line = one_line_error(serve(tmp_path, OUTSIDE))
    assert "--peer-secret-file" in line and "--insecure-peers" in line, line
    assert "cannot listen" not in line  # refused before trying to bind


@pytest.mark.parametrize("how", ["insecure", "secret"])
def test_serve_binds_an_outside_address_with_a_secret_or_when_told(
    how: str, tmp_path: Path
) -> None:
    flags = ["--insecure-peers"] if how == "insecure" else [
        "--peer-secret-file", str(secret_file(tmp_path))
    ]  # fmt: skip
    line = one_line_error(serve(tmp_path, OUTSIDE, *flags))
    assert "cannot listen on peer address" in line, line  # it got as far as binding


@pytest.mark.parametrize(
    ("mode", "text", "words"),
    [
        (0o640, "s" * 32, "readable by group or others"),
        (0o604, "s" * 32, "readable by group or others"),
        (0o600, "short", "shorter than"),
    ],
)
def test_serve_refuses_an_unsafe_or_short_secret_file(
    mode: int, text: str, words: str, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, mode, text)
    line = one_line_error(serve(tmp_path, "127.0.0.1", "--peer-secret-file", str(path)))
    assert words in line and str(path) in line, line


def test_cluster_up_makes_one_private_secret_and_hands_it_to_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    def start(m: Any, spec: str, extra: list[str]) -> None:
        started.append(extra)

    async def watch(*args: Any, **kw: Any) -> None:
        return None

    monkeypatch.setattr(cluster_cli, "start", start)
    monkeypatch.setattr(cluster_cli, "watch", watch)
    monkeypatch.setattr(cluster_cli, "stop", lambda members: None)
    d = tmp_path / "data"
    contents = []
    for _ in range(2):  # the second run is a restart: same secret
        result = CliRunner().invoke(cluster_cli.up, ["--nodes", "3", "--dir", str(d)])
        assert result.exit_code == 0, result.output
        secret = d / "peer-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        contents.append(secret.read_bytes())
    assert contents[0] == contents[1] and len(contents[0].strip()) >= 32
    assert len(started) == 6
    for extra in started:
        i = extra.index("--peer-secret-file")
        assert Path(extra[i + 1]) == (d / "peer-secret").resolve()


def test_cluster_up_refuses_a_secret_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_cli, "start", lambda *a: pytest.fail("started a node"))
    (tmp_path / "peer-secret").write_text("s" * 64)
    (tmp_path / "peer-secret").chmod(0o644)
    result = CliRunner().invoke(cluster_cli.up, ["--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "readable by group or others" in result.output


async def test_a_node_started_with_the_secret_refuses_strangers(tmp_path: Path) -> None:
    """One real `liferaft serve` with the flag cluster up passes: a caller
    without the secret is refused, one with it is served."""
    path = secret_file(tmp_path)
    peer, client = "127.0.0.1:21101", "127.0.0.1:21201"
    cmd = serve_argv("n1", tmp_path / "n1", peer, client, "--initial-cluster", f"n1={peer}")
    log = open(tmp_path / "n1.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*cmd, "--peer-secret-file", str(path)], stdout=log, stderr=subprocess.STDOUT, env=_env()
    )
    made: list[TcpTransport] = []
    try:
        await _wait_ready(client, proc)
        bad = msgspec.msgpack.encode(["nonsense"])
        for name, secret in (("stranger", None), ("holder", path.read_bytes().strip())):
            t = TcpTransport(name, "liferaft", "127.0.0.1:0", peer_secret=secret)
            made.append(t)
            await t.start(Recorder(name))
            if secret is None:
                with pytest.raises(CallError, match="refused by the peer: no proof"):
                    await t.call_address(peer, bad, 10)
            else:  # through the handshake: the node's own handler answers
                with pytest.raises(CallError, match="remote error"):
                    await t.call_address(peer, bad, 10)
    finally:
        for t in made:
            await t.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "cluster secret" in (tmp_path / "n1.log").read_text()


async def _wait_ready(client: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the node exited"
        try:
            with urllib.request.urlopen(f"http://{client}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"node not ready in time ({sys.executable})")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("node1.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "resolves_to", "loopback"),
    [
        ("localhost", ["127.0.0.1", "::1"], True),
        # An /etc/hosts (or resolver) that sends "localhost" elsewhere: binding
        # it would listen on that address, reachable from other machines.
        ("localhost", ["10.1.2.3"], False),
        ("localhost", ["127.0.0.1", "10.1.2.3"], False),
        ("127.0.0.1.evil.example", ["203.0.113.9"], False),
        ("node1.internal", ["127.0.1.1"], True),
        ("unresolvable.invalid", [], False),
    ],
)
def test_a_name_is_loopback_only_if_every_address_it_resolves_to_is(
    host: str, resolves_to: list[str], loopback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def getaddrinfo(name: str, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        assert name == host
        if not resolves_to:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, 1, 6, "", (a, 0)) for a in resolves_to
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::ffff:7f00:2"])
def test_an_ipv4_mapped_loopback_address_is_loopback(host: str) -> None:
    assert is_loopback(host)
