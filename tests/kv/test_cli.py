"""`liferaft serve` flag handling in process (click's runner): bad flags are
one clear line and a non-zero exit; --config TOML merges under the flags;
TLS flags build contexts (certificates from trustme)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.kv.listener import ClientLimits
from liferaft.kv.serve import ServeOptions, node_config, parse_cluster

BASE = [
    "serve", "--id", "n1", "--peer-addr", "127.0.0.1:7001", "--client-addr", "127.0.0.1:8001",
]


def run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--initial-cluster", "n1=nohost"], "not a host:port"),
        (["--initial-cluster", "n1"], "is not ID=HOST:PORT"),
        (["--initial-cluster", "n1=127.0.0.1:1,n1=127.0.0.1:2"], "appears twice"),
        (["--initial-cluster", "n1=127.0.0.1:7001", "--join", "http://x:1"], "exclude each other"),
        (["--join", "ftp://x"], "is not an http(s) URL"),
        (["--election-timeout", "100", "--heartbeat-interval", "100"], "must exceed"),
        (["--peer-cert", "c.pem"], "go together"),
        (["--peer-ca", "ca.pem"], "needs --peer-cert"),
    ],
)
def test_bad_flags_are_one_line_errors(
    tmp_path: Path, captured: list[ServeOptions], extra: list[str], message: str
) -> None:
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), *extra])
    assert r.exit_code != 0 and message in r.output
    assert "Traceback" not in r.output and not captured


def test_a_bad_address_flag(tmp_path: Path, captured: list[ServeOptions]) -> None:
    r = run(["serve", "--id", "n1", "--data-dir", str(tmp_path), "--peer-addr", "7001",
             "--client-addr", "127.0.0.1:8001"])
    assert r.exit_code == 2 and "--peer-addr" in r.output and "not a host:port" in r.output


def test_an_unusable_data_dir_or_token_file(tmp_path: Path, captured: list[ServeOptions]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = run([*BASE, "--data-dir", str(f / "sub")])
    assert r.exit_code == 1 and "data dir" in r.output and "Traceback" not in r.output
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--token-file", str(tmp_path / "none")])
    assert r.exit_code == 1 and "--token-file" in r.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--token-file", str(empty)])
    assert r.exit_code == 1 and "is empty" in r.output


def test_config_file_settings_merge_under_the_flags(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    cfg = tmp_path / "n1.toml"
    cfg.write_text(
        f'data-dir = "{tmp_path / "d"}"\n'
        "election_timeout = 500\n"
        "snapshot-entries = 99\n"
        f'token-file = "{token}"\n'
        "[initial-cluster]\n"
        'n1 = "127.0.0.1:7001"\n'
        'n2 = "127.0.0.1:7002"\n'
    )
    r = run(["serve", "--config", str(cfg), "--id", "n1", "--peer-addr", "127.0.0.1:7001",
             "--client-addr", "127.0.0.1:8001", "--snapshot-entries", "7"])
    assert r.exit_code == 0, r.output
    (o,) = captured
    assert o.data_dir == tmp_path / "d" and o.token == "s3cret"
    assert o.election_timeout == 0.5 and o.snapshot_entries == 7  # the flag wins
    assert o.initial_cluster == {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002"}


def test_a_bad_config_file(tmp_path: Path, captured: list[ServeOptions]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("no-such-setting = 1\n")
    r = run(["serve", "--config", str(cfg), *BASE[1:], "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown setting 'no-such-setting'" in r.output
    cfg.write_text("this is = not toml [")
    r = run(["serve", "--config", str(cfg), *BASE[1:], "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "not valid TOML" in r.output


def test_tls_flags_build_contexts(tmp_path: Path, captured: list[ServeOptions]) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, cafile = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(cafile))
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--initial-cluster", "n1=127.0.0.1:7001",
             "--peer-cert", str(chain), "--peer-key", str(key), "--peer-ca", str(cafile),
             "--client-cert", str(chain), "--client-key", str(key)])
    assert r.exit_code == 0, r.output
    (o,) = captured
    assert o.peer_ssl_server is not None and o.peer_ssl_client is not None
    assert o.client_ssl is not None
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--client-cert", str(key),
             "--client-key", str(key)])
    assert r.exit_code != 0 and "TLS (client)" in r.output


def test_timing_flags_become_ticks() -> None:
    o = ServeOptions("n1", Path("/x"), "a:1", "a:2", election_timeout=1.0, heartbeat_interval=0.1)
    c = node_config(o)
    assert c.tick_interval == 0.05 and c.heartbeat_ticks == 2 and c.election_ticks == 20
    o = ServeOptions("n1", Path("/x"), "a:1", "a:2", election_timeout=0.3, heartbeat_interval=0.05)
    c = node_config(o)
    assert abs(c.tick_interval * c.election_ticks - 0.3) < 1e-9


def test_settle_delay_flag_reaches_the_node_config(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    """--settle-delay (ms, as etcd's --backend-batch-interval) is the
    runtime's NodeConfig.settle_delay; out of range is a usage error."""
    args = [*BASE, "--data-dir", str(tmp_path / "d")]
    r = run(args)
    assert r.exit_code == 0, r.output
    assert node_config(captured.pop()).settle_delay == 0.1  # as NodeConfig's default
    r = run([*args, "--settle-delay", "0"])
    assert r.exit_code == 0, r.output
    assert node_config(captured.pop()).settle_delay == 0
    r = run([*args, "--settle-delay", "250"])
    assert r.exit_code == 0, r.output
    assert node_config(captured.pop()).settle_delay == 0.25
    for bad in ("-1", "60001", "0.5s"):
        r = run([*args, "--settle-delay", bad])
        assert r.exit_code == 2 and "--settle-delay" in r.output, r.output


def test_parse_cluster() -> None:
    assert parse_cluster(" n1=127.0.0.1:1, n2=[::1]:2 ,") == {"n1": "127.0.0.1:1", "n2": "[::1]:2"}
    with pytest.raises(ValueError, match="names no node"):
        parse_cluster(",")


def test_parse_cluster_refuses_what_an_etcd_operator_types() -> None:
    """etcd's --initial-cluster takes URLs: the error says HOST:PORT (it
    said "IPv6 addresses need brackets").  Two members at one address (a
    copy-paste) would make one of them unreachable forever: refused."""
    with pytest.raises(ValueError, match="HOST:PORT, not a URL"):
        parse_cluster("n1=http://10.0.0.1:2380")
    with pytest.raises(ValueError, match="n1 and n2 have the same address"):
        parse_cluster("n1=10.0.0.1:7000,n2=10.0.0.1:7000,n3=10.0.0.3:7000")


def test_the_members_table_shows_committed_text_as_text() -> None:
    """Member fields are committed data: a "[/]" in one is text, not rich
    markup (which raised MarkupError and took `members list` down)."""
    import io

    from rich.console import Console

    from liferaft.cli.client_cmds import _members
    from liferaft.cli.output import table

    ms = [{"id": "n[b]4", "voter": False, "peer_addr": "[/]:7000", "client_addr": "[/x]"}]
    out = _members(ms)
    text = io.StringIO()
    Console(file=text, width=200).print(table(out.columns, out.rows, out.title))
    assert "[/]:7000" in text.getvalue() and "n[b]4" in text.getvalue()
    assert "[/x]" in text.getvalue()


async def test_serve_join_tries_every_listed_member() -> None:
    """`serve --join` asks for the member list and must try every member's
    peer address: a member whose committed address is junk (listed first)
    must not block every later join."""
    import socket

    from aiohttp import web

    from liferaft.kv import serve as kv_serve

    async def members(request: web.Request) -> web.Response:
        return web.json_response({"members": [
            {"id": "a0", "peer_addr": "127.0.0.1", "client_addr": "", "voter": False},
            {"id": "n1", "peer_addr": "127.0.0.1:7001", "client_addr": "", "voter": True},
        ]})

    app = web.Application()
    app.router.add_get("/v1/members", members)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    tried: list[str] = []

    class FakeNode:
        async def join(self, contact: str, addr: str, voter: bool, timeout: float) -> None:
            tried.append(contact)
            if contact == "127.0.0.1":
                raise ValueError(f"not a host:port address: {contact!r}")

    o = ServeOptions(id="n9", data_dir=Path("unused"), peer_addr="127.0.0.1:7009",
                     client_addr="127.0.0.1:8009", join=[f"http://127.0.0.1:{port}"])
    try:
        await asyncio.wait_for(kv_serve._join(FakeNode(), o), 10)  # type: ignore[arg-type]
    finally:
        await runner.cleanup()
    assert tried[-1] == "127.0.0.1:7001", tried


def test_client_port_limit_flags(tmp_path: Path, captured: list[ServeOptions]) -> None:
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--initial-cluster", "n1=127.0.0.1:7001",
             "--client-header-timeout", "2.5", "--client-body-timeout", "7",
             "--max-client-connections", "50", "--max-list-bytes", "65536"])
    assert r.exit_code == 0, r.output
    (o,) = captured
    assert o.client_limits == ClientLimits(2.5, 7.0, 50) and o.max_list_bytes == 65536
    r = run([*BASE, "--data-dir", str(tmp_path / "d"), "--max-client-connections", "0"])
    assert r.exit_code == 2 and "--max-client-connections" in r.output


