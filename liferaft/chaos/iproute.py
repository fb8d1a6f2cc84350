"""The ``ip`` commands under the network lab, and the cleanup of stale namespaces.

Every ``ip`` command runs with a timeout and raises :class:`NetLabError`,
naming the command and quoting its stderr, when it fails.  Each namespace a
lab creates carries an owner record (see :mod:`liferaft.chaos.netns`), which
is how :func:`cleanup_stale` tells a crashed run's namespaces from a live
one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Final

PREFIX: Final = "lrc-"
TIMEOUT: Final = 10.0
"""Seconds any single ``ip`` command may take."""
OWNER_MARK: Final = "liferaft-netlab"

_HEX_RE = re.compile(r"^[0-9a-f]{1,8}$")
_OWNER_RE = re.compile(rf"^{OWNER_MARK}:pid=(\d+):start=(\d+)$")
# stderr of an `ip` command whose object was already gone
_GONE = (
    "No such file or directory",  # netns del / -n of a deleted namespace
    "No such process",  # route del of a missing route (RTNETLINK ESRCH)
    "Cannot find device",
)


class NetLabError(RuntimeError):
    """An ``ip`` command failed or timed out.

    ``cmd`` is the command (a list), ``stderr`` what it printed, ``returncode``
    its exit status (``None`` if it timed out or could not start).
    """

    def __init__(self, cmd: Sequence[str], stderr: str, returncode: int | None = None) -> None:
        self.cmd = list(cmd)
        self.stderr = stderr
        self.returncode = returncode
        how = "timed out" if returncode is None else f"exit status {returncode}"
        detail = stderr.strip() or "(no output)"
        super().__init__(f"{shlex.join(self.cmd)}: {how}: {detail}")


def ip_command() -> str | None:
    """The path of the iproute2 ``ip`` binary, or None if there is none."""
    found = shutil.which("ip")
    if found:
        return found
    for cand in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def _ip() -> str:
    path = ip_command()
    if path is None:
        raise NetLabError(["ip"], "iproute2 'ip' not found (looked in PATH and /usr/sbin, /sbin)")
    return path


def _run(
    args: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float = TIMEOUT,
    gone_ok: bool = False,
) -> str:
    """Run ``ip ARGS``; return its stdout.  Raise :class:`NetLabError` on failure,
    unless ``gone_ok`` and stderr says the object was already gone."""
    cmd = [_ip(), *args]
    try:
        proc = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        err = exc.stderr or ""
        if gone_ok and any(g in err for g in _GONE):
            return ""
        shown = cmd if stdin is None else [*cmd, "<<", *stdin.splitlines()]
        raise NetLabError(shown, err, exc.returncode) from None
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise NetLabError(cmd, f"{err} (no answer in {timeout:g}s)", None) from None
    except OSError as exc:
        raise NetLabError(cmd, str(exc), None) from None
    return proc.stdout


def _batch(ns: str, lines: Iterable[str]) -> None:
    """Run several ``ip`` commands in namespace ``ns`` with one process."""
    _run(["-n", ns, "-batch", "-"], stdin="".join(f"{ln}\n" for ln in lines))


def _del_ns(name: str) -> None:
    """Delete namespace ``name``; a namespace already gone is not an error."""
    _run(["netns", "del", name], gone_ok=True)


def _list_ns() -> list[str]:
    """Names of all namespaces in ``ip netns list``."""
    out = _run(["netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _proc_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of process ``pid``, None if it does not exist."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    try:  # field 22; comm (field 2) may hold spaces and parentheses
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid > 0x3FFFFF:  # PID_MAX_LIMIT on 64-bit Linux is 2**22
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def available() -> tuple[bool, str]:
    """Can this process make network namespaces, bridges and veth pairs?

    Returns ``(True, description)`` or ``(False, why_not)``.  Tries it for real:
    creates a probe namespace with a bridge and a veth pair in it, then
    deletes it.  Nothing is created in the host namespace.
    """
    if not sys.platform.startswith("linux"):
        return False, f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "network namespaces need root (euid is not 0)"
    ip = ip_command()
    if ip is None:
        return False, "iproute2 'ip' not found (install iproute2)"
    probe = f"{PREFIX}{os.getpid():x}.probe-ns"
    try:
        _run(["netns", "add", probe])
    except NetLabError as exc:
        _quiet_del(probe)
        return False, f"cannot create a network namespace: {exc}"
    try:
        _batch(
            probe,
            [
                "link set lo up",
                "link add lrcbr type bridge",
                "link add lrcva type veth peer name lrcvb",
                "link set lrcva master lrcbr",
            ],
        )
    except NetLabError as exc:
        return False, f"cannot create a bridge and veth pair in a namespace: {exc}"
    finally:
        _quiet_del(probe)
    return True, f"network namespaces available ({ip})"


def _quiet_del(name: str) -> None:
    with contextlib.suppress(NetLabError):
        _del_ns(name)


def _owner(name: str) -> tuple[int, int] | None:
    """The (pid, start time) recorded in namespace ``name``, if any."""
    try:
        out = _run(["-j", "-n", name, "link", "show", "dev", "lo"])
    except NetLabError:
        return None
    m = re.search(r'"ifalias"\s*:\s*"([^"]*)"', out)
    if m is None:
        return None
    om = _OWNER_RE.match(m.group(1))
    if om is None:
        return None
    return int(om.group(1)), int(om.group(2))


def _is_stale(name: str, prefix: str) -> bool:
    """Whether ``name`` (``<prefix><tag>-...``) belongs to a process that is gone."""
    tag, sep, rest = name[len(prefix) :].partition("-")
    if not sep or not rest or not tag:
        return False
    owner = _owner(name)
    if owner is not None:
        pid, start = owner
        return _proc_start(pid) != start
    pid_hex = tag.split(".", 1)[0]
    if not _HEX_RE.match(pid_hex):
        return False
    return not _pid_alive(int(pid_hex, 16))


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left behind by crashed runs; return their names.

    A namespace ``<prefix><tag>-<member>`` is stale when the process that made
    it no longer exists: the owner recorded in the namespace (see the module
    docstring) has exited, or, for a namespace without an owner record (made by
    hand, or by a run that crashed while creating it), its tag -- up to the
    first ``.`` -- is a hexadecimal PID of no running process.  Namespaces of
    live processes, and names that fit neither rule, are left alone.  Never
    raises because a namespace disappeared meanwhile.
    """
    removed: list[str] = []
    for name in _list_ns():
        if not name.startswith(prefix) or not _is_stale(name, prefix):
            continue
        _del_ns(name)
        removed.append(name)
    return removed
