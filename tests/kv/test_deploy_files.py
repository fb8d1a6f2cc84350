"""The deployment files (deploy/: the Dockerfile, the systemd unit and its
config, the Kubernetes manifests) and the docs that show them name only
what exists: every `liferaft serve` flag and LIFERAFT_* variable is a real
one, probes name real routes of the KV server, and the manifests hang
together (selectors, the headless Service, the Secret).  Nothing here builds
the image or applies the manifests (docs/deploy.md says so).  The flag table
of docs/operations.md is checked against the command itself; print a fresh
one with ``python -c "from tests.kv.test_deploy_files import flag_table;
print(flag_table())"``."""

from __future__ import annotations

import ast
import configparser
import enum
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from liferaft.cli import main
from liferaft.cli.serve import config_keys, serve_cmd
from liferaft.kv.advertise import check_advertise

from .cli_tree import env_var, walk

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

ENV = re.compile(r"\bLIFERAFT_[A-Z0-9_]*[A-Z0-9]\b")


def options() -> list[click.Option]:
    return [p for p in serve_cmd.params if isinstance(p, click.Option)]


def env_name(p: click.Option) -> str:
    """The variable click's auto_envvar_prefix="LIFERAFT" reads for ``p``."""
    return f"LIFERAFT_SERVE_{str(p.name).upper()}"


FLAGS = {o for p in options() for o in (*p.opts, *p.secondary_opts)}
ENV_NAMES = {env_name(p) for p in options()}


def every_env_name() -> set[str]:
    """The variable of every option of every command (``LIFERAFT_KV_GET_TIMEOUT``)."""
    return {
        env_var(path, p) for path, cmd in walk() for p in cmd.params if isinstance(p, click.Option)
    }


def cli_env_table() -> str:
    """docs/operations.md's table of every other command's variables: one
    row per option, as click's auto_envvar_prefix names it."""
    rows = ["| command | flag | environment variable |", "|---|---|---|"]
    for path, cmd in walk():
        if path[:1] == ("serve",):
            continue  # its own table, with defaults and the config file
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_eager:  # not --help, --version
                flag = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
                where = " ".join(("liferaft", *path))
                rows.append(f"| `{where}` | {flag} | `{env_var(path, p)}` |")
    return "\n".join(rows)


def test_the_operations_table_lists_every_other_commands_variables() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    m = re.search(r"<!-- cli-env:begin -->\n(.*?)\n<!-- cli-env:end -->", text, re.S)
    assert m, "docs/operations.md has no cli-env table"
    assert m.group(1) == cli_env_table(), "regenerate the table:\n" + cli_env_table()


def test_a_variable_from_the_table_reaches_its_option(tmp_path: Path) -> None:
    """The naming rule of the table is what click reads: `cluster down`
    prints JSON when only LIFERAFT_CLUSTER_DOWN_WRITE_OUT asks for it."""
    from click.testing import CliRunner

    args = ["cluster", "down", "--dir", str(tmp_path)]
    plain = CliRunner().invoke(main, args, auto_envvar_prefix="LIFERAFT")
    env = {"LIFERAFT_CLUSTER_DOWN_WRITE_OUT": "json"}
    got = CliRunner().invoke(main, args, env=env, auto_envvar_prefix="LIFERAFT")
    assert plain.exit_code == 0 and got.exit_code == 0, (plain.output, got.output)
    assert not plain.output.lstrip().startswith("{"), plain.output
    assert json.loads(got.output)["stopped"] == [], got.output


