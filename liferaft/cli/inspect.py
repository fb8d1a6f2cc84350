"""``liferaft inspect DATA_DIR [--repair [--force] [--yes]]``: print and verify
what a node's data directory holds, and, when asked, cut its WAL at the first
corrupt record.

The repair policy (docs/storage.md, "Corruption and repair")
-------------------------------------------------------------
A corrupt record in the middle of the log means this node lost an entry it
once held, and perhaps acknowledged.  Raft counts that acknowledgement in a
majority; a node that forgets it and votes again can let a leader without
the entry win, and an acknowledged write is gone.  So the safe way back is
to wipe the node and let it rejoin: removed from the cluster, it counts in
no majority, and it catches up from the leader.

``--repair`` cuts the log instead, keeping the prefix before the bad record.
It shows exactly what the cut drops (indices, terms, files, bytes) and what
to do instead, and it refuses, unless ``--force`` is given, when the cut
would drop

* any entry at or below the commit index on disk (or the newest snapshot):
  those entries are committed, and the node cannot even start without them;
* any entry that still checks out (a valid CRC) past the bad record: the
  commit index on disk is written lazily, so it can be far behind what the
  node acknowledged, and intact entries past the bad one are exactly what it
  held; dropping them on a majority loses acknowledged writes.

A hard state that does not check out is refused even with ``--force`` (the
commit index is unknown, and a node cannot start on it anyway); a commit
index past the end of the log is reported, and only ``--force`` lowers it.

What is left without ``--force`` is damage at the very end of the log, with
nothing intact after it, above the commit index: the cut then drops nothing
the corruption did not already destroy.  Every change (that cut, a torn tail,
an interrupted reset) is confirmed on a terminal, or needs ``--yes``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from liferaft.core import HardState
from liferaft.storage import WAL, CorruptionError, HardStateStore, SnapshotStore
from liferaft.storage.hardstate import NAME as HS_NAME
from liferaft.storage.hardstate import decode as decode_hs
from liferaft.storage.wal import RepairPlan, apply_repair

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


def _interactive() -> bool:
    """Can somebody answer a question?  (A seam for the tests.)"""
    return sys.stdin.isatty()


def _describe(plan: RepairPlan, commit: int) -> list[str]:
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


def _refusals(plan: RepairPlan, commit: int) -> list[str]:
    """Why a cut needs --force (empty: it does not)."""
    why = []
    if plan.keep_last < commit:
        why.append(f"it drops entries at or below the commit index {commit}")
    if plan.intact:
        why.append(f"it drops {plan.intact} intact entries")
    return why


@click.command("inspect")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--repair", is_flag=True,
    help="Cut the WAL at its first corrupt record (shows what it drops and asks first).",
)
@click.option(
    "--force", is_flag=True,
    help="Let --repair drop committed or still-intact entries: can lose acknowledged writes.",
)
@click.option("--yes", is_flag=True, help="Do not ask before --repair changes anything.")
def inspect(data_dir: Path, repair: bool, force: bool, yes: bool) -> None:
    """Print and verify what DATA_DIR holds: hard state, WAL segments, snapshots.

    Every CRC is checked; the exit status is 1 on corruption.  Nothing is
    changed unless --repair is given.  On a corrupt WAL it prints what a
    repair would drop and the recommended path instead: wipe the node and
    let it rejoin.  --repair refuses to drop committed entries, or entries
    that still check out, without --force, and asks before any change
    (--yes when not on a terminal).
    """
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is not a directory")
    other_bad = False

    hs: HardState | None = None
    try:
        hs_path = data_dir / HS_NAME
        hs = decode_hs(hs_path.read_bytes(), hs_path) if hs_path.exists() else HardState()
        click.echo(f"hard state: term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
    except CorruptionError as exc:
        click.echo(f"CORRUPT hard state: {exc}", err=True)
        other_bad = True

    # Snapshots are read before the WAL (printed after it): the newest one
    # covers only committed entries, so it counts as a commit index too.
    snap_lines: list[str] = []
    snap_index = 0
    snap_dir = data_dir / "snap"
    if snap_dir.is_dir():
        store = SnapshotStore(snap_dir, keep=1 << 30, cleanup=False)
        try:
            metas = store.list()
        except CorruptionError as exc:
            snap_lines.append(f"CORRUPT snapshot: {exc}")
            metas, other_bad = [], True
        for meta in metas:
            try:
                store.verify(meta)
                status = "ok"
                snap_index = max(snap_index, meta.index)
            except CorruptionError as exc:
                status = f"CORRUPT at offset {exc.offset}: {exc.reason}"
                other_bad = True
            snap_lines.append(f"snapshot index={meta.index} term={meta.term}: {status}")
        if metas:
            cs = metas[-1].conf_state
            snap_lines.append(
                f"membership (newest snapshot): voters={sorted(cs.voters)} "
                f"learners={sorted(cs.learners)}"
                + (f" outgoing={sorted(cs.voters_outgoing)}" if cs.voters_outgoing else "")
            )
    else:
        snap_lines.append("snapshots: none")
    commit = max(hs.commit if hs else 0, snap_index)

    wal_dir = data_dir / "wal"
    plan: RepairPlan | None = None
    pending = False  # anything --repair would change
    wal_last = 0  # the last entry a node would find, once it cut a torn tail
    commit_past = False
    if wal_dir.is_dir():
        # Read-only, with the repair worked out but not carried out.
        w = WAL(wal_dir, repair=True, read_only=True)
        plan = w.report.repair
        for seg in w.segments:
            rng = f"{seg.first}..{seg.last}" if len(seg.offsets) else "empty"
            click.echo(f"segment {seg.path.name}: entries {rng} ({seg.size} bytes)")
        if plan is not None:
            click.echo(
                f"CORRUPT wal: {plan.path} at offset {plan.offset}: {plan.reason}", err=True
            )
            click.echo(f"wal: entries {w.first_index}..{w.last_index} before the corruption")
            for line in _describe(plan, commit):
                click.echo(line)
            click.echo(WARNING)
            click.echo(RECOMMENDED)
        else:
            click.echo(f"wal: entries {w.first_index}..{w.last_index}")
        if w.report.interrupted_reset:
            click.echo(
                f"wal: a reset was cut short; {w.report.interrupted_reset} segments of the "
                "replaced log remain (a node deletes them on start)"
            )
        if w.report.torn_tail_bytes:
            click.echo(
                f"wal: found a torn tail of {w.report.torn_tail_bytes} bytes "
                "(a node truncates it on start)"
            )
        pending = bool(plan or w.report.interrupted_reset or w.report.torn_tail_bytes)
        wal_last = w.last_index
        w.close()
    else:
        click.echo("wal: none")
    floor = max(wal_last, snap_index)
    if hs is not None and hs.commit > floor:
        # A node refuses to start on this (a forced repair that crashed before
        # lowering the commit index, or a tail cut under it); only --force mends it.
        click.echo(
            f"CORRUPT hard state: commit {hs.commit} is past the last entry {floor} "
            "(a node refuses to start)", err=True,
        )
        commit_past = pending = True

    for line in snap_lines:
        click.echo(line, err=line.startswith("CORRUPT"))

    if repair and pending:
        _repair(data_dir, wal_dir, plan, hs, commit, floor, snap_index, force, yes)
        plan = None
        commit_past = False
    elif repair:
        click.echo("repair: nothing to repair in the wal")
    if other_bad or commit_past or plan is not None:
        sys.exit(1)


def _repair(
    data_dir: Path,
    wal_dir: Path,
    plan: RepairPlan | None,
    hs: HardState | None,
    commit: int,
    log_end: int,
    snap_index: int,
    force: bool,
    yes: bool,
) -> None:
    """Carry out what :func:`inspect` showed, if the policy and the operator allow."""
    if hs is None:
        # Its commit index (and vote) are unknown, so no cut can be shown to
        # spare committed entries, and a node cannot start on it anyway.
        raise click.ClickException(
            "refused: the hard state cannot be read, so the commit index is unknown "
            "(--repair does not rewrite it, even with --force). Nothing changed. "
            "Take the recommended path: wipe this node and let it rejoin."
        )
    why = _refusals(plan, commit) if plan is not None else []
    if not why and commit > log_end:
        why.append(f"it drops entries at or below the commit index {commit} "
                   f"(the log ends at {log_end})")
    if why and not force:
        raise click.ClickException(
            "refused: " + "; ".join(why) + ". Nothing changed. Take the recommended path "
            "above; --force cuts anyway (a last resort)."
        )
    if not yes:
        if not _interactive():
            raise click.ClickException(
                "refused: not on a terminal, so nobody can confirm; nothing changed. "
                "Pass --yes to go ahead."
            )
        if not click.confirm("Change DATA_DIR as shown above?", default=False):
            raise click.ClickException("not confirmed; nothing changed")
    if plan is not None:
        # Work it out again: what is cut must be exactly what was shown.
        again = WAL(wal_dir, repair=True, read_only=True)
        again.close()
        if again.report.repair != plan:
            raise click.ClickException("the WAL changed since it was read; nothing changed")
        for line in apply_repair(plan):
            click.echo(f"repaired: {line}")
    w = WAL(wal_dir)  # a normal open finishes an interrupted reset, cuts a torn tail
    if w.report.interrupted_reset:
        click.echo(f"repaired: finished an interrupted reset ({w.report.interrupted_reset} "
                   "segments removed)")
    if w.report.torn_tail_bytes:
        click.echo(f"repaired: truncated a torn tail of {w.report.torn_tail_bytes} bytes")
    last = w.last_index
    click.echo(f"wal: entries {w.first_index}..{last}")
    w.close()
    # Only a forced cut gets here with a commit index past the log; a node
    # would refuse to start on it.
    hard = HardStateStore(data_dir)
    floor = max(last, snap_index)
    if hard.current.commit > floor:
        old = hard.current.commit
        hard.lower_commit(floor)
        click.echo(f"hard state: commit lowered from {old} to {floor} (--force)")
