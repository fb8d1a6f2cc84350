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

from liferaft.storage import WAL, HardStateStore
from liferaft.storage.wal import RepairPlan, apply_repair

from .exit_codes import CommandFailedError, ExitCode
from .inspect_report import RECOMMENDED, WARNING, Report, examine
from .output import Output, emit, write_out_options

__all__ = ["RECOMMENDED", "WARNING", "inspect"]


def _interactive() -> bool:
    """Can somebody answer a question?  (A seam for the tests.)"""
    return sys.stdin.isatty()


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
@write_out_options()
def inspect(data_dir: Path, repair: bool, force: bool, yes: bool, fmt: str) -> None:
    """Print and verify what DATA_DIR holds: hard state, WAL segments, snapshots.

    Every CRC is checked; the exit status is 1 on corruption.  Nothing is
    changed unless --repair is given.  On a corrupt WAL it prints what a
    repair would drop and the recommended path instead: wipe the node and
    let it rejoin.  --repair refuses to drop committed entries, or entries
    that still check out, without --force, and asks before any change
    (--yes when not on a terminal).  -w json or simple print the inspection
    (before any repair) on stdout, and what a repair does on stderr.
    """
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is not a directory")
    r = examine(data_dir)
    failure = (ExitCode.ERROR, f"{data_dir}: corruption found (above)") if r.corrupt else None
    if fmt == "table":
        for text, err in r.lines:
            click.echo(text, err=err)
    else:
        # The inspection as it was before any repair; what a repair says and
        # asks goes to stderr, so stdout stays one document (or only rows).
        emit(Output(r.data, r.rows), fmt)
    if repair and r.pending:
        _repair(data_dir, r, force, yes, to_err=fmt != "table")
        # What a repair mends is mended; corrupt snapshots or an unreadable
        # hard state are not.
        failure = failure if r.other_bad else None
    elif repair:
        click.echo("repair: nothing to repair in the wal", err=fmt != "table")
    if failure is not None:
        raise CommandFailedError(failure[1], failure[0])


def _repair(data_dir: Path, r: Report, force: bool, yes: bool, to_err: bool) -> None:
    """Carry out what :func:`inspect` showed, if the policy and the operator
    allow; ``to_err``: say what it does on stderr (stdout holds a document)."""
    wal_dir, plan, commit, log_end = data_dir / "wal", r.plan, r.commit, r.floor
    if r.hs is None:
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
        if not click.confirm("Change DATA_DIR as shown above?", default=False, err=to_err):
            raise click.ClickException("not confirmed; nothing changed")
    if plan is not None:
        # Work it out again: what is cut must be exactly what was shown.
        again = WAL(wal_dir, repair=True, read_only=True)
        again.close()
        if again.report.repair != plan:
            raise click.ClickException("the WAL changed since it was read; nothing changed")
        for line in apply_repair(plan):
            click.echo(f"repaired: {line}", err=to_err)
    w = WAL(wal_dir)  # a normal open finishes an interrupted reset, cuts a torn tail
    if w.report.interrupted_reset:
        click.echo(f"repaired: finished an interrupted reset ({w.report.interrupted_reset} "
                   "segments removed)", err=to_err)
    if w.report.torn_tail_bytes:
        click.echo(f"repaired: truncated a torn tail of {w.report.torn_tail_bytes} bytes",
                   err=to_err)
    last = w.last_index
    click.echo(f"wal: entries {w.first_index}..{last}", err=to_err)
    w.close()
    # Only a forced cut gets here with a commit index past the log; a node
    # would refuse to start on it.
    hard = HardStateStore(data_dir)
    floor = max(last, r.snap_index)
    if hard.current.commit > floor:
        old = hard.current.commit
        hard.lower_commit(floor)
        click.echo(f"hard state: commit lowered from {old} to {floor} (--force)", err=to_err)
