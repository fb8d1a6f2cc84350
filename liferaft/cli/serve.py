"""``liferaft serve``: one liferaft-kv node (its flags are a contract: docs/kv.md)."""

from __future__ import annotations

import asyncio
import difflib
import os
import ssl
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from liferaft.cli.seconds import Seconds
from liferaft.kv.advertise import check_advertise
from liferaft.kv.compactor import DEFAULT_MODE, DEFAULT_RETENTION, MODES, parse_policy
from liferaft.kv.listener import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ClientLimits,
)
from liferaft.kv.serve import (
    FrontEndFactory,
    ServeError,
    ServeOptions,
    load_token,
    parse_cluster,
    serve,
    setup_logging,
)
from liferaft.kv.server import DEFAULT_MAX_LIST_BYTES
from liferaft.kv.service import DEFAULT_PROGRESS_INTERVAL
from liferaft.transport.base import parse_address
from liferaft.transport.secret import SecretError, is_loopback, read_secret_file


def config_keys(command: click.Command) -> dict[str, tuple[str, bool]]:
    """Every key a --config file may hold: each long flag name without its
    dashes (``id``, ``data-dir``, ``no-lease-reads``), mapped to the
    parameter it sets and whether the value goes in as given (False: the
    ``--no-`` side of an on/off flag, so the value is negated)."""
    keys: dict[str, tuple[str, bool]] = {}
    for p in command.params:
        if not isinstance(p, click.Option) or not p.name or p.name == "config":
            continue
        for opts, straight in ((p.opts, True), (p.secondary_opts, False)):
            for opt in opts:
                if opt.startswith("--"):
                    keys[opt[2:]] = (p.name, straight)
    return keys


# Settings whose value is a comma-separated list on the command line, which
# the config file may give as a TOML table (initial-cluster: n1 = "host:port")
# or array (join).
_LIST_SETTINGS = {"initial_cluster", "join"}


def _config_value(path: str, key: str, value: Any, straight: bool, p: click.Option) -> Any:
    """The value a TOML ``value`` gives the option ``p``, checked against the
    option's type: click would quietly turn ``true`` into 1, cut 1500.7 to
    1500, or crash on a TOML date."""

    def wrong(takes: str) -> click.BadParameter:
        return click.BadParameter(f"{path}: {key} takes {takes}, not {value!r}")

    if p.is_flag:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value if straight else not value
    if p.name in _LIST_SETTINGS and isinstance(value, dict):
        if not all(isinstance(v, str) for v in value.values()):
            raise wrong('a table of id = "HOST:PORT"')
        return ",".join(f"{a}={b}" for a, b in value.items())
    if p.name in _LIST_SETTINGS and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return ",".join(value)
    if isinstance(p.type, click.types.IntParamType):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
    elif isinstance(p.type, click.types.FloatParamType):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
    elif not isinstance(value, str):
        raise wrong("a string")
    return value


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config FILE (TOML): its keys are exactly the long flag names
    (dashes or underscores).  Its values go under click's default map, so a
    flag, then an environment variable (LIFERAFT_SERVE_...), wins over them."""
    if not value:
        return value
    try:
        with open(value, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{value} is not valid TOML: {exc}") from exc
    keys = config_keys(ctx.command)
    options = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    defaults: dict[str, Any] = {}
    for k, v in data.items():
        known = keys.get(k.replace("_", "-"))
        if known is None:
            close = difflib.get_close_matches(k.replace("_", "-"), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(f"{value}: unknown setting {k!r}{hint}")
        name, straight = known
        if name in defaults:
            raise click.BadParameter(f"{value}: {k!r} sets {name} a second time")
        defaults[name] = _config_value(value, k, v, straight, options[name])
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _addr(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return value
    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def address_options(
    port: str, binds: str, advertised: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The three address flags of the ``port`` port: --listen-PORT-addr,
    --advertise-PORT-addr and their shorthand --PORT-addr (docs/deploy.md,
    "Listen and advertise addresses"; resolved by :func:`_listen_advertise`)."""
    flags = [
        (f"--listen-{port}-addr", f"HOST:PORT {binds} (0.0.0.0 for all)."),
        (
            f"--advertise-{port}-addr",
            f"HOST:PORT (IP or DNS name) {advertised}; default: the listen address.",
        ),
        (f"--{port}-addr", f"Sets both --listen- and --advertise-{port}-addr."),
    ]

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        for flag, text in reversed(flags):  # click lists the last decorator first
            f = click.option(flag, callback=_addr, help=text)(f)
        return f

    return add


