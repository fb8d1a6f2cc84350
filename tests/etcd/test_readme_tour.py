"""The README's etcdctl tour, as written, against ``liferaft cluster up``
(the command ``make run`` runs): put, get, a watch that sees a put made
through another node, and etcdctl carrying on after a ``kill -9`` of the
leader.  Only the ports differ (a free ``--base-port``)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.etcd.background import Background, PatientEtcdctl
from tests.kv.procs import CLI, HOST, free_base_port, http, kill_pids, pids_with_arg, wait_for


def test_readme_etcdctl_tour_against_cluster_up(tmp_path: Path, etcdctl: str) -> None:
    d = (tmp_path / "data").resolve()
    base = free_base_port(3)
    grpc = [f"{HOST}:{base + 2000 + i}" for i in (1, 2, 3)]
    clients = [f"{HOST}:{base + 1000 + i}" for i in (1, 2, 3)]
    log = tmp_path / "up.log"
    with open(log, "wb") as f:
        up = subprocess.Popen(
            [*CLI, "cluster", "up", "--nodes", "3", "--dir", str(d), "--base-port", str(base),
             "--no-table"],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "300"},
        )  # fmt: skip
    try:
        ctl = PatientEtcdctl(etcdctl, grpc)
        wait_for(lambda: ctl.run("put", "greeting", "hello").returncode == 0, 60, "a first put")
        assert ctl.ok("get", "greeting").splitlines() == ["greeting", "hello"]
        with Background.etcdctl(PatientEtcdctl(etcdctl, grpc), "watch", "--prefix", "svc/") as w:
            # The watch is up once a put made now shows; the README's put follows.
            wait_for(lambda: PatientEtcdctl(etcdctl, grpc[2:]).ok("put", "svc/web", "10.0.0.7:8080")
                     and w.drain()[-3:] == ["PUT", "svc/web", "10.0.0.7:8080"], 30, "the watch",
                     interval=0.5)  # fmt: skip
        # kill -9 the leader: etcdctl moves on to another endpoint by itself.
        def leader_pid() -> int | None:
            for a in clients:
                code, st = http(a, "GET", "/v1/status", timeout=1.0)
                if code == 200 and st["role"] == "leader":
                    return next(iter(pids_with_arg(f"--data-dir {d}/{st['id']} ")), None)
            return None

        os.kill(wait_for(leader_pid, 30, "the leader's pid"), signal.SIGKILL)
        assert ctl.ok("put", "greeting", "world").strip() == "OK"
        assert ctl.ok("get", "greeting").splitlines() == ["greeting", "world"]
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=20)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(timeout=10)
        kill_pids(pids_with_arg(str(d)), grace=3.0)
        print(log.read_text(errors="replace")[-2000:])
