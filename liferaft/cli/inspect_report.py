"""What ``liferaft inspect`` finds in a data directory, read-only, as one
:class:`Report`: the lines it prints for people (``-w table``), the JSON
document (``-w json``) and the tab-separated rows (``-w simple``) of
docs/operations.md, "Scripting the CLI".  The command and its ``--repair``
are :mod:`.inspect`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.core import HardState
from liferaft.storage import WAL, CorruptionError, SnapshotStore
from liferaft.storage.hardstate import NAME as HS_NAME
from liferaft.storage.hardstate import decode as decode_hs
from liferaft.storage.wal import RepairPlan

RECOMMENDED = (
    "Recommended instead: remove this node from the cluster (liferaft members remove ID), "
    "wipe DATA_DIR, and start it again with `liferaft serve ... --join URL`: it catches "
    "up from the leader (docs/storage.md, \"Corruption and repair\")."
)
WARNING = (
    "WARNING: the commit index on disk is written lazily and may be behind what this node "
    "acknowledged; cutting entries that still check out can lose acknowledged writes if it "
    "is done on a majority of the cluster."
)


@dataclass
class Report:
    """One inspection.  ``lines`` are (text, to stderr) for people; ``data``
    the JSON document; ``rows`` the simple rows, each led by its kind."""

    lines: list[tuple[str, bool]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[list[str]] = field(default_factory=list)
    hs: HardState | None = None
    plan: RepairPlan | None = None
    commit: int = 0  # the highest commit index known: hard state or newest snapshot
    floor: int = 0  # the last entry a node would find (log or snapshot)
    snap_index: int = 0
    pending: bool = False  # anything --repair would change
    commit_past: bool = False
    other_bad: bool = False  # corruption --repair cannot mend (hard state, snapshots)

    @property
    def corrupt(self) -> bool:
        return self.other_bad or self.commit_past or self.plan is not None

    def say(self, text: str, err: bool = False) -> None:
        self.lines.append((text, err))


def describe(plan: RepairPlan, commit: int) -> list[str]:
    """What cutting at ``plan`` drops, file by file, for the operator."""
    first = plan.keep_last + 1
    lines = [
        f"--repair would cut the log after entry {plan.keep_last} and drop entries "
        f"{first}..{plan.last_seen} (commit index on disk: {commit}):"
    ]
    if plan.intact:
        lines.append(
            f"  the bad record, then {plan.intact} intact entries ({plan.intact_first}.."
            f"{plan.intact_last}, terms {plan.term_min}..{plan.term_max}) that still check out"
        )
    else:
        lines.append("  the bad record; nothing after it checks out")
    for f in plan.files:
        what = f"truncate at offset {f.offset}" if f.offset else "remove"
        lines.append(f"  {f.path.name}: {what} ({f.dropped_bytes} bytes)")
    lines.append(f"  in all {len(plan.files)} files, {plan.dropped_bytes} bytes")
    return lines


def _plan_data(plan: RepairPlan, commit: int) -> dict[str, Any]:
    return {
        "path": str(plan.path), "offset": plan.offset, "reason": plan.reason,
        "keep_last": plan.keep_last, "drop_last": plan.last_seen, "commit": commit,
        "intact": plan.intact, "intact_first": plan.intact_first,
        "intact_last": plan.intact_last, "dropped_bytes": plan.dropped_bytes,
        "files": [
            {"name": f.path.name, "truncate_at": f.offset or None, "dropped_bytes": f.dropped_bytes}
            for f in plan.files
        ],
    }  # fmt: skip


def _hard_state(r: Report, data_dir: Path) -> None:
    try:
        hs_path = data_dir / HS_NAME
        hs = decode_hs(hs_path.read_bytes(), hs_path) if hs_path.exists() else HardState()
    except CorruptionError as exc:
        r.say(f"CORRUPT hard state: {exc}", err=True)
        r.data["hard_state"] = {"corrupt": str(exc)}
        r.rows.append(["hard_state", "CORRUPT", str(exc)])
        r.other_bad = True
        return
    r.hs = hs
    r.say(f"hard state: term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
    r.data["hard_state"] = {"term": hs.term, "vote": hs.vote or None, "commit": hs.commit}
    r.rows.append(["hard_state", str(hs.term), hs.vote or "-", str(hs.commit)])


def _snapshots(r: Report, data_dir: Path) -> list[str]:
    """Reads the snapshots; returns their lines, printed after the WAL's."""
    lines: list[str] = []
    snaps: list[dict[str, Any]] = []
    r.data["snapshots"] = snaps
    snap_dir = data_dir / "snap"
    if not snap_dir.is_dir():
        return ["snapshots: none"]
    store = SnapshotStore(snap_dir, keep=1 << 30, cleanup=False)
    try:
        metas = store.list()
    except CorruptionError as exc:
        lines.append(f"CORRUPT snapshot: {exc}")
        r.rows.append(["snapshot", "CORRUPT", str(exc)])
        snaps.append({"corrupt": str(exc)})
        metas, r.other_bad = [], True
    for meta in metas:
        try:
            store.verify(meta)
            status = "ok"
            r.snap_index = max(r.snap_index, meta.index)
        except CorruptionError as exc:
            status = f"CORRUPT at offset {exc.offset}: {exc.reason}"
            r.other_bad = True
        lines.append(f"snapshot index={meta.index} term={meta.term}: {status}")
        snaps.append({"index": meta.index, "term": meta.term, "status": status})
        r.rows.append(["snapshot", str(meta.index), str(meta.term), status])
    if metas:
        cs = metas[-1].conf_state
        lines.append(
            f"membership (newest snapshot): voters={sorted(cs.voters)} "
            f"learners={sorted(cs.learners)}"
            + (f" outgoing={sorted(cs.voters_outgoing)}" if cs.voters_outgoing else "")
        )
        r.data["membership"] = {
            "voters": sorted(cs.voters), "learners": sorted(cs.learners),
            "voters_outgoing": sorted(cs.voters_outgoing),
        }  # fmt: skip
        r.rows.append(["membership", ",".join(sorted(cs.voters)), ",".join(sorted(cs.learners))])
    return lines


