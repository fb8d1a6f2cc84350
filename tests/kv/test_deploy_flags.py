"""`liferaft serve` configured the way deployments configure it (docs/deploy.md,
docs/operations.md): listen and advertise addresses, a --config file with
every long flag name, LIFERAFT_* environment variables, and their
precedence (flags, then environment, then the config file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.cli import serve as serve_mod
from liferaft.cli.serve import config_keys, serve_cmd
from liferaft.kv.advertise import check_advertise, same_address
from liferaft.kv.serve import ServeError, ServeOptions, serve

BASE = ["serve", "--id", "n1", "--initial-cluster", "n1=127.0.0.1:7001"]


def run(args: list[str], env: dict[str, str] | None = None) -> Any:
    # auto_envvar_prefix as the console entry point (liferaft.cli.run) sets it.
    return CliRunner().invoke(
        main, args, env=env, catch_exceptions=False, auto_envvar_prefix="LIFERAFT"
    )


# -- listen and advertise -------------------------------------------------------------


def test_the_alias_sets_both_and_the_specific_flags_override_their_half(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    d = ["--data-dir", str(tmp_path)]
    r = run([*BASE, *d, "--peer-addr", "127.0.0.1:7001", "--client-addr", "127.0.0.1:8001"])
    assert r.exit_code == 0, r.output
    o = captured.pop()
    assert (o.peer_listen, o.peer_addr) == ("127.0.0.1:7001", "127.0.0.1:7001")
    assert (o.client_listen, o.client_addr) == ("127.0.0.1:8001", "127.0.0.1:8001")
    r = run([*BASE, *d, "--peer-addr", "127.0.0.1:7001", "--insecure-peers",
             "--listen-client-addr", "0.0.0.0:8001",
             "--advertise-client-addr", "n1.liferaft.svc:8001"])  # fmt: skip
    assert r.exit_code == 0, r.output
    o = captured.pop()
    assert (o.client_listen, o.client_addr) == ("0.0.0.0:8001", "n1.liferaft.svc:8001")


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--client-addr", "0.0.0.0:8001"], ["--advertise-client-addr 0.0.0.0:8001", "wildcard"]),
        (["--client-addr", "127.0.0.1:8001", "--advertise-peer-addr", "[::]:7001"],
         ["--advertise-peer-addr [::]:7001", "wildcard"]),
        (["--client-addr", "127.0.0.1:8001", "--advertise-peer-addr", "bad..name:7001"],
         ["--advertise-peer-addr", "bad host"]),
        (["--listen-client-addr", "127.0.0.1:8001"], ["give --listen-peer-addr (or --peer-addr)"]),
    ],
)  # fmt: skip
def test_an_unusable_advertise_address_is_a_usage_error(
    tmp_path: Path, captured: list[ServeOptions], flags: list[str], words: list[str]
) -> None:
    peer = [] if "--listen-client-addr" in flags else ["--listen-peer-addr", "127.0.0.1:7001"]
    r = run([*BASE, "--data-dir", str(tmp_path), *peer, *flags])
    assert r.exit_code == 2 and not captured, r.output
    for w in words:
        assert w in r.output, r.output


def test_a_wildcard_initial_cluster_entry_is_refused(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    r = run(
        [
            "serve",
            "--id",
            "n1",
            "--data-dir",
            str(tmp_path),
            "--peer-addr",
            "127.0.0.1:7001",
            "--client-addr",
            "127.0.0.1:8001",
            "--initial-cluster",
            "n1=0.0.0.0:7001",
        ]
    )
    assert r.exit_code == 2 and "wildcard" in r.output and not captured, r.output


def test_addresses_are_compared_as_addresses() -> None:
    assert same_address("LOCALHOST.:7001", "localhost:7001")[0]
    assert same_address("[0:0::1]:7001", "[::1]:7001")[0]
    ok, why = same_address("localhost:7001", "127.0.0.1:7001")  # resolved
    assert ok and "resolve to 127.0.0.1" in why
    ok, why = same_address("127.0.0.1:7001", "127.0.0.1:7002")
    assert not ok and "ports 7001 and 7002 differ" in why
    ok, why = same_address("127.0.0.1:7001", "127.0.0.2:7001")
    assert not ok and "share no address" in why
    with pytest.raises(ValueError, match="wildcard"):
        check_advertise("0.0.0.0:1", "--advertise-client-addr")


async def test_serve_refuses_an_initial_cluster_entry_that_is_not_the_advertised_address(
    tmp_path: Path,
) -> None:
    o = ServeOptions("n1", tmp_path, "127.0.0.2:7001", "127.0.0.1:8001",
                     listen_peer_addr="0.0.0.0:7001",
                     initial_cluster={"n1": "127.0.0.1:7001"})  # fmt: skip
    with pytest.raises(ServeError) as exc:
        await serve(o)
    msg = str(exc.value)
    assert "127.0.0.1:7001" in msg and "127.0.0.2:7001" in msg and "share no address" in msg
    assert "0.0.0.0" not in msg  # the listen address is not what is compared


# -- the config file, every flag ----------------------------------------------------------


def _sample(p: click.Option, tmp: Path) -> tuple[Any, Any]:
    """A non-default TOML value for ``p`` and the value the command must get."""
    t = p.type
    if p.is_flag:
        return (not p.default), (not p.default)
    if isinstance(t, click.Path):
        path = tmp / f"{p.name}.file"
        return str(path), Path(path) if t.type is Path else str(path)
    if isinstance(t, click.IntRange):
        return (t.min or 0) + 7, (t.min or 0) + 7
    if isinstance(t, click.FloatRange):
        return (t.min or 0) + 1.5, (t.min or 0) + 1.5
    if isinstance(t, click.Choice):
        return t.choices[-1], t.choices[-1]
    if p.callback is serve_mod._addr:
        return f"127.0.0.1:{7000 + len(p.name or '')}", f"127.0.0.1:{7000 + len(p.name or '')}"
    return f"value-of-{p.name}", f"value-of-{p.name}"


def test_a_config_file_may_set_every_flag_by_its_long_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: dict[str, Any] = {}
    monkeypatch.setattr(serve_cmd, "callback", lambda **kw: got.update(kw))
    expected: dict[str, Any] = {}
    lines = []
    options = [p for p in serve_cmd.params if isinstance(p, click.Option) and p.name != "config"]
    for i, p in enumerate(options):
        long = next(o for o in p.opts if o.startswith("--"))[2:]
        key = long if i % 2 else long.replace("-", "_")  # both spellings
        value, want = _sample(p, tmp_path)
        lines.append(f"{key} = {_toml(value)}")
        expected[str(p.name)] = want
    cfg = tmp_path / "every.toml"
    cfg.write_text("\n".join(lines) + "\n")
    r = run(["serve", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert got == expected
    assert "id" in config_keys(serve_cmd) and "node_id" not in config_keys(serve_cmd)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, (int, float)) else f'"{v}"'


def test_config_keys_are_the_flag_names_not_the_internal_ones(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    cfg = tmp_path / "n1.toml"
    base = 'peer-addr = "127.0.0.1:7001"\nclient-addr = "127.0.0.1:8001"\n'
    cfg.write_text(base + f'id = "n1"\ndata-dir = "{tmp_path}"\nno-lease-reads = false\n'
                   'join = ["http://127.0.0.1:8002", "http://127.0.0.1:8003"]\n')  # fmt: skip
    r = run(["serve", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    o = captured.pop()
    assert o.id == "n1" and o.lease_reads is True  # no-lease-reads = false
    assert o.join == ["http://127.0.0.1:8002", "http://127.0.0.1:8003"]
    cfg.write_text(base + 'node_id = "n1"\n')
    r = run(["serve", "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown setting 'node_id'" in r.output, r.output
    cfg.write_text(base + 'data-dirs = "/x"\n')
    r = run(["serve", "--config", str(cfg)])
    assert "did you mean 'data-dir'?" in r.output, r.output
    cfg.write_text(base + "lease-reads = true\nno-lease-reads = true\n")
    r = run(["serve", "--config", str(cfg)])
    assert r.exit_code == 2 and "a second time" in r.output, r.output


# -- precedence: flags, then environment, then the config file ---------------------------


def test_flags_beat_the_environment_which_beats_the_config_file(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    cfg = tmp_path / "n1.toml"
    cfg.write_text(
        'id = "n1"\npeer-addr = "127.0.0.1:7001"\nclient-addr = "127.0.0.1:8001"\n'
        f'data-dir = "{tmp_path / "from-config"}"\n'
        "snapshot-entries = 1\nelection-timeout = 500\nmax-value = 10\n"
        '[initial-cluster]\nn1 = "127.0.0.1:7001"\n'
    )
    env = {
        "LIFERAFT_SERVE_CONFIG": str(cfg),  # --config itself from the environment
        "LIFERAFT_SERVE_SNAPSHOT_ENTRIES": "2",
        "LIFERAFT_SERVE_ELECTION_TIMEOUT": "600",
        "LIFERAFT_SERVE_DATA_DIR": str(tmp_path / "from-env"),
        # An alias from the environment fills the half no stronger source set.
        "LIFERAFT_SERVE_CLIENT_ADDR": "127.0.0.1:9001",
    }
    r = run(["serve", "--snapshot-entries", "3", "--advertise-client-addr", "n1.test:9001"],
            env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    o = captured.pop()
    assert o.snapshot_entries == 3  # flag > env > config
    assert o.election_timeout == 0.6  # env > config
    assert o.max_value == 10  # config > default
    assert o.data_dir == tmp_path / "from-env"
    assert (o.client_listen, o.client_addr) == ("127.0.0.1:9001", "n1.test:9001")
    assert o.peer_addr == "127.0.0.1:7001"  # from the config only


def test_the_console_entry_point_reads_liferaft_environment_variables(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "LIFERAFT_SERVE_ID": "n1",
        "LIFERAFT_SERVE_DATA_DIR": str(tmp_path),
        "LIFERAFT_SERVE_PEER_ADDR": "127.0.0.1:7001",
        "LIFERAFT_SERVE_CLIENT_ADDR": "0.0.0.0:8001",
    }
    p = subprocess.run([sys.executable, "-m", "liferaft.cli", "serve"], capture_output=True,
                       text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "--advertise-client-addr 0.0.0.0:8001" in p.stderr and "wildcard" in p.stderr


@pytest.mark.parametrize(
    "setting,says",
    [
        ("lease-reads = 1", "lease-reads takes true or false"),
        ('insecure-peers = "yes"', "insecure-peers takes true or false"),
        ("election-timeout = true", "election-timeout takes an integer"),
        ("snapshot-entries = 1500.7", "snapshot-entries takes an integer"),
        ("request-timeout = 1979-05-27", "request-timeout takes a number"),
        ("cluster-id = 07:32:00", "cluster-id takes a string"),
        ("max-value = [1, 2]", "max-value takes an integer"),
        ('initial-cluster = { n1 = { host = "a" } }', "initial-cluster takes"),
        ("join = [1, 2]", "join takes"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_a_one_line_error(
    tmp_path: Path, captured: list[ServeOptions], setting: str, says: str
) -> None:
    """A TOML value of the wrong type is named in one line, never a traceback
    and never quietly converted (true as 1 entry, 1500.7 cut to 1500)."""
    cfg = tmp_path / "n1.toml"
    cfg.write_text(f'peer-addr = "127.0.0.1:7001"\nclient-addr = "127.0.0.1:8001"\n{setting}\n')
    r = CliRunner().invoke(main, [*BASE, "--data-dir", str(tmp_path), "--config", str(cfg)])
    assert r.exit_code == 2, (r.output, r.exception)
    assert says in r.output and str(cfg) in r.output, r.output
    assert not captured


def test_a_config_file_that_is_not_utf8_text_is_a_one_line_error(
    tmp_path: Path, captured: list[ServeOptions]
) -> None:
    cfg = tmp_path / "n1.toml"
    cfg.write_bytes(b'id = "n1"\n\xff\xfe\x00')
    r = CliRunner().invoke(main, [*BASE, "--data-dir", str(tmp_path), "--config", str(cfg)])
    assert r.exit_code == 2, (r.output, r.exception)
    assert f"{cfg} is not valid TOML" in r.output, r.output
    assert not captured
