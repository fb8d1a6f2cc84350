"""One naming scheme for every exception in liferaft (docs/architecture.md, "Names").

The renamed runtime, command, client and transport errors keep their old
names as aliases of the very same class objects for one release, so
``except NotLeader`` and ``except NotLeaderError`` catch the same thing.  A scan of every liferaft
module keeps new exceptions to the scheme.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import pkgutil
from collections.abc import Callable

import pytest

import liferaft
import liferaft.runtime
from liferaft.core import NotLeaderError as CoreNotLeaderError
from liferaft.core import RaftError
from liferaft.runtime import commands, errors

# old name -> new name; the old ones go in 0.2.0.
RENAMED = {
    "NotLeader": "NotLeaderError",
    "Timeout": "NodeTimeoutError",
    "Stopped": "StoppedError",
    "Dropped": "DroppedError",
    "StorageFailed": "StorageFailedError",
    "BadConfig": "BadConfigError",
    "BadMember": "BadMemberError",
    "BadArguments": "BadArgumentsError",
    "UnknownCommand": "UnknownCommandError",
    "BadEnvelope": "BadEnvelopeError",
    "NotAttached": "NotAttachedError",
}

# Exceptions that are not errors, named for what they signal: a test double's
# fault (PowerCut, DiskCrashed), a simulator's control flow (TermChanged), a
# checker's verdict (AssertionError subclasses).
NOT_ERRORS = {"PowerCut", "DiskCrashed", "TermChanged", "SafetyViolation", "LabFailure"}

# The client's and the transport's renames, by module (the same alias rule).
RENAMED_ELSEWHERE = {
    "liferaft.client": {
        "BadRequest": "BadRequestError",
        "NotFound": "NotFoundError",
        "PreconditionFailed": "PreconditionFailedError",
        "SessionExpired": "SessionExpiredError",
        "Timeout": "ClientTimeoutError",  # not TimeoutError: a builtin
        "TooLarge": "TooLargeError",
        "Unauthorized": "UnauthorizedError",
        "Unavailable": "UnavailableError",
    },
    "liferaft.transport.base": {"CallNotSent": "CallNotSentError"},
}

# Still to rename, in files other people own (with an alias of the old name
# each, as runtime/errors.py does): module -> {old name: the name the scheme
# gives it}.  Empty now: keep it so, or list a rename here with its alias.
NOT_YET: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_an_old_name_is_the_same_class_as_its_new_name(old: str, new: str) -> None:
    assert getattr(errors, old) is getattr(errors, new)
    assert getattr(errors, new).__name__ == new
    for module in (liferaft.runtime, commands):
        if hasattr(module, new):
            assert getattr(module, old) is getattr(module, new)


@pytest.mark.parametrize(
    ("module", "old", "new"),
    sorted((m, o, n) for m, names in RENAMED_ELSEWHERE.items() for o, n in names.items()),
)
def test_a_client_or_transport_old_name_is_the_same_class(module: str, old: str, new: str) -> None:
    where = importlib.import_module(module)
    assert getattr(where, old) is getattr(where, new)
    assert getattr(where, new).__name__ == new
    assert old in where.__all__ and new in where.__all__


def test_the_client_errors_keep_their_family() -> None:
    from liferaft import client, transport

    assert issubclass(client.SessionExpiredError, client.ClientTimeoutError)
    assert issubclass(client.ClientTimeoutError, client.ClientError)
    assert client.SessionExpired is client.SessionExpiredError
    assert issubclass(transport.CallNotSentError, transport.CallError)
    assert transport.CallNotSent is transport.CallNotSentError


@pytest.mark.parametrize(
    "make",
    [
        lambda: errors.NodeTimeoutError("entry 7 not applied in time; outcome unknown"),
        lambda: __import__("liferaft.client").client.ClientTimeoutError(
            "deadline passed, outcome unknown", 504, "timeout"
        ),
        lambda: __import__("liferaft.client").client.SessionExpiredError(
            "session expired", 504, "session_expired"
        ),
    ],
    ids=["NodeTimeoutError", "ClientTimeoutError", "SessionExpiredError"],
)
def test_timeouts_are_the_builtin_timeout_error(make: Callable[[], Exception]) -> None:
    # Python code says ``except TimeoutError`` (asyncio.timeout, socket
    # timeouts); liferaft's timeouts are caught by it, keep their own family
    # and their one-line message (OSError must not read it as an errno).
    exc = make()
    with pytest.raises(TimeoutError) as caught:
        raise exc
    assert caught.value is exc
    assert isinstance(exc, asyncio.TimeoutError)
    assert exc.errno is None and str(exc) == exc.args[0]
    assert type(exc).__name__ != "TimeoutError"  # never shadows the builtin


def test_every_old_name_is_still_importable_where_it_was() -> None:
    for name in ("NotLeader", "Timeout", "Stopped", "Dropped", "StorageFailed"):
        assert getattr(liferaft.runtime, name) is getattr(errors, name)
    for name in ("BadArguments", "UnknownCommand", "BadEnvelope", "NotAttached"):
        assert getattr(commands, name) is getattr(errors, name)


def test_the_runtime_not_leader_is_the_cores_not_leader() -> None:
    exc = errors.NotLeaderError("no", "b")
    assert isinstance(exc, errors.NodeError)
    assert isinstance(exc, CoreNotLeaderError) and isinstance(exc, RaftError)
    assert (exc.leader_hint, exc.leader, str(exc)) == ("b", "b", "no")
    assert errors.NotLeaderError("no").leader_hint is None


def _exception_classes() -> dict[str, list[tuple[str, type[BaseException]]]]:
    """Public exception classes by name, with the modules that define them."""
    found: dict[str, list[tuple[str, type[BaseException]]]] = {}
    for info in pkgutil.walk_packages(liferaft.__path__, "liferaft."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for attr, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and attr == obj.__name__  # not an alias
                and not attr.startswith("_")
            ):
                found.setdefault(attr, []).append((info.name, obj))
    return found


def test_every_exception_in_liferaft_follows_the_scheme() -> None:
    found = _exception_classes()
    assert "NotLeaderError" in found and "RaftError" in found  # the scan sees them
    wrong = []
    for name, where in found.items():
        for module, cls in where:
            if name in NOT_ERRORS or name in NOT_YET.get(module, {}):
                continue
            if not name.endswith("Error") or hasattr(builtins, name):
                wrong.append(f"{module}.{name}")
            # One condition, one name: a name two layers define is one family.
            for other_module, other in where:
                if other is not cls and not (issubclass(cls, other) or issubclass(other, cls)):
                    wrong.append(f"{module}.{name} and {other_module}.{name} are unrelated")
    assert not wrong, wrong


def test_the_not_yet_list_names_only_what_still_exists() -> None:
    found = _exception_classes()
    stale = [
        f"{module}.{old}"
        for module, names in NOT_YET.items()
        for old in names
        if module not in {m for m, _ in found.get(old, [])}
    ]
    assert not stale, f"renamed already: drop them from NOT_YET: {stale}"
