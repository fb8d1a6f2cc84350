"""The frame of one bench run, the same for both scripts: the header line,
the common flags, Ctrl-C and SIGTERM (every child killed by PID, exit
status 130), and the temp dir that holds logs and data."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .profiling import find_py_spy
from .report import write_json


def parser(
    prog: str, description: str, quick_help: str, rounds_help: str
) -> argparse.ArgumentParser:
    """The bench's parser, with --quick and --rounds."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--rounds", type=int, help=rounds_help)
    return p


def add_common_flags(p: argparse.ArgumentParser, *, keep_help: str, py_spy_help: str) -> None:
    """--pin, --py-spy, --json, --keep: the flags both scripts take."""
    p.add_argument("--py-spy", nargs="?", const="auto", help=py_spy_help)
    add_run_flags(p, keep_help=keep_help)


def add_run_flags(p: argparse.ArgumentParser, *, keep_help: str) -> None:
    """--pin, --json, --keep: the flags every bench script takes."""
    p.add_argument("--pin", action="store_true", help="pin node i to CPU i mod ncpu (taskset)")
    p.add_argument("--json", help="write every raw figure to this file")
    p.add_argument("--keep", action="store_true", help=keep_help)


def resolve_py_spy(p: argparse.ArgumentParser, a: argparse.Namespace, hint: str) -> None:
    """``--py-spy`` with no path: next to python, else on PATH, else an error."""
    if a.py_spy == "auto":
        a.py_spy = find_py_spy("auto")
        if not a.py_spy:
            p.error(f"py-spy not found ({hint})")


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def header(prog: str, quick: bool, tmp: Path) -> str:
    """``raft_bench: <when>, <host>, N CPUs, Python X, quick run, temp dir D``."""
    return (
        f"{prog}: {datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'quick' if quick else 'full'} run, temp dir {tmp}"
    )


def kill_on_sigterm(kill_children: Callable[[], None]) -> None:
    """On SIGTERM, kill the children at once, then unwind as on Ctrl-C:
    asyncio.run's SIGINT handling cancels the main task cleanly, whereas
    raising KeyboardInterrupt from the handler could strike inside the event
    loop and leave asyncio.run waiting forever."""

    def on_term(signum: int, frame: Any) -> None:
        kill_children()
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)


def run(main: Coroutine[Any, Any, None], kill_children: Callable[[], None]) -> int:
    """Run the bench's main coroutine; 0, 130 on Ctrl-C / SIGTERM, or 1 if
    it failed (a full disk, a child that never started...).  Every child is
    killed by PID on the way out, whatever the way out is.

    A failure is reported here, traceback and all, and the script goes on
    to report the rounds that were done (marked failed by the exit status)
    and to remove its temp dir, rather than dying with the traceback."""
    kill_on_sigterm(kill_children)
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        print("interrupted; killing child processes", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
        traceback.print_exc()
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        kill_children()
    return 0


def conclude(
    rc: int,
    *,
    failed: bool,
    have_figures: bool,
    report: Callable[[bool], dict[str, Any]],
    json_path: str | None,
    meta: dict[str, Any],
    tmp: Path,
    keep: bool,
) -> int:
    """The end of a kv bench script: the report of what was measured (marked
    partial after Ctrl-C), the ``--json`` dump (``meta``, the command line
    and the report), the temp dir removed or kept; the exit status (1 when a run
    failed)."""
    try:
        if have_figures:
            out = report(rc == 130)
            if json_path:
                write_json(json_path, {**meta, "argv": sys.argv, "report": out})
                print(f"wrote {json_path}")
        if failed and rc == 0:
            rc = 1
    finally:
        finish(tmp, bool(keep or failed or rc), " (logs and data)")
    return rc


def finish(tmp: Path, keep: bool, label: str = "") -> None:
    """Remove the temp dir, or say where it is kept."""
    if keep:
        print(f"kept {tmp}{label}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
