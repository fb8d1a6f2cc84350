"""Linux network namespaces for the fault-injection harness: one namespace per
liferaft node, and network partitions made of blackhole routes.

Theory of operation
-------------------
A :class:`NetLab` builds a private little LAN out of network namespaces.  Every
member (a liferaft node) and the harness's client get a namespace of their
own, with one interface, ``eth0``.  The other end of each ``eth0`` is a veth
in a *hub* namespace, enslaved to a Linux bridge there::

        lrc-<tag>-n1       lrc-<tag>-n2        ...       lrc-<tag>-client
     eth0 10.S.0.1/24   eth0 10.S.0.2/24             eth0 10.S.0.200/24
          |                  |                                |
     -----+------------------+-------------------------------+------
     |    v1                 v2            ...                vc   |
     |    +------------------+-----[ br0 ]--------------------+    |
     |                        lrc-<tag>-hub                        |
     ---------------------------------------------------------------

(``S`` is ``subnet_index``.)  Every veth pair is created *inside* the hub
namespace, with its peer moved straight into the node's namespace, so no
interface ever appears in the host (initial) network namespace and the host's
routing, firewall and addresses are never touched.  The namespaces are names
under ``/run/netns`` managed with ``ip netns``; a node is started in its
namespace by prefixing its command with :meth:`NetLab.exec_prefix`
(``ip netns exec NS ...``).

Partitions are routes, not firewall rules: to cut the link between ``a`` and
``b``, :meth:`NetLab.cut` adds ``blackhole <b's ip>/32`` to ``a``'s routing table
and ``blackhole <a's ip>/32`` to ``b``'s.  A packet either side sends to the
other is then dropped by its own kernel at the routing step (``connect()``
fails at once with ``EINVAL``; a packet of an established connection is
silently dropped), while everything else -- including the client, which is
never cut -- keeps working.  Each link is cut in both directions, so a
partition is always symmetric.  :attr:`NetLab.cuts` records the cut links (as
``frozenset({a, b})``) so the harness can log the topology, and
:meth:`NetLab.heal` deletes exactly the routes the lab added.

The topology helpers (:meth:`~NetLab.partition`, :meth:`~NetLab.isolate`,
:meth:`~NetLab.bridge`) each *replace* the current topology, as if they healed
first; they only touch the links that change, so there is no moment of full
connectivity between two partitions.  :meth:`~NetLab.cut` and
:meth:`~NetLab.mend` change single links.  For example ``bridge(["n1", "n2"],
["n3"], ["n4", "n5"])`` cuts the four links n1-n4, n1-n5, n2-n4, n2-n5: eight
blackhole routes, two per link.

Cleanup: leaving the ``with`` block (normally or by an exception) deletes every
namespace the lab created; deleting a namespace destroys the veth ends in it,
and deleting the hub destroys the bridge.  An ``atexit`` hook does the same for
labs still open when the interpreter exits.  Neither runs if the process is
killed (SIGKILL, or a signal without a handler); :func:`cleanup_stale` removes
what such a crashed run left behind.  To tell whose namespace is whose, each
namespace carries an owner record (the alias of its ``lo``:
``liferaft-netlab:pid=P:start=T``, ``T`` being the process's start time in
clock ticks, so a recycled PID is not mistaken for the owner); a namespace
without one is judged by its tag, read as a hexadecimal PID.

Names are ``lrc-<tag>-<member>``, ``lrc-<tag>-client`` and ``lrc-<tag>-hub``.
The default tag is the creating process's PID in hex (``<pid>.<n>`` for a
second lab open at the same time in one process), so concurrent runs never
collide.  All ``ip`` commands run with a timeout and raise :class:`NetLabError`,
naming the command and quoting its stderr, when they fail.

Processes still running inside a namespace when it is deleted are not killed:
they keep their (now nameless, disconnected) namespace until they exit.  Stop
the nodes before leaving the lab (:meth:`NetLab.pids` lists them).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final

from .iproute import (
    OWNER_MARK,
    PREFIX,
    NetLabError,
    _batch,
    _del_ns,
    _ip,
    _proc_start,
    _run,
    available,
    cleanup_stale,
    ip_command,
)

__all__ = [
    "CLIENT",
    "NetLab",
    "NetLabError",
    "available",
    "cleanup_stale",
    "ip_command",
]

CLIENT: Final = "client"
"""The name of the client's namespace slot (``lab.ns(CLIENT)``, ``lab.addr(CLIENT)``)."""
HUB: Final = "hub"
CLIENT_HOST: Final = 200
"""The client's host number: its address is ``10.<subnet_index>.0.200``."""
BRIDGE: Final = "br0"
NODE_IF: Final = "eth0"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,23}$")