def _wal(r: Report, wal_dir: Path) -> int:
    """Reads the WAL; returns the last entry a node would find in it."""
    if not wal_dir.is_dir():
        r.say("wal: none")
        r.data["wal"] = None
        return 0
    # Read-only, with the repair worked out but not carried out.
    w = WAL(wal_dir, repair=True, read_only=True)
    plan = r.plan = w.report.repair
    segs = []
    for seg in w.segments:
        rng = f"{seg.first}..{seg.last}" if len(seg.offsets) else "empty"
        # A preallocated segment's file is mostly zeros not yet written:
        # its records' bytes and its file size are two different figures.
        alloc = (f", preallocated {seg.allocated} (format {seg.version})" if seg.preallocated
                 else "")  # fmt: skip
        r.say(f"segment {seg.path.name}: entries {rng} ({seg.size} bytes{alloc})")
        first, last = (seg.first, seg.last) if len(seg.offsets) else (None, None)
        segs.append({"name": seg.path.name, "first": first, "last": last, "bytes": seg.size,
                     "format": seg.version, "file_bytes": seg.allocated})  # fmt: skip
        r.rows.append(["segment", seg.path.name, str(first or "-"), str(last or "-"),
                       str(seg.size)])  # fmt: skip
    if plan is not None:
        r.say(f"CORRUPT wal: {plan.path} at offset {plan.offset}: {plan.reason}", err=True)
        r.say(f"wal: entries {w.first_index}..{w.last_index} before the corruption")
        for line in describe(plan, r.commit):
            r.say(line)
        r.say(WARNING)
        r.say(RECOMMENDED)
        r.rows.append(["wal", "CORRUPT", str(plan.path), str(plan.offset), plan.reason])
    else:
        r.say(f"wal: entries {w.first_index}..{w.last_index}")
    r.rows.append(["wal", str(w.first_index), str(w.last_index)])
    if w.report.interrupted_reset:
        r.say(
            f"wal: a reset was cut short; {w.report.interrupted_reset} segments of the "
            "replaced log remain (a node deletes them on start)"
        )
    if w.report.torn_tail_bytes:
        r.say(
            f"wal: found a torn tail of {w.report.torn_tail_bytes} bytes "
            "(a node truncates it on start)"
        )
    r.data["wal"] = {
        "first": w.first_index, "last": w.last_index, "segments": segs,
        "corruption": None if plan is None else _plan_data(plan, r.commit),
        "interrupted_reset": w.report.interrupted_reset,
        "torn_tail_bytes": w.report.torn_tail_bytes,
    }  # fmt: skip
    r.pending = bool(plan or w.report.interrupted_reset or w.report.torn_tail_bytes)
    last = w.last_index
    w.close()
    return last


def examine(data_dir: Path) -> Report:
    """Read and verify everything in ``data_dir``; change nothing."""
    r = Report()
    r.data["data_dir"] = str(data_dir)
    _hard_state(r, data_dir)
    # Snapshots are read before the WAL (printed after it): the newest one
    # covers only committed entries, so it counts as a commit index too.
    snap_lines = _snapshots(r, data_dir)
    r.commit = max(r.hs.commit if r.hs else 0, r.snap_index)
    wal_last = _wal(r, data_dir / "wal")
    r.floor = max(wal_last, r.snap_index)
    if r.hs is not None and r.hs.commit > r.floor:
        # A node refuses to start on this (a forced repair that crashed before
        # lowering the commit index, or a tail cut under it); only --force mends it.
        r.say(
            f"CORRUPT hard state: commit {r.hs.commit} is past the last entry {r.floor} "
            "(a node refuses to start)", err=True,
        )  # fmt: skip
        r.rows.append(["hard_state", "CORRUPT", f"commit {r.hs.commit} past {r.floor}"])
        r.commit_past = r.pending = True
    r.data["commit_past_log"] = r.commit_past
    for line in snap_lines:
        r.say(line, err=line.startswith("CORRUPT"))
    r.data["ok"] = not r.corrupt
    return r
