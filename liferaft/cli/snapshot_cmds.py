"""``liferaft snapshot``: ``take`` (a Raft snapshot on a node, now; the bare
``liferaft snapshot`` does the same), ``save FILE`` (a backup: a consistent
copy of a node's store) and ``restore FILE`` (a new cluster's data dir from
a backup, as ``etcdutl snapshot restore``).  docs/operations.md, "Backups"."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import click

from .client_cmds import _options, _tls_context
from .client_cmds import snapshot as _take
from .output import Output, emit, write_out_options


@click.group("snapshot", invoke_without_command=True)
@click.option("--endpoint", default=None, help="The node to snapshot (default: the first).")
@_options
@click.pass_context
def snapshot(ctx: click.Context, /, **kw: Any) -> None:
    """Snapshots and backups; alone, the same as ``snapshot take``."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(_take, **ctx.params)  # the raw options, as take parses them


snapshot.add_command(_take, "take")
_take.help = "Take a Raft snapshot now on one node (compacts its log); prints its index."


def _base_url(endpoint: str) -> str:
    e = endpoint.strip().rstrip("/")
    return e if e.startswith(("http://", "https://")) else f"http://{e}"


async def _download(url: str, dest: Path, token: str | None, tls: ssl.SSLContext | None) -> int:
    """``url`` into ``dest``.part, fsynced, then renamed over ``dest``; bytes."""
    import aiohttp

    part = dest.with_name(dest.name + ".part")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    n = 0
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers=headers, ssl=tls if tls else True) as r,
        ):
            if r.status != 200:
                text = (await r.text())[:200]
                raise click.ClickException(f"{url}: HTTP {r.status}: {text}")
            with open(part, "wb") as f:
                async for chunk in r.content.iter_chunked(1 << 20):
                    f.write(chunk)
                    n += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        os.replace(part, dest)
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except aiohttp.ClientError as exc:
        part.unlink(missing_ok=True)
        raise click.ClickException(f"{url}: {exc} (nothing saved)") from exc
    except OSError as exc:  # a missing or read-only directory, a full disk
        part.unlink(missing_ok=True)
        why = exc.strerror or exc
        raise click.ClickException(f"cannot write {dest}: {why} (nothing saved)") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return n


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--endpoint", default=None, help="The node to copy (default: the first).")
@click.option(
    "--endpoints",
    default="127.0.0.1:8001",
    show_default=True,
    envvar="LIFERAFT_ENDPOINTS",
    help="Client addresses of members (the first is copied unless --endpoint).",
)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), help="Bearer token.")
@click.option("--cacert", "tls_ca", type=click.Path(dir_okay=False), help="CA bundle (https).")
@click.option("--cert", "tls_cert", type=click.Path(dir_okay=False), help="Client certificate.")
@click.option("--key", "tls_key", type=click.Path(dir_okay=False), help="Its private key.")
@write_out_options()
def save(
    fmt: str,
    file: Path,
    endpoint: str | None,
    endpoints: str,
    token_file: Path | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Save a consistent copy of a node's store to FILE (written as
    FILE.part, synced, then renamed): what `snapshot restore` builds a new
    cluster from.  etcdctl's `snapshot save` makes the same file."""
    from liferaft.kv.serve import ServeError, load_token

    try:
        token = load_token(token_file) if token_file else None
    except ServeError as exc:
        raise click.ClickException(str(exc)) from exc
    target = endpoint or endpoints.split(",")[0]
    url = _base_url(target) + "/v1/snapshot"
    n = asyncio.run(_download(url, file, token, _tls_context(tls_ca, tls_cert, tls_key)))
    line = f"Snapshot saved at {file} ({n} bytes)"
    emit(Output({"file": str(file), "bytes": n}, [[str(file), str(n)]], line=line), fmt)


@snapshot.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new member's data dir (must not exist, or be empty).",
)
@click.option("--id", "node_id", required=True, help="The member this data dir is for.")
@click.option(
    "--initial-cluster",
    required=True,
    help="n1=HOST:PORT,... : every member of the new cluster (peer addresses).",
)
@click.option(
    "--cluster-id",
    default="liferaft",
    show_default=True,
    help="The new cluster's name; start every member with the same --cluster-id.",
)
@write_out_options()
def restore(
    fmt: str, file: Path, data_dir: Path, node_id: str, initial_cluster: str, cluster_id: str
) -> None:
    """Build a data dir of a NEW cluster from the backup FILE (`snapshot
    save`, or etcdctl's): the keys, their history and leases as saved, and
    fresh Raft state whose members are --initial-cluster.  Restore every
    member from the same FILE, then start each with `liferaft serve` (no
    --initial-cluster needed: the data dir holds it)."""
    from liferaft.kv.rebuild import RebuildError
    from liferaft.kv.rebuild import restore as do_restore
    from liferaft.kv.serve import parse_cluster

    try:
        cluster = parse_cluster(initial_cluster)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--initial-cluster") from exc
    try:
        index = do_restore(file, data_dir, node_id, cluster, cluster_id)
    except RebuildError as exc:
        raise click.ClickException(str(exc)) from exc
    line = (
        f"restored {file} into {data_dir} for {node_id} of {', '.join(cluster)} "
        f"(store at index {index})"
    )
    doc = {"data_dir": str(data_dir), "id": node_id, "index": index}
    emit(Output(doc, [[str(data_dir), node_id, str(index)]], line=line), fmt)
