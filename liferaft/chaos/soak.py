"""The soak run: a real cluster, concurrent clients, a nemesis, then the
verdict.

Order: start N nodes (each in its own network namespace when partitions
are on and namespaces work here), wait for a leader, run the workloads and
the nemesis and the stranger (:mod:`.hostile`) for ``seconds``, heal
everything, let the cluster settle, read every key from every node, then
check: the register history for linearizability (liferaft.verify), the set
for lost acknowledged adds and invented elements, that no stranger changed
anything, that no node process exited unless the harness ended it, and that
no node's RSS ended above twice what it was a minute into the run; and the
coordination half (:mod:`.coord_run`): the revisioned history in revision
order, every watch stream, every lease.  One final line sums it up; the
histories, the nemesis log and the stranger's log go to ``out``.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.etcd.planted import PLANT_ENV
from liferaft.verify import Register, check, save

from .cluster import ChaosCluster, ChaosError
from .coord_run import Coordination, CoordVerdict
from .etcd_api import EtcdApi
from .hostile import Stranger, Watch
from .nemesis import FAULTS, Nemesis
from .workload import Recorder, SetState, final_reads, register_client, set_client

#: What the clients may speak: liferaft's /v1 API, or etcd's v3 gRPC API.
APIS = ("http", "etcd")


@dataclass
class SoakResult:
    seed: int
    api: str = "http"  # what the clients spoke (APIS)
    ops: int = 0
    ok: int = 0
    fail: int = 0
    indeterminate: int = 0
    keys: int = 0
    linearizable: str = "unknown"
    lost: int = 0
    invented: int = 0
    set_acked: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unexpected: dict[str, int] = field(default_factory=dict)
    explanation: str = ""
    out: str = ""
    hostile: int = 0  # hostile actions performed
    hostile_outcomes: dict[str, int] = field(default_factory=dict)
    # What strangers changed, by kind (membership, which includes client
    # addresses; key, term, leader, http_5xx; liferaft/chaos/watch.py), and
    # the details.
    stranger_changes: dict[str, int] = field(default_factory=dict)
    stranger_details: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # node processes that died
    rss: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (baseline, end)
    rss_grew: list[str] = field(default_factory=list)
    coord: CoordVerdict | None = None  # revisions, watches, leases
    coord_summary: str = ""

    @property
    def membership_changed_by_stranger(self) -> int:
        return self.stranger_changes.get("membership", 0)

    def line(self) -> str:
        v = self.coord
        coord = "" if v is None else (
            f"rev_violations={len(v.rev.violations)} watch_gaps={v.watch.gaps} "
            f"watch_dups={v.watch.dups} watch_bad={v.watch.disorder + v.watch.mismatch} "
            f"lease_early_expiry={v.lease.early} "
        )
        return (
            f"ops={self.ops} ok={self.ok} fail={self.fail} indeterminate={self.indeterminate} "
            f"keys={self.keys} linearizable={self.linearizable} lost={self.lost} {coord}"
            f"hostile={self.hostile} "
            f"membership_changed_by_stranger={self.membership_changed_by_stranger} "
            f"node_exits={len(self.exits)} seed={self.seed} api={self.api}"
        )

    @property
    def passed(self) -> bool:
        return (
            self.linearizable == "yes"
            and self.lost == 0
            and self.invented == 0
            and not self.unexpected
            and not any(self.stranger_changes.values())
            and not self.exits
            and not self.rss_grew
            and self.coord is not None
            and self.coord.ok
        )


async def soak(
    seconds: float,
    seed: int,
    nodes: int,
    faults: list[str],
    out: Path,
    clients: int = 6,
    register_keys: int = 4,
    budget_per_key: float = 60.0,
    log: Any = print,
    read_consistency: str = "linearizable",
    hostile: list[str] | None = None,
    api: str = "http",
    bug: str | None = None,
) -> SoakResult:
    """``read_consistency="stale"`` makes the register clients read stale on
    purpose: the verdict must then be NO (the harness's own check).
    ``hostile``: the kinds of :data:`~liferaft.chaos.hostile.HOSTILE` the
    stranger uses (None or empty: no stranger).  ``api``: what every client
    speaks, ``"http"`` (liferaft's /v1) or ``"etcd"`` (etcd's v3 gRPC API,
    every node started with ``--grpc-addr``; :mod:`.etcd_api`).  ``bug``:
    a planted bug of the etcd front end (:mod:`liferaft.etcd.planted`), to
    see the verdict catch it; never set outside such a test."""
    if api not in APIS:
        raise ValueError(f"unknown api {api!r}; choose from {', '.join(APIS)}")
    rng = random.Random(seed)
    res = SoakResult(seed, api=api)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    lab = None
    faults = list(faults)
    if "partition" in faults:
        from .netns import NetLab, available, cleanup_stale

        ok, why = available()
        if ok:
            cleanup_stale()
            lab = NetLab(ids, tag=f"{seed & 0xFFFF:x}{rng.randrange(16**3):03x}")
        else:
            faults.remove("partition")
            res.skipped.append(f"partition: {why}")
            log(f"soak: skipping partitions: {why}")
    for f in faults:
        if f not in FAULTS:
            raise ValueError(f"unknown fault {f!r}; choose from {', '.join(FAULTS)}")
    if lab is not None:
        lab.__enter__()
    # Lease reads are off unless the operator grants them (docs/runtime.md,
    # "Lease reads"): a soak of lease reads must run nodes that serve them.
    flags = ["--lease-reads"] if read_consistency == "lease" else []
    env = {PLANT_ENV: bug} if bug else None
    c = ChaosCluster(ids, out / "cluster", lab, rng, flags=flags, grpc=api == "etcd", env=env)
    if api == "etcd":
        c.api = EtcdApi(c)
    home_ns = None
    try:
        if lab is not None:
            # The harness itself talks to the nodes from the client namespace.
            home_ns = _setns_path("/proc/self/ns/net", keep=True)
            _setns_path(f"/run/netns/{lab.client_ns}")
        c.start_all()
        await c.leader(timeout=30)
        rec = Recorder()
        sets = SetState()
        keys = [f"r{i}" for i in range(register_keys)]
        stop = asyncio.Event()
        n_reg = max(1, clients * 2 // 3)
        coord = Coordination(c, random.Random(rng.random()), read_consistency)
        tasks = [
            asyncio.create_task(
                register_client(
                    c, rec, p, keys, random.Random(rng.random()), stop, read_consistency,
                    coord.log,
                )
            )
            for p in range(n_reg)
        ]
        set_procs = list(range(n_reg, clients))
        tasks += [
            asyncio.create_task(
                set_client(c, sets, rec, p, random.Random(rng.random()), stop, coord.log)
            )
            for p in set_procs
        ]
        tasks += coord.tasks(stop)
        nem = Nemesis(c, faults, random.Random(rng.random()), lab) if faults else None
        if nem is not None:
            tasks.append(asyncio.create_task(nem.run(stop)))
        watch = Watch(c)
        stranger = (
            Stranger(c, hostile, random.Random(rng.random()), watch, c.secret) if hostile else None
        )
        if stranger is not None:
            tasks.append(asyncio.create_task(stranger.run(stop)))
        rss = _RssWatch(min(60.0, seconds / 3))
        t_start = time.monotonic()
        t_end = t_start + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(min(2.0, max(0.0, t_end - time.monotonic())))
            for nid, code, tail in c.check_exits():
                log(f"soak: {nid} exited with code {code}; its log ends:\n{tail}")
            rss.sample(c, time.monotonic() - t_start)
            if int(time.monotonic() - t_start) % 10 < 2:
                log(
                    f"soak: t={time.monotonic() - t_start:.0f}s ops={len(rec.ops)} "
                    f"set={len(sets.acked)} faults={dict(nem.done) if nem else {}} "
                    f"hostile={stranger.actions if stranger else 0}"
                )
        stop.set()
        await asyncio.gather(*tasks)
        if nem is not None:
            await nem.heal()
            res.faults = dict(nem.done)
        if stranger is not None:
            await stranger.heal()
            res.hostile = stranger.actions
            res.hostile_outcomes = dict(stranger.outcomes)
        # Quiet period: everyone back, a leader, and every member caught up
        # with what it had committed (polled, not a fixed sleep).  No leader
        # is a finding, not a crash of the harness: the verdict still says
        # what else went wrong (a node that exited, a stranger's change).
        try:
            await c.leader(timeout=30)
        except ChaosError as exc:
            res.unexpected[f"after healing: {exc}"] = 1
        if not await c.caught_up(timeout=15):
            log("soak: a member had not applied all that was committed within 15 s")
        final = await final_reads(c, rec, keys, proc=10_000, set_procs=set_procs)
        await coord.catch_up()
        await watch.final()
        c.check_exits()
        rss.sample(c, time.monotonic() - t_start)
        res.rss, res.rss_grew = rss.verdict()
        res.stranger_changes = dict(watch.changes)
        res.stranger_details = list(watch.details)
        res.exits = [f"{nid} exited with code {code}: {tail}" for nid, code, tail in c.exits]
        save(rec.ops, out / "history.json")
        (out / "nemesis.json").write_text(json.dumps(nem.log if nem else []))
        (out / "stranger.json").write_text(json.dumps(stranger.log if stranger else []))
        leaderless = nem.leaderless if nem else []
        coord.save(out, leaderless)
        res.coord = coord.check(leaderless)
        res.coord_summary = coord.summary()
        res.out = str(out)
        # The verdict.
        reg_ops = [o for o in rec.ops if not o.key.startswith("set/")]
        res.ops = len(reg_ops) + sets.ops
        res.ok = sum(o.status == "ok" for o in reg_ops) + len(sets.acked)
        res.fail = sum(o.status == "fail" for o in reg_ops)
        res.indeterminate = sum(o.status == "info" for o in reg_ops)
        res.keys = len(keys) + (1 if sets.ops else 0)
        verdict = check(reg_ops, Register(), budget_per_key)
        res.linearizable = verdict.verdict
        res.explanation = verdict.explain()
        res.set_acked = len(sets.acked)
        for nid, got in final.items():
            if got is None:
                res.unexpected[f"{nid}: set not readable at the end"] = 1
                continue
            res.lost = max(res.lost, len(sets.acked - got))
            res.invented = max(res.invented, len(got - sets.attempted))
        res.unexpected.update(rec.unexpected)
        return res
    finally:
        c.shutdown()
        await c.close()
        if home_ns is not None:
            _setns_fd(home_ns)
            os.close(home_ns)
        if lab is not None:
            lab.__exit__(None, None, None)


class _RssWatch:
    """Each node's RSS a while into the run (``at`` seconds: a minute in a
    long soak) against its RSS at the end; the end above twice the baseline
    fails the run (a node that buffers what strangers send grows).

    A process younger than ``settle`` seconds (just restarted by the
    nemesis, still importing) is no baseline; the next sample is taken."""

    def __init__(self, at: float, settle: float = 10.0) -> None:
        self.at = at
        self.settle = settle
        self.baseline: dict[str, int] = {}
        self.last: dict[str, int] = {}

    def sample(self, c: ChaosCluster, t: float) -> None:
        for nid, (rss, age) in c.rss().items():
            self.last[nid] = rss
            if t >= self.at and nid not in self.baseline and age >= self.settle:
                self.baseline[nid] = rss

    def verdict(self) -> tuple[dict[str, tuple[int, int]], list[str]]:
        table, grew = {}, []
        for nid, base in sorted(self.baseline.items()):
            end = self.last.get(nid, 0)
            table[nid] = (base, end)
            if end > 2 * base:
                grew.append(f"{nid}: RSS {base >> 20} MiB a while in, {end >> 20} MiB at the end")
        return table, grew


def _setns_fd(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _setns_path(path: str, keep: bool = False) -> int | None:
    """Enter the network namespace at ``path`` (or, with ``keep``, only open
    it and return the fd, to come back to later).  setns(2) moves the calling
    thread only; the harness makes all its sockets on its event-loop thread,
    and the nodes are started with ``ip netns exec`` into their own."""
    fd = os.open(path, os.O_RDONLY)
    if keep:
        return fd
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)
    return None