def get_routes() -> set[str]:
    """Every GET route of the KV server, read from liferaft/kv/server.py."""
    tree = ast.parse((ROOT / "liferaft" / "kv" / "server.py").read_text())
    return {
        str(node.args[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def serve_flags(argv: list[str]) -> list[str]:
    """The --flags of a `liferaft serve ...` command line."""
    assert "serve" in argv, argv
    rest = argv[argv.index("serve") + 1 :]
    return [a.split("=")[0] for a in rest if a.startswith("--")]


# -- everything in deploy/ and the docs ---------------------------------------------------

DOCS = [ROOT / "docs" / "deploy.md", ROOT / "docs" / "operations.md"]
FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def command_lines(path: Path) -> list[str]:
    """The lines of ``path`` that may hold commands: all of a deploy file,
    the fenced code blocks of a doc."""
    lines = path.read_text().splitlines()
    if path.suffix != ".md":
        return lines
    out, inside = [], False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
        elif inside:
            out.append(line)
    return out


@pytest.mark.parametrize("path", FILES + DOCS, ids=lambda p: p.name)
def test_every_liferaft_flag_and_variable_named_is_a_real_one(path: Path) -> None:
    allowed = ENV_NAMES if path in FILES else every_env_name() | {"LIFERAFT_NO_UVLOOP"}
    unknown = sorted(set(ENV.findall(path.read_text())) - allowed)
    assert not unknown, f"{path.name} names variables no flag reads: {unknown}"
    for line in command_lines(path):
        if "liferaft serve" in line:
            tail = line.split("liferaft serve", 1)[1]
            flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", tail))
            assert flags <= FLAGS, (path.name, line, flags - FLAGS)


def test_the_docs_show_every_deploy_file() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for p in DEPLOY.rglob("*"):
        if p.is_file():
            assert str(p.relative_to(ROOT)) in doc, f"docs/deploy.md does not link {p}"
    assert "not run here" in doc


# -- the container image ------------------------------------------------------------------


def test_the_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["liferaft"\]$', text, re.M)
    assert re.search(r'^CMD \["serve"\]$', text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    health = re.search(r"^HEALTHCHECK.*\n.*CMD.*?(/\w+)'", text, re.M)
    assert health and health.group(1) in get_routes()
    exposed = set(re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split())  # type: ignore[union-attr]
    listens = re.findall(r"LIFERAFT_SERVE_LISTEN_\w+_ADDR=0\.0\.0\.0:(\d+)", text)
    assert exposed == set(listens) and len(listens) == 2


# -- systemd ------------------------------------------------------------------------------


def test_the_systemd_unit_and_its_config_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "liferaft.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    svc = unit["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert Path(argv[0]).name == "liferaft" and argv[1] == "serve"
    assert set(serve_flags(argv)) <= FLAGS
    assert svc["KillSignal"] == "SIGTERM" and int(svc["TimeoutStopSec"]) >= 10
    name, _, _ = svc["Environment"].partition("=")
    assert name in ENV_NAMES
    # The config file it reads: long flag names only, advertised addresses
    # that are no wildcard, and its own --initial-cluster entry advertised.
    config = argv[argv.index("--config") + 1]
    data = tomllib.loads((DEPLOY / Path(config).name).read_text())
    assert set(data) <= set(config_keys(serve_cmd)), set(data) - set(config_keys(serve_cmd))
    for key in ("advertise-peer-addr", "advertise-client-addr"):
        check_advertise(data[key], f"--{key}")
    assert data["initial-cluster"][data["id"]] == data["advertise-peer-addr"]


# -- Kubernetes ---------------------------------------------------------------------------


def k8s() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def test_the_kubernetes_manifests() -> None:
    kinds = k8s()
    (sts,) = kinds["StatefulSet"]
    (pdb,) = kinds["PodDisruptionBudget"]
    (secret,) = kinds["Secret"]
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    # The headless Service names the pods, also before they are ready.
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    for s in services.values():
        assert s["spec"]["selector"].items() <= labels.items()
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, route in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == route and get["path"] in get_routes() and get["port"] in ports
    # The peer secret comes from the Secret.
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["peer-secret"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert "peer-secret" in secret["stringData"]
    # Environment: every LIFERAFT_* is a flag; the others only feed them.
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    helpers = {n for n in env if not n.startswith("LIFERAFT_")}
    assert set(env) - helpers <= ENV_NAMES
    used = " ".join([*env.values(), *c["args"]])
    for h in helpers:
        assert f"$({h})" in used or f"${h}" in used, f"{h} is set but not used"
    assert "exec liferaft serve" in c["args"][0]
    # The advertised peer address of pod 0 is its --initial-cluster entry.
    sub = {"$(POD_NAME)": "liferaft-0", "$(POD_NAMESPACE)": "default"}

    def expand(v: str) -> str:
        for k, val in sub.items():
            v = v.replace(k, val)
        return v

    cluster = dict(
        part.split("=", 1) for part in expand(env["LIFERAFT_SERVE_INITIAL_CLUSTER"]).split(",")
    )
    assert cluster["liferaft-0"] == expand(env["LIFERAFT_SERVE_ADVERTISE_PEER_ADDR"])
    assert len(cluster) == sts["spec"]["replicas"]
    ports_listened = {
        env[f"LIFERAFT_SERVE_LISTEN_{k}_ADDR"].rpartition(":")[2] for k in ("PEER", "CLIENT")
    }
    assert ports_listened == {str(p) for p in ports.values()}


# -- docs/operations.md: every flag with its variable ----------------------------------------


def _default(p: click.Option) -> str:
    d = p.default
    unset = d is None or d == "" or isinstance(d, enum.Enum)  # click 8.2+: Sentinel.UNSET
    if p.required:
        return "required"
    if p.is_flag:
        return "on" if d is True else "off"
    return "" if unset else f"`{d}`"


def flag_table() -> str:
    """The table of docs/operations.md, "Flags, environment variables and
    the config file", as the command defines it today."""
    rows = ["| flag | environment variable | default | what |", "|---|---|---|---|"]
    for p in options():
        names = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        what = " ".join((p.help or "").split()).replace("|", "\\|")
        rows.append(f"| {names} | `{env_name(p)}` | {_default(p)} | {what} |")
    return "\n".join(rows)


def test_the_operations_table_lists_every_flag_as_it_is() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    m = re.search(r"<!-- serve-flags:begin -->\n(.*?)\n<!-- serve-flags:end -->", text, re.S)
    assert m, "docs/operations.md has no serve-flags table"
    assert m.group(1) == flag_table(), "regenerate the table:\n" + flag_table()
