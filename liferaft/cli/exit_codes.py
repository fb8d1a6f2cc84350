"""The ``liferaft`` command's exit codes: the one place they are defined
(docs/operations.md, "Exit codes").  The numbers are stable: scripts branch
on them.

Each outcome a script acts on differently has its own code: retry later
(``UNAVAILABLE``: nothing was applied), look before retrying
(``OUTCOME_UNKNOWN``: the write may have applied), or take the answer as
data (``NOT_FOUND``, ``PRECONDITION_FAILED``).  ``USAGE`` is click's own 2.
"""

from __future__ import annotations

from enum import IntEnum

import click

from liferaft.client import (
    ClientError,
    ClientTimeoutError,
    NotFoundError,
    PreconditionFailedError,
    UnavailableError,
)


class ExitCode(IntEnum):
    """What ``liferaft`` exits with."""

    OK = 0
    ERROR = 1  # anything else: refused, unauthorized, TLS, bad data, corruption
    USAGE = 2  # a bad flag or argument (click's code)
    NOT_FOUND = 3  # no such key or member
    PRECONDITION_FAILED = 4  # a condition (--if-value, --if-revision, cas) did not hold
    UNAVAILABLE = 5  # no node took the request; nothing was applied
    OUTCOME_UNKNOWN = 6  # the deadline passed once an attempt may have reached a node
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


def for_error(exc: ClientError) -> ExitCode:
    """The exit code of a client error.  (SessionExpiredError is a
    ClientTimeoutError: its outcome is unknown too.)"""
    if isinstance(exc, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, PreconditionFailedError):
        return ExitCode.PRECONDITION_FAILED
    if isinstance(exc, UnavailableError):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, ClientTimeoutError):
        return ExitCode.OUTCOME_UNKNOWN
    return ExitCode.ERROR


class CommandFailedError(click.ClickException):
    """A command's failure: one line on stderr (``Error: ...``) and ``code``
    as the exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        # click reads the code from the instance (its ClassVar is the default).
        self.exit_code = int(code)  # type: ignore[misc]
