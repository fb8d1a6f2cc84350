"""Hostile faults: a stranger on every port, and an operator's mistake.

The nemesis (:mod:`.nemesis`) breaks the network and the machines; this
breaks trust.  While a soak runs, a :class:`Stranger` keeps acting, one
action at a time, as an attacker who can reach the ports but holds no
secret would (docs/architecture.md, "Trust model"):

peer port (real bytes on the socket, built with the transport's own frame
helpers and the codec, as an attacker with the source would build them)
    ``peer-junk``       random bytes, random frames, absurd length prefixes;
    ``peer-hello``      a HELLO claiming to be a member, then random frames;
    ``peer-forged-ae``  a HELLO as a member, then an AppendEntries at the
                        target's term + :data:`FORGED_TERM_STEP` carrying a
                        write of a ``stranger/`` key;
    ``peer-join``       a CALLER handshake and a ``join`` call as a new node;
    ``peer-propose``    calls as a member or as ``stranger-N``: a ``stranger/``
                        write, a conf change adding a ``stranger-`` learner;
    ``peer-info``       SetMemberInfo calls, as a member or as ``stranger-N``,
                        pointing a member's client address at
                        :data:`STRANGER_CLIENT_ADDR` (or giving it a peer
                        address);
    ``peer-transfer``   TransferLeader calls, as a member or as ``stranger-N``;
    ``peer-huge``       a frame announcing almost 16 MiB, partly sent, held open;
client port (HTTP)
    ``client-slowloris``  connections holding partial request headers;
    ``client-oversized``  a huge header, a huge declared body, a huge value;
    ``client-malformed``  junk bytes, bad request lines, bad JSON and fields;
operator
    ``operator-bad-addr``  a membership change whose address the transport
                           cannot use (no port, junk), committed through the
                           path that skips validation; then the operator
                           removes the member again over HTTP.

The operator fault is not a stranger: it holds the cluster's secret and
commits, through the path that skips validation, what a buggy member would
send (:mod:`.operator_fault`).

Each peer-port action answers the listener's CHALLENGE with an empty or a
guessed PROOF (:mod:`.peer_wire`): the stranger holds no secret.

What the stranger may never achieve, checked by :class:`~.watch.Watch`
during the run and at the end: a member it made (``stranger-*``), a member's
peer or client address it changed (in ``/v1/status`` or ``/v1/members``), a
call a node served it, a ``stranger/`` key, or a term at or above
:data:`FORGED_TERM_STEP` (no real run comes near it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass

from liferaft.codec import encode_message
from liferaft.core import ChangeType, ConfChange, ConfChangeSingle
from liferaft.core.messages import AppendEntries, Entry
from liferaft.kv.mvcc.codec import Write, encode_command
from liferaft.kv.mvcc.ops import Put
from liferaft.runtime import address_book, peer_rpc
from liferaft.transport._frames import HEADER, Kind, frame

from . import peer_wire
from .cluster import ChaosCluster
from .operator_fault import BAD_ADDRESSES, OperatorFault, sleep_unless
from .watch import (
    FORGED_TERM_STEP,
    STRANGER_CLIENT_ADDR,
    STRANGER_IDS,
    STRANGER_KEYS,
    STRANGER_PEER_ADDR,
    Watch,
)

__all__ = [
    "BAD_ADDRESSES",
    "FORGED_TERM_STEP",
    "HOSTILE",
    "STRANGER_CLIENT_ADDR",
    "Stranger",
    "Watch",
]

HOSTILE = (
    "peer-junk",
    "peer-hello",
    "peer-forged-ae",
    "peer-join",
    "peer-propose",
    "peer-info",
    "peer-transfer",
    "peer-huge",
    "client-slowloris",
    "client-oversized",
    "client-malformed",
    "operator-bad-addr",
)

# Bounds on what the stranger holds open at once (the harness's own fds).
_SLOWLORIS_CONNS = 48
_MAX_HELD = 96
_HUGE = 16 * 1024 * 1024 - 64  # just under the default frame limit
_HUGE_SENT = 4 * 1024 * 1024
_IO_TIMEOUT = peer_wire.IO_TIMEOUT

# What a stranger's call changes if a node serves it (Watch.served's kinds).
_CHANGES: dict[type[peer_rpc.Request], str] = {
    peer_rpc.Propose: "key",
    peer_rpc.ChangeConf: "membership",
    peer_rpc.Join: "membership",
    peer_rpc.SetMemberInfo: "membership",
    peer_rpc.TransferLeader: "leader",
}


def _jitter_sleep(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)


@dataclass
class _Held:
    until: float
    writer: asyncio.StreamWriter


class Stranger:
    """Runs hostile actions against ``c`` until ``stop``; see the module doc.

    ``secret`` is the cluster's peer secret (for the operator fault only;
    the stranger's own actions never use it)."""

    def __init__(
        self,
        c: ChaosCluster,
        kinds: list[str],
        rng: random.Random,
        watch: Watch,
        secret: bytes | None = None,
    ) -> None:
        for k in kinds:
            if k not in HOSTILE:
                raise ValueError(f"unknown hostile fault {k!r}; choose from {', '.join(HOSTILE)}")
        self.c = c
        self.kinds = list(kinds)
        self.rng = rng
        self.watch = watch
        self.secret = secret
        self.done: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # e.g. "peer-join: refused"
        self.log: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self._held: list[_Held] = []
        self._n = 0
        self._operator = OperatorFault(c, rng, secret, self._outcome, self.note)

    @property
    def actions(self) -> int:
        return sum(self.done.values())

    def note(self, what: str) -> None:
        self.log.append((round(time.monotonic() - self.t0, 3), what))

    def _outcome(self, kind: str, what: str) -> None:
        self.outcomes[f"{kind}: {what}"] += 1
        self.note(f"{kind}: {what}")

    async def run(self, stop: asyncio.Event) -> None:
        """Every kind once (in a random order, so a short soak sees them
        all), then kinds at random; the operator fault at most every 20 s."""
        order = list(self.kinds)
        self.rng.shuffle(order)
        last_operator = -1e9
        while not stop.is_set():
            await sleep_unless(stop, _jitter_sleep(self.rng, 0.3, 1.2))
            if stop.is_set():
                break
            if order:
                kind = order.pop()
            else:
                kind = self.rng.choice(self.kinds)
                if kind == "operator-bad-addr" and time.monotonic() - last_operator < 20:
                    continue
            if kind == "operator-bad-addr":
                last_operator = time.monotonic()
            self._n += 1
            try:
                await getattr(self, "_" + kind.replace("-", "_"))(stop)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self._outcome(kind, f"connection ended: {type(exc).__name__}")
            except Exception as exc:  # the harness's own bug: say so, keep going
                self._outcome(kind, f"HARNESS ERROR {type(exc).__name__}: {exc}"[:160])
            self.done[kind] += 1
            self._release_held(force=False)
            await self.watch.sweep()

    async def heal(self) -> None:
        """Close what is held open; remove operator members still there."""
        self._release_held(force=True)
        await self._operator.heal()

    # -- plumbing ---------------------------------------------------------------------------

    def _peer(self, nid: str) -> tuple[str, int]:
        host, _, port = self.c.members[nid].peer.rpartition(":")
        return host.strip("[]"), int(port)

    def _client(self, nid: str) -> tuple[str, int]:
        host, _, port = self.c.members[nid].client.rpartition(":")
        return host.strip("[]"), int(port)

    def _hold(self, writer: asyncio.StreamWriter, seconds: float) -> None:
        self._held.append(_Held(time.monotonic() + seconds, writer))

    def _release_held(self, force: bool) -> None:
        now = time.monotonic()
        keep: list[_Held] = []
        for h in self._held:
            if force or h.until <= now:
                h.writer.close()
            else:
                keep.append(h)
        self._held = keep
        while len(self._held) > _MAX_HELD:
            self._held.pop(0).writer.close()

    async def _greet(
        self, nid: str, kind: Kind, claim: str, to: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        """Handshake with ``nid``'s peer port as ``claim``, without the secret
        (:func:`.peer_wire.greet`)."""
        return await peer_wire.greet(self._peer(nid), self.c.cluster_id, kind, claim, to, self.rng)

    def _other_member(self, nid: str) -> str:
        others = [m for m in self.c.members if m != nid]
        return self.rng.choice(others) if others else nid

    async def _leader_or_any(self) -> str:
        if self.rng.random() < 0.75:
            with contextlib.suppress(Exception):
                return await self.c.leader(timeout=2)
        return self._target()

    def _target(self) -> str:
        return self.rng.choice(list(self.c.members))

    # -- peer port ----------------------------------------------------------------------------

    async def _peer_junk(self, stop: asyncio.Event) -> None:
        nid = self._target()
        reader, writer = await peer_wire.open_conn(self._peer(nid))
        how = self.rng.choice(["bytes", "frame", "length"])
        if how == "bytes":
            writer.write(self.rng.randbytes(self.rng.randint(1, 512)))
        elif how == "frame":
            kind = self.rng.choice([int(k) for k in Kind] + [0, 7, 255])
            writer.write(HEADER.pack(1 + 64, kind) + self.rng.randbytes(64))
        else:
            length = self.rng.choice([0, 1, 4097, 2**31, 2**32 - 1])
            writer.write(length.to_bytes(4, "big") + self.rng.randbytes(16))
        await writer.drain()
        self._outcome("peer-junk", f"{how}: {await peer_wire.answer(reader)}")
        writer.close()

    async def _peer_hello(self, stop: asyncio.Event) -> None:
        nid = self._target()
        claim = self._other_member(nid)
        reader, writer, answer = await self._greet(nid, Kind.HELLO, claim, nid)
        self._outcome("peer-hello", f"HELLO as {claim}: {answer}")
        if answer == "welcome":
            for _ in range(self.rng.randint(1, 4)):
                kind = self.rng.choice([Kind.MSG, Kind.SNAP_BEGIN, Kind.SNAP_CHUNK, Kind.CALL])
                writer.write(frame(kind, self.rng.randbytes(self.rng.randint(0, 200))))
            await writer.drain()
            await peer_wire.answer(reader)
        writer.close()

    async def _peer_forged_ae(self, stop: asyncio.Event) -> None:
        nid = self._target()
        st = await self.c.status(nid)
        if st is None:
            self._outcome("peer-forged-ae", "target not answering; skipped")
            return
        claim = st.get("leader") or self._other_member(nid)
        if claim == nid:
            claim = self._other_member(nid)
        reader, writer, answer = await self._greet(nid, Kind.HELLO, claim, nid)
        if answer == "welcome":
            term = int(st["term"]) + FORGED_TERM_STEP
            last = int(st["last_log_index"])
            cmd = encode_command(Write(Put(f"{STRANGER_KEYS}ae-{self._n}".encode(), b"forged")))
            ae = AppendEntries(
                term, claim, nid, last, int(st["term"]), (Entry(last + 1, term, cmd),), last + 1
            )
            writer.write(frame(Kind.MSG, encode_message(ae)))
            await writer.drain()
            await asyncio.sleep(0.3)
        self._outcome("peer-forged-ae", f"HELLO as {claim}: {answer}")
        writer.close()

    async def _call(self, kind: str, nid: str, claim: str, request: peer_rpc.Request) -> str:
        """One call to ``nid`` as ``claim``; a call the node served is a change
        (:meth:`Watch.served`).  Returns the answer, for the report."""
        got = await peer_wire.call(
            self._peer(nid), self.c.cluster_id, claim, request, self._n, self.rng
        )
        if got.served:
            what = f"{kind} as {claim} at {nid}: {got.text}"
            self.watch.served(_CHANGES[type(request)], what)
        return got.text

    def _claim(self, nid: str) -> str:
        """Who a call claims to be: a member other than ``nid`` (a member
        impersonated, without the secret) or a plain stranger."""
        if self.rng.random() < 0.6:
            return self._other_member(nid)
        return f"{STRANGER_IDS}{self._n}"

    async def _peer_join(self, stop: asyncio.Event) -> None:
        nid = self._target()
        me = f"{STRANGER_IDS}{self._n}"
        addr = self.rng.choice(["127.0.0.1:1", STRANGER_CLIENT_ADDR])
        req = peer_rpc.Join(me, addr, self.rng.random() < 0.5)
        answer = await self._call("peer-join", nid, me, req)
        self._outcome("peer-join", f"join as {me}: {answer}")

    async def _peer_propose(self, stop: asyncio.Event) -> None:
        # At the leader most of the time: a follower only forwards, so this
        # is where a forged write would take effect.
        nid = await self._leader_or_any()
        claim = self._claim(nid)
        what = self.rng.choice(["put", "conf"])
        req: peer_rpc.Request
        if what == "put":
            forged = Write(Put(f"{STRANGER_KEYS}p-{self._n}".encode(), b"forged"))
            req = peer_rpc.Propose(encode_command(forged), False)
        else:
            sid = f"{STRANGER_IDS}{self._n}"
            ctx = address_book.encode_context({sid: {address_book.PEER_ADDR: "127.0.0.1:1"}})
            cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, sid),), context=ctx)
            req = peer_rpc.ChangeConf(cc.encode())
        answer = await self._call("peer-propose", nid, claim, req)
        self._outcome("peer-propose", f"{what} as {claim}: {answer}")

    async def _peer_info(self, stop: asyncio.Event) -> None:
        """SetMemberInfo, the one call that changes the address book: the
        member a stranger impersonates asks to move its own client address
        to the stranger's (a node checks only that a member sets its own
        entry, so the handshake's proof is what stands in the way), or names
        another member, or gives a peer address (refused by every node)."""
        nid = await self._leader_or_any()
        claim = self._claim(nid)
        how = self.rng.choice(["own", "other", "peer-addr"])
        victim = claim if how != "other" else self._other_member(claim)
        info: dict[str, str] = {address_book.CLIENT_ADDR: STRANGER_CLIENT_ADDR}
        if how == "peer-addr":
            info[address_book.PEER_ADDR] = STRANGER_PEER_ADDR
        req = peer_rpc.SetMemberInfo(victim, address_book.encode_info(info))
        answer = await self._call("peer-info", nid, claim, req)
        self._outcome("peer-info", f"{how}: {victim} as {claim}: {answer}")

    async def _peer_transfer(self, stop: asyncio.Event) -> None:
        nid = await self._leader_or_any()
        claim = self._claim(nid)
        to = self.rng.choice([None, *self.c.members])
        answer = await self._call("peer-transfer", nid, claim, peer_rpc.TransferLeader(to, 2.0))
        self._outcome("peer-transfer", f"to {to} as {claim}: {answer}")

    async def _peer_huge(self, stop: asyncio.Event) -> None:
        nid = self._target()
        pre = self.rng.random() < 0.5
        if pre:  # before any handshake
            reader, writer = await peer_wire.open_conn(self._peer(nid))
            writer.write(HEADER.pack(_HUGE, Kind.HELLO))
            answer = "sent before a handshake"
        else:
            claim = f"{STRANGER_IDS}{self._n}"
            reader, writer, answer = await self._greet(nid, Kind.CALLER, claim, "")
            if answer != "welcome":
                self._outcome("peer-huge", f"CALLER as {claim}: {answer}")
                writer.close()
                return
            writer.write(HEADER.pack(_HUGE, Kind.CALL) + (self._n).to_bytes(8, "big"))
        sent = 0
        chunk = bytes(256 * 1024)
        try:
            while sent < _HUGE_SENT and not writer.is_closing():
                writer.write(chunk)
                async with asyncio.timeout(_IO_TIMEOUT):
                    await writer.drain()
                sent += len(chunk)
        except (OSError, TimeoutError):
            pass
        self._outcome("peer-huge", f"{answer}: {sent >> 20} MiB accepted of {_HUGE >> 20} MiB")
        self._hold(writer, self.rng.uniform(5.0, 15.0))

    # -- client port --------------------------------------------------------------------------

    async def _client_slowloris(self, stop: asyncio.Event) -> None:
        nid = self._target()
        opened = 0
        for _ in range(_SLOWLORIS_CONNS):
            try:
                _, writer = await peer_wire.open_conn(self._client(nid))
            except (OSError, TimeoutError):
                break
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            self._hold(writer, self.rng.uniform(10.0, 30.0))
            opened += 1
        self._outcome("client-slowloris", f"{opened} partial requests held")

    async def _raw_http(self, nid: str, data: bytes, body_chunks: int = 0) -> str:
        """Send ``data`` (then ``body_chunks`` x 256 KiB of body) and return the
        status line of the answer, or what happened."""
        reader, writer = await peer_wire.open_conn(self._client(nid))
        try:
            writer.write(data)
            chunk = b"x" * (256 * 1024)
            for _ in range(body_chunks):
                if writer.is_closing():
                    break
                writer.write(chunk)
                async with asyncio.timeout(_IO_TIMEOUT):
                    await writer.drain()
            await writer.drain()
            async with asyncio.timeout(5.0):
                line = await reader.readline()
            return line.decode("latin-1").strip()[:40] or "closed"
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return f"{type(exc).__name__}"
        finally:
            writer.close()

    async def _client_oversized(self, stop: asyncio.Event) -> None:
        nid = self._target()
        how = self.rng.choice(["header", "declared-body", "value"])
        if how == "header":
            data = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
            answer = await self._raw_http(nid, data)
        elif how == "declared-body":
            data = (
                b"PUT /v1/kv/junk/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1073741824\r\n\r\n"
            )
            answer = await self._raw_http(nid, data, body_chunks=16)
        else:
            value = "v" * (8 << 20)
            code, _ = await self.c.call(
                nid, "PUT", "/v1/kv/junk/big-value", {"value": value}, timeout=10
            )
            answer = str(code)
        self._outcome("client-oversized", f"{how}: {answer}")
        self._check_http(answer, f"client-oversized {how}")

    async def _client_malformed(self, stop: asyncio.Event) -> None:
        nid = self._target()
        cases: list[tuple[str, bytes]] = [
            ("junk", self.rng.randbytes(self.rng.randint(1, 300)) + b"\r\n\r\n"),
            ("request-line", b"GARBAGE / HTTP/9.9\r\n\r\n"),
            ("no-version", b"GET /v1/status\r\n\r\n"),
            ("bad-json", _put(b"{not json")),
            ("wrong-type", _put(b'{"value": 5}')),
            ("huge-revision", _put(b'{"value": "v", "if_revision": 1' + b"0" * 30 + b"}")),
            ("null-condition", _put(b'{"value": "v", "if_value": null}')),
            ("bad-percent", b"GET /v1/kv/junk/%zz HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("bad-consistency", b"GET /v1/kv/junk/a?consistency=maybe HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("bad-member", _req(b"POST", b"/v1/members", b'{"id": "", "peer_addr": 1}')),
            ("bad-transfer", _req(b"POST", b"/v1/leader/transfer", b'{"to": ["x"]}')),
        ]
        how, data = self.rng.choice(cases)
        answer = await self._raw_http(nid, data)
        self._outcome("client-malformed", f"{how}: {answer}")
        self._check_http(answer, f"client-malformed {how}")

    def _check_http(self, answer: str, what: str) -> None:
        """A 5xx other than 503/504 to a bad request is a broken contract."""
        parts = answer.split()
        code = parts[1] if len(parts) >= 2 and parts[0].startswith("HTTP/") else answer
        if code.isdigit() and code.startswith("5") and code not in ("503", "504"):
            self.watch.details.append(f"http_5xx: {what} answered {code}")
            self.watch.changes["http_5xx"] += 1

    # -- operator -----------------------------------------------------------------------------

    async def _operator_bad_addr(self, stop: asyncio.Event) -> None:
        await self._operator.bad_addr(stop, self._n)


def _req(method: bytes, path: bytes, body: bytes) -> bytes:
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _put(body: bytes) -> bytes:
    return _req(b"PUT", b"/v1/kv/junk/m", body)
