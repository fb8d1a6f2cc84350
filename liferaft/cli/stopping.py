"""How the long-running client commands (``kv watch``, ``kv lease
keepalive``, ``kv lock``, ``kv elect``) end: on Ctrl-C or SIGTERM they stop
what they hold cleanly (a lock is released, a leadership resigned) instead
of dying with a traceback, and a closed stdout (``... | head -1``) ends them
quietly (docs/operations.md, "Long-running commands").

asyncio.run turns Ctrl-C into a cancelled task and then a KeyboardInterrupt;
these commands want it as an ordinary event they wait on, next to the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import click

from .output import Output, emit

T = TypeVar("T")

#: What stops a long-running command: Ctrl-C, and a plain ``kill``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the default
    handlers come back after it).  Off the main thread, where signals cannot
    be caught, the event is simply never set."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    caught = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (ValueError, RuntimeError, NotImplementedError):
            continue  # not the main thread, or no signals here
        caught.append(sig)
    try:
        yield stop
    finally:
        for sig in caught:
            loop.remove_signal_handler(sig)


class StopRequestedError(Exception):
    """The stop event was set before the awaited work finished."""


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``'s result, or StopRequestedError once ``stop`` is set first (the
    work is then cancelled, so whatever it held is given back)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            # Wait for its cleanup (a lease revoked) before going on.
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise StopRequestedError
    return task.result()


async def until_set(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def emit_now(out: Output, fmt: str) -> None:
    """Print one item of a stream now (click.echo flushes after each line).
    A reader that went away (a closed pipe) ends the command with exit 0,
    as ``head`` expects."""
    try:
        emit(out, fmt)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does
        # not report the same broken pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise click.exceptions.Exit(0) from None
