"""The cluster secret's file, and whether a peer address needs protecting.

One secret per cluster, shared by its members, proves membership in the
peer handshake (:mod:`.handshake`).  It lives in a file that only its owner
may read, like an ssh key: a file readable by group or others is refused.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import stat
from pathlib import Path

__all__ = [
    "MIN_SECRET",
    "SECRET_FILE",
    "SecretError",
    "ensure_secret_file",
    "is_loopback",
    "read_secret_file",
]

# The file name `liferaft cluster up` (and the fault harness) use in a cluster's directory.
SECRET_FILE = "peer-secret"
# Characters: a secret shorter than this is refused as a likely mistake.
MIN_SECRET = 16


class SecretError(Exception):
    """The secret file cannot be used; the message is one line for the operator."""


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace stripped).

    Raises :class:`SecretError` if the file cannot be read, is readable by
    group or others, or holds fewer than :data:`MIN_SECRET` characters.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SecretError(f"cannot read peer secret {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SecretError(f"peer secret {path} is not a regular file")
        if mode & 0o077:
            raise SecretError(
                f"peer secret {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(64 * 1024).strip()
    except OSError as exc:
        raise SecretError(f"cannot read peer secret {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) < MIN_SECRET:
        raise SecretError(f"peer secret {path} is shorter than {MIN_SECRET} characters")
    return data


def ensure_secret_file(directory: Path) -> Path:
    """``directory/peer-secret``: created once (mode 0600, 256 random bits
    as hex), then reused, so a restarted cluster keeps its secret."""
    path = directory / SECRET_FILE
    try:
        # O_EXCL: never overwrite the secret of a cluster that already runs.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    except OSError as exc:
        raise SecretError(f"cannot create peer secret {path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def is_loopback(host: str) -> bool:
    """True for a host only this machine can reach: an address in
    127.0.0.0/8 or ::1 (or IPv4-mapped 127.x), or a name (``localhost``
    too) that resolves to such addresses only.  A name resolving to any
    other address, or to none, counts as reachable from outside: a listener
    bound to it would listen there."""
    host = host.strip("[]")
    try:
        return _loopback_ip(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    try:
        return bool(infos) and all(_loopback_ip(str(info[4][0])) for info in infos)
    except ValueError:
        return False


def _loopback_ip(text: str) -> bool:
    """Whether the IP address ``text`` is loopback; ValueError if it is none."""
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