_LIVE: dict[int, NetLab] = {}
_LIVE_LOCK = threading.Lock()
_TAG_SEQ = [0]


def _default_tag_locked() -> str:
    """A tag no open lab of this process uses (call with ``_LIVE_LOCK`` held)."""
    base = f"{os.getpid():x}"
    used = {lab.tag for lab in _LIVE.values()}
    if base not in used:
        return base
    while True:
        _TAG_SEQ[0] += 1
        tag = f"{base}.{_TAG_SEQ[0]}"
        if tag not in used:
            return tag


def _close_all_live() -> None:
    """atexit: delete the namespaces of every lab still open."""
    with _LIVE_LOCK:
        labs = list(_LIVE.values())
    for lab in labs:
        try:
            lab.close()
        except Exception as exc:  # noqa: BLE001 - last resort, report and go on
            print(f"liferaft.chaos.netns: cleanup at exit failed: {exc}", file=sys.stderr)


atexit.register(_close_all_live)


class NetLab:
    """A set of network namespaces, one per member plus one for the client,
    joined by a bridge, with partitions made of blackhole routes.

    ``with NetLab(["n1", "n2", "n3"]) as lab:`` creates everything; leaving the
    block deletes it.  See the module docstring for the topology.

    :param members: node names (letters, digits, ``_ . -``; not ``client`` or
        ``hub``), at most 199; they get addresses ``10.<subnet_index>.0.1``,
        ``.2``, ... in this order.
    :param tag: the middle of the namespace names (letters, digits, ``_ .``);
        defaults to this process's PID in hex.  :func:`cleanup_stale` reads a
        tag as a hex PID only for namespaces without an owner record.
    :param subnet_index: the second octet of the lab's addresses.  Every lab
        has its own namespaces, so labs with the same subnet do not interfere.
    """

    def __init__(self, members: list[str], tag: str | None = None, subnet_index: int = 231) -> None:
        members = list(members)
        if not members:
            raise ValueError("NetLab needs at least one member")
        if len(members) >= CLIENT_HOST:
            raise ValueError(f"at most {CLIENT_HOST - 1} members, not {len(members)}")
        if len(set(members)) != len(members):
            raise ValueError(f"duplicate member names in {members}")
        for m in members:
            if not isinstance(m, str) or not _NAME_RE.match(m):
                raise ValueError(f"bad member name {m!r} (letters, digits, _ . -; <= 32 chars)")
            if m in (CLIENT, HUB):
                raise ValueError(f"member name {m!r} is reserved")
        if tag is not None and not _TAG_RE.match(tag):
            raise ValueError(f"bad tag {tag!r} (letters, digits, _ .; no '-'; <= 24 chars)")
        if not 0 <= subnet_index <= 255:
            raise ValueError(f"subnet_index must be 0..255, not {subnet_index}")
        self._members: tuple[str, ...] = tuple(members)
        self._tag_arg = tag
        self._tag: str = tag if tag is not None else f"{os.getpid():x}"
        self.subnet_index = subnet_index
        self._addrs: dict[str, str] = {
            m: f"10.{subnet_index}.0.{i}" for i, m in enumerate(members, 1)
        }
        self._addrs[CLIENT] = f"10.{subnet_index}.0.{CLIENT_HOST}"
        self._created: list[str] = []
        self._cuts: set[frozenset[str]] = set()
        self._routes: set[tuple[str, str]] = set()  # (namespace, blackholed ip) we added
        self._lock = threading.RLock()
        self._open = False

    # -- names and addresses ------------------------------------------------------------

    @property
    def tag(self) -> str:
        """The tag in this lab's namespace names."""
        return self._tag

    @property
    def members(self) -> tuple[str, ...]:
        """The member names, in address order."""
        return self._members

    def ns(self, member: str) -> str:
        """The namespace name of ``member`` (or of ``"client"``)."""
        self._check_name(member, client_ok=True)
        return f"{PREFIX}{self._tag}-{member}"

    @property
    def client_ns(self) -> str:
        """The client's namespace name (where the harness talks to the nodes from)."""
        return self.ns(CLIENT)

    @property
    def hub_ns(self) -> str:
        """The namespace holding the bridge."""
        return f"{PREFIX}{self._tag}-{HUB}"

    def addr(self, member: str) -> str:
        """The IPv4 address of ``member`` (or of ``"client"``)."""
        self._check_name(member, client_ok=True)
        return self._addrs[member]

    def exec_prefix(self, member: str) -> list[str]:
        """``[ip, "netns", "exec", NS]``: put it before a command to run the
        command in ``member``'s namespace (``ip`` is the absolute path of the
        ``ip`` binary, so it works with a PATH that lacks /usr/sbin)."""
        return [_ip(), "netns", "exec", self.ns(member)]

    def namespaces(self) -> list[str]:
        """All namespace names of this lab (members, client, hub)."""
        return [*(self.ns(m) for m in self._members), self.client_ns, self.hub_ns]

    def pids(self, member: str) -> list[int]:
        """PIDs of the processes running in ``member``'s namespace."""
        out = _run(["netns", "pids", self.ns(member)], gone_ok=True)
        return [int(x) for x in out.split()]

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except NetLabError as err:  # do not hide the exception that is on its way out
            warnings.warn(f"NetLab cleanup failed: {err}", RuntimeWarning, stacklevel=2)

    def open(self) -> None:
        """Create the namespaces, the bridge and the links (what ``with`` does)."""
        with self._lock:
            if self._open:
                raise NetLabError(["NetLab.open"], f"lab {self._tag} is already open")
            with _LIVE_LOCK:
                if self._tag_arg is None:
                    self._tag = _default_tag_locked()
                _LIVE[id(self)] = self
            self._open = True
            try:
                self._build()
            except BaseException:
                self.close()
                raise

    def _build(self) -> None:
        start = _proc_start(os.getpid())
        owner = f"{OWNER_MARK}:pid={os.getpid()}:start={start if start is not None else 0}"
        nodes = [*self._members, CLIENT]
        for name in [self.hub_ns, *(self.ns(n) for n in nodes)]:
            _run(["netns", "add", name])  # fails if the name exists: never adopt another's
            self._created.append(name)
            _batch(name, [f"link set lo alias {owner}", "link set lo up"])
        hub = [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"]
        for n in nodes:
            v = self._hub_if(n)
            hub += [
                f"link add {v} type veth peer name {NODE_IF} netns {self.ns(n)}",
                f"link set {v} master {BRIDGE}",
                f"link set {v} up",
            ]
        _batch(self.hub_ns, hub)
        for n in nodes:
            _batch(
                self.ns(n),
                [f"addr add {self._addrs[n]}/24 dev {NODE_IF}", f"link set {NODE_IF} up"],
            )

    def _hub_if(self, node: str) -> str:
        return "vc" if node == CLIENT else f"v{self._members.index(node) + 1}"

    def close(self) -> None:
        """Delete every namespace this lab created (idempotent; what leaving
        ``with`` does).  Tries them all, then raises :class:`NetLabError` if
        any deletion failed for a reason other than "already gone"."""
        with self._lock:
            errors: list[NetLabError] = []
            for name in reversed(self._created):
                try:
                    _del_ns(name)
                except NetLabError as exc:
                    errors.append(exc)
            self._created.clear()
            self._cuts.clear()
            self._routes.clear()
            self._open = False
            with _LIVE_LOCK:
                _LIVE.pop(id(self), None)
            if errors:
                raise NetLabError(
                    [c for e in errors for c in e.cmd], "; ".join(str(e) for e in errors)
                )

    # -- partitions ---------------------------------------------------------------------

    @property
    def cuts(self) -> frozenset[frozenset[str]]:
        """The links currently cut, each as ``frozenset({a, b})``."""
        with self._lock:
            return frozenset(self._cuts)

    def describe(self) -> str:
        """The cut links as text for a log, e.g. ``"n1-n2 n1-n3"``, or ``"healed"``."""
        pairs = sorted("-".join(sorted(c)) for c in self.cuts)
        return " ".join(pairs) if pairs else "healed"

    def reachable(self, a: str, b: str) -> bool:
        """Whether the lab lets ``a`` and ``b`` talk (no cut between them)."""
        self._check_name(a, client_ok=True)
        self._check_name(b, client_ok=True)
        return frozenset((a, b)) not in self.cuts

    def cut(self, a: str, b: str) -> None:
        """Cut the link between members ``a`` and ``b``, both directions.
        Cutting a link that is already cut does nothing."""
        self._check_pair(a, b)
        with self._lock:
            self._require_open()
            link = frozenset((a, b))
            if link in self._cuts:
                return
            self._blackhole(a, b)
            self._blackhole(b, a)
            self._cuts.add(link)

    def mend(self, a: str, b: str) -> None:
        """Restore the link between ``a`` and ``b`` (nothing if it is not cut)."""
        self._check_pair(a, b)
        with self._lock:
            self._require_open()
            link = frozenset((a, b))
            self._unblackhole(a, b)
            self._unblackhole(b, a)
            self._cuts.discard(link)

    def heal(self) -> None:
        """Remove every blackhole route this lab added: a full mesh again."""
        with self._lock:
            if not self._open:
                return
            for ns, ip in sorted(self._routes):
                _run(["-n", ns, "route", "del", "blackhole", f"{ip}/32"], gone_ok=True)
                self._routes.discard((ns, ip))
            self._cuts.clear()

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Split the members into ``groups``: every pair of members in
        different groups is cut, every other link is mended.  Every member must
        be in exactly one group; the client still reaches everyone."""
        seen = self._groups(groups)
        self._apply(
            frozenset((a, b))
            for i, a in enumerate(self._members)
            for b in self._members[i + 1 :]
            if seen[a] != seen[b]
        )

    def isolate(self, member: str) -> None:
        """Cut ``member`` off from every other member (and mend all else)."""
        self._check_name(member, client_ok=False)
        self.partition([[member], [m for m in self._members if m != member]])

    def bridge(
        self,
        left: Sequence[str] | None = None,
        middle: str | Sequence[str] | None = None,
        right: Sequence[str] | None = None,
    ) -> None:
        """Jepsen's "bridge": cut ``left`` from ``right`` while the ``middle``
        node(s) keep talking to both sides; every other link is mended.

        ``bridge(["n1", "n2"], ["n3"], ["n4", "n5"])`` (``middle`` may also be a
        plain name): n1, n2 see n3 but not n4, n5; n4, n5 see n3 but not n1, n2.
        With no arguments the members are split in their own order: the first
        ``len // 2``, the one after, the rest.  Every member must be in exactly
        one of the three parts, and each part must be non-empty.
        """
        if left is None and middle is None and right is None:
            k = len(self._members) // 2
            left, middle, right = (
                self._members[:k],
                self._members[k : k + 1],
                self._members[k + 1 :],
            )
        if left is None or middle is None or right is None:
            raise ValueError("bridge() takes all three of left, middle, right, or none")
        mid = [middle] if isinstance(middle, str) else list(middle)
        parts = [list(left), mid, list(right)]
        if not all(parts):
            raise ValueError(f"bridge needs non-empty left, middle and right, got {parts}")
        self._groups(parts)  # validates names and coverage
        self._apply(frozenset((a, b)) for a in parts[0] for b in parts[2])

    def _groups(self, groups: Sequence[Sequence[str]]) -> dict[str, int]:
        """Map each member to the index of its group; check that the groups
        are made of members and hold each member exactly once."""
        if isinstance(groups, str) or any(isinstance(g, str) for g in groups):
            raise ValueError(f"groups must be lists of member names, not {groups!r}")
        seen: dict[str, int] = {}
        for gi, group in enumerate(groups):
            for m in group:
                self._check_name(m, client_ok=False)
                if m in seen:
                    raise ValueError(f"{m!r} is in more than one group of {groups}")
                seen[m] = gi
        missing = [m for m in self._members if m not in seen]
        if missing:
            raise ValueError(f"members {missing} are in no group of {groups}")
        return seen

    def _apply(self, target: Iterable[frozenset[str]]) -> None:
        """Make the cut links exactly ``target``: as if healed first, but
        changing only the links that differ (no moment of full mesh between
        two partitions)."""
        want = set(target)
        with self._lock:
            self._require_open()
            for link in sorted(self._cuts - want, key=sorted):
                self.mend(*sorted(link))
            for link in sorted(want - self._cuts, key=sorted):
                self.cut(*sorted(link))

    # -- internals ----------------------------------------------------------------------

    def _check_name(self, name: str, *, client_ok: bool) -> None:
        if name in self._addrs and (client_ok or name != CLIENT):
            return
        if name == CLIENT:
            raise ValueError("the client namespace is never cut")
        raise ValueError(f"unknown member {name!r} (members: {', '.join(self._members)})")

    def _check_pair(self, a: str, b: str) -> None:
        self._check_name(a, client_ok=False)
        self._check_name(b, client_ok=False)
        if a == b:
            raise ValueError(f"cannot cut {a!r} from itself")

    def _require_open(self) -> None:
        if not self._open:
            raise NetLabError(["NetLab"], f"lab {self._tag} is not open (use it in a with block)")

    def _blackhole(self, src: str, dst: str) -> None:
        ns, ip = self.ns(src), self._addrs[dst]
        _run(["-n", ns, "route", "replace", "blackhole", f"{ip}/32"])
        self._routes.add((ns, ip))

    def _unblackhole(self, src: str, dst: str) -> None:
        ns, ip = self.ns(src), self._addrs[dst]
        if (ns, ip) in self._routes:
            _run(["-n", ns, "route", "del", "blackhole", f"{ip}/32"], gone_ok=True)
            self._routes.discard((ns, ip))

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"NetLab({list(self._members)!r}, tag={self._tag!r}, {state}, {self.describe()})"