def test_watch_progress_interval_flag(tmp_path: Path, captured: list[ServeOptions]) -> None:
    args = [*BASE, "--data-dir", str(tmp_path / "d"), "--initial-cluster", "n1=127.0.0.1:7001"]
    r = run([*args, "--watch-progress-interval", "1.5"])
    assert r.exit_code == 0, r.output
    assert captured.pop().watch_progress_interval == 1.5
    r = run(args)
    assert r.exit_code == 0, r.output
    assert captured.pop().watch_progress_interval == 10.0  # the default, as before
    for bad in ("0", "0.01", "-1", "soon"):
        r = run([*args, "--watch-progress-interval", bad])
        assert r.exit_code == 2 and "--watch-progress-interval" in r.output, (bad, r.output)
        assert "Traceback" not in r.output and not captured


@pytest.mark.parametrize(
    "flag",
    [
        "--watch-progress-interval",
        "--client-body-timeout",
        "--client-header-timeout",
        "--request-timeout",
    ],
)
def test_seconds_flags_refuse_nan_and_infinity(
    tmp_path: Path, captured: list[ServeOptions], flag: str
) -> None:
    """float() takes "nan" and a range check lets it through; under uvloop
    the first timer set with it raised (the watch hub's progress task died
    silently), on asyncio's loop it fired at once."""
    args = [*BASE, "--data-dir", str(tmp_path / "d"), "--initial-cluster", "n1=127.0.0.1:7001"]
    for bad in ("nan", "NaN", "inf", "-inf", "1e999"):
        r = run([*args, flag, bad])
        assert r.exit_code == 2 and flag in r.output, (bad, r.output)
        assert "Traceback" not in r.output and not captured