# Where a value came from, strongest first: flags, then the environment,
# then the --config file (click's own order for one parameter).
_RANK = {
    click.core.ParameterSource.COMMANDLINE: 0,
    click.core.ParameterSource.ENVIRONMENT: 1,
    click.core.ParameterSource.DEFAULT_MAP: 2,
}


def _listen_advertise(port: str, optional: bool = False) -> tuple[str, str]:
    """The listen and advertise addresses of the ``port`` ("peer" or
    "client") port.  ``--peer-addr`` (``--client-addr``) is shorthand for
    both; ``--listen-*`` and ``--advertise-*`` override their half when they
    come from an equal or stronger source (flag > environment > config).
    The advertised address defaults to the listen address and is never a
    wildcard (docs/deploy.md, "Listen and advertise addresses")."""
    ctx = click.get_current_context()

    def pick(specific: str) -> str | None:
        got = []
        for name in (specific, f"{port}_addr"):
            value = ctx.params.get(name)
            if value is not None:
                rank = _RANK.get(ctx.get_parameter_source(name), 3)  # type: ignore[arg-type]
                got.append((rank, name != specific, value))
        return min(got)[2] if got else None

    listen = pick(f"listen_{port}_addr")
    if listen is None and optional:
        if pick(f"advertise_{port}_addr") is not None:
            raise click.UsageError(f"--advertise-{port}-addr needs --listen-{port}-addr")
        return "", ""
    if listen is None:
        raise click.UsageError(f"give --listen-{port}-addr (or --{port}-addr)")
    advertise = pick(f"advertise_{port}_addr") or listen
    try:
        check_advertise(advertise, f"--advertise-{port}-addr")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return listen, advertise


def _server_ctx(
    cert: str | None, key: str | None, ca: str | None, what: str
) -> ssl.SSLContext | None:
    if not cert and not key:
        if ca:
            raise click.UsageError(f"--{what}-ca needs --{what}-cert and --{what}-key")
        return None
    if not (cert and key):
        raise click.UsageError(f"--{what}-cert and --{what}-key go together")
    try:
        c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        c.load_cert_chain(cert, key)
        if ca:
            c.load_verify_locations(ca)
            c.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"TLS ({what}): {exc}") from exc
    return c


def _peer_client_ctx(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    try:
        c = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        c.check_hostname = False  # peers are named by node id, checked in the handshake
        assert key is not None
        c.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"TLS (peer): {exc}") from exc
    return c


@click.command()
@click.option(
    "--config",
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    type=click.Path(dir_okay=False),
    help="TOML file of settings (keys: the long flag names); flags and LIFERAFT_SERVE_* "
    "environment variables override it.",
)
# The parameter is named as the flag (not node_id): click names its
# environment variable after the parameter, LIFERAFT_SERVE_ID.
@click.option("--id", "id", required=True, help="This node's id, e.g. n1.")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where this node keeps its log, hard state and snapshots.",
)
@address_options("peer", "the peer port binds", "other members dial")
@address_options("client", "the HTTP API binds", "clients are pointed to")
@address_options("grpc", "etcd's gRPC API binds (none: not served)", "etcd clients are pointed to")
@click.option(
    "--initial-cluster",
    default="",
    help="n1=HOST:PORT,... (peer addresses) of a new cluster; "
    "ignored once the data dir holds data.",
)
@click.option(
    "--join", "join", default="", help="Client URL(s) of a running member, comma-separated."
)
@click.option(
    "--force-new-cluster",
    is_flag=True,
    help="Recover from a permanent loss of quorum: make this node the only member, "
    "keeping its data (once; remove the flag afterwards). docs/operations.md.",
)
@click.option(
    "--cluster-id",
    default="liferaft",
    show_default=True,
    help="The cluster's name; every member must give the same.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require this bearer token on the client API.",
)
@click.option(
    "--peer-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cluster secret (mode 0600), the same on every member: peers prove it "
    "in the handshake.",
)
@click.option(
    "--insecure-peers",
    is_flag=True,
    help="Allow a --peer-addr outside loopback with neither --peer-secret-file nor "
    "mutual TLS: anyone who reaches it can act as a member.",
)
@click.option("--peer-cert", type=click.Path(dir_okay=False), help="TLS certificate for peers.")
@click.option("--peer-key", type=click.Path(dir_okay=False), help="Its private key.")
@click.option("--peer-ca", type=click.Path(dir_okay=False), help="CA for peers (mutual TLS).")
@click.option("--client-cert", type=click.Path(dir_okay=False), help="TLS certificate (HTTPS).")
@click.option("--client-key", type=click.Path(dir_okay=False), help="Its private key.")
@click.option("--client-ca", type=click.Path(dir_okay=False), help="Require client certificates.")
@click.option(
    "--election-timeout",
    default=1000,
    show_default=True,
    type=click.IntRange(min=10),
    help="Milliseconds (randomized up to twice).",
)
@click.option(
    "--heartbeat-interval",
    default=100,
    show_default=True,
    type=click.IntRange(min=2),
    help="Milliseconds.",
)
@click.option(
    "--snapshot-entries",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Take a snapshot every this many entries.",
)
@click.option(
    "--settle-delay",
    default=100,
    show_default=True,
    type=click.IntRange(min=0, max=60_000),
    help="Milliseconds an applied batch may wait in the store's open transaction, so "
    "that one commit and fsync serve many writes (etcd's --backend-batch-interval); "
    "0 commits as soon as the event loop is free. The log holds every unsettled entry.",
)
@click.option(
    "--lease-reads/--no-lease-reads",
    default=False,  # as NodeConfig.lease_reads: one decision, docs/runtime.md "Lease reads"
    show_default=True,
    help="Serve consistency=lease reads from the leader's lease (assumes bounded clock "
    "drift); otherwise they are confirmed like linearizable ones.",
)
@click.option(
    "--max-value",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest value in bytes (else 413).",
)
@click.option(
    "--request-timeout",
    default=5.0,
    show_default=True,
    type=Seconds(min=0.01),
    help="Seconds before a request answers 504.",
)
@click.option(
    "--client-header-timeout",
    default=DEFAULT_HEADER_TIMEOUT,
    show_default=True,
    type=Seconds(min=0.01),
    help="Seconds a client connection may take to send a request head (after connecting "
    "or after its previous response), TLS handshake included.",
)
@click.option(
    "--client-body-timeout",
    default=DEFAULT_BODY_TIMEOUT,
    show_default=True,
    type=Seconds(min=0.01),
    help="Seconds to receive a request body (else 408).",
)
@click.option(
    "--max-client-connections",
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Open client connections at most, on the client port and on the gRPC port "
    "each (lowered to fit the open-file limit); more are closed at once.",
)
@click.option(
    "--max-list-bytes",
    default=DEFAULT_MAX_LIST_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Bytes of keys and values in one page of GET /v1/kv?prefix= (then 'next').",
)
@click.option(
    "--watch-progress-interval",
    default=DEFAULT_PROGRESS_INTERVAL,
    show_default=True,
    # Its check runs four times an interval: below 0.1 s that is busy work.
    type=Seconds(min=0.1, max=86400),
    help="Seconds a watch may go without a line before it gets a progress line (the "
    "revision it is complete up to); as etcd's --experimental-watch-progress-notify-interval.",
)
@click.option(
    "--auto-compaction-mode",
    default=DEFAULT_MODE,
    show_default=True,
    type=click.Choice(MODES),
    help="periodic: keep --auto-compaction-retention of history by age; revision: keep "
    "that many revisions. docs/kv.md, Compaction.",
)
@click.option(
    "--auto-compaction-retention",
    default=DEFAULT_RETENTION,
    show_default=True,
    help="periodic: a duration (1h, 30m, 90s; a bare number is hours); revision: a count "
    "of revisions; 0 or off keeps all history.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="The least severe log records written.",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="text: logfmt (key=value); json: one object per line. docs/operations.md, Logs.",
)
@click.option(
    "--access-log", is_flag=True, help="Log one line per client API request (never the token)."
)
@click.option(
    "--console/--no-console",
    default=True,
    show_default=True,
    help="Serve the web console: the page at /ui/ (open) and its live data at "
    "/v1/console/stream (behind the token, as all of /v1). docs/console.md.",
)
def serve_cmd(
    id: str,
    data_dir: Path,
    listen_peer_addr: str | None,
    advertise_peer_addr: str | None,
    peer_addr: str | None,
    listen_client_addr: str | None,
    advertise_client_addr: str | None,
    client_addr: str | None,
    listen_grpc_addr: str | None,
    advertise_grpc_addr: str | None,
    grpc_addr: str | None,
    initial_cluster: str,
    join: str,
    force_new_cluster: bool,
    cluster_id: str,
    token_file: Path | None,
    peer_secret_file: Path | None,
    insecure_peers: bool,
    peer_cert: str | None,
    peer_key: str | None,
    peer_ca: str | None,
    client_cert: str | None,
    client_key: str | None,
    client_ca: str | None,
    election_timeout: int,
    heartbeat_interval: int,
    snapshot_entries: int,
    settle_delay: int,
    lease_reads: bool,
    max_value: int,
    request_timeout: float,
    client_header_timeout: float,
    client_body_timeout: float,
    max_client_connections: int,
    max_list_bytes: int,
    watch_progress_interval: float,
    auto_compaction_mode: str,
    auto_compaction_retention: str,
    log_level: str,
    log_format: str,
    access_log: bool,
    console: bool,
) -> None:
    """Run one liferaft-kv node until SIGTERM or Ctrl-C.

    Every flag can also come from the environment (LIFERAFT_SERVE_ and the
    flag's name: LIFERAFT_SERVE_DATA_DIR) or from --config; flags win over
    the environment, which wins over the config file."""
    node_id = id
    try:
        cluster = parse_cluster(initial_cluster) if initial_cluster else {}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--initial-cluster") from exc
    if join and cluster:
        raise click.UsageError("--initial-cluster and --join exclude each other")
    if election_timeout <= heartbeat_interval:
        raise click.UsageError("--election-timeout must exceed --heartbeat-interval")
    try:
        compaction = parse_policy(auto_compaction_mode, auto_compaction_retention)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    listen_peer, advertise_peer = _listen_advertise("peer")
    listen_client, advertise_client = _listen_advertise("client")
    listen_grpc, advertise_grpc = _listen_advertise("grpc", optional=True)
    joins = [u.strip() for u in join.split(",") if u.strip()]
    for u in joins:
        if not u.startswith(("http://", "https://")):
            raise click.BadParameter(f"{u!r} is not an http(s) URL", param_hint="--join")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".liferaft-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.ClickException(f"data dir {data_dir}: {exc.strerror or exc}") from exc
    try:
        token = load_token(token_file) if token_file else None
        peer_secret = read_secret_file(peer_secret_file) if peer_secret_file else None
    except (ServeError, SecretError) as exc:
        raise click.ClickException(str(exc)) from exc
    mtls = bool(peer_cert and peer_ca)
    host, _ = parse_address(listen_peer)
    if not (peer_secret or mtls or insecure_peers or is_loopback(host)):
        raise click.ClickException(
            f"--listen-peer-addr {listen_peer} is reachable from other machines, and anyone who "
            "reaches it could act as a member: give --peer-secret-file (or mutual TLS: "
            "--peer-cert, --peer-key, --peer-ca), or --insecure-peers to accept the risk"
        )
    opts = ServeOptions(
        id=node_id,
        data_dir=data_dir,
        peer_addr=advertise_peer,
        client_addr=advertise_client,
        listen_peer_addr=listen_peer,
        listen_client_addr=listen_client,
        grpc_addr=advertise_grpc,
        listen_grpc_addr=listen_grpc,
        initial_cluster=cluster,
        join=joins,
        force_new_cluster=force_new_cluster,
        cluster_id=cluster_id,
        token=token,
        peer_secret=peer_secret,
        election_timeout=election_timeout / 1000,
        heartbeat_interval=heartbeat_interval / 1000,
        snapshot_entries=snapshot_entries,
        settle_delay=settle_delay / 1000,
        lease_reads=lease_reads,
        max_value=max_value,
        request_timeout=request_timeout,
        peer_ssl_server=_server_ctx(peer_cert, peer_key, peer_ca, "peer"),
        peer_ssl_client=_peer_client_ctx(peer_cert, peer_key, peer_ca),
        client_ssl=_server_ctx(client_cert, client_key, client_ca, "client"),
        client_tls_files=(client_cert, client_key, client_ca)
        if client_cert and client_key
        else None,
        client_limits=ClientLimits(
            client_header_timeout, client_body_timeout, max_client_connections
        ),
        max_list_bytes=max_list_bytes,
        watch_progress_interval=watch_progress_interval,
        access_log=access_log,
        compaction=compaction,
    )
    ctx = setup_logging(node_id, log_level.upper(), log_format)
    try:
        from liferaft.etcd.front import EtcdFrontEnd  # grpcio: loaded only to serve

        fronts: list[FrontEndFactory] = [EtcdFrontEnd]
        if console:
            from liferaft.console.front import ConsoleFrontEnd

            fronts.append(ConsoleFrontEnd)
        _run_loop(serve(opts, ctx, front_ends=fronts))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from exc


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (a faster event loop; an optional
    speed-up) unless LIFERAFT_NO_UVLOOP is set, else asyncio's own."""
    if not os.environ.get("LIFERAFT_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
