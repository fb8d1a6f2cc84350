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
    ``peer-propose``    calls as a member: a ``stranger/`` write, a SetAddr
                        pointing a member's client address at the stranger,
                        a conf change adding a ``stranger-`` learner;
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

The operator fault is not a stranger: the harness holds the cluster's peer
secret and makes the leader commit, through the peer ``conf`` call, the
bytes a member's library call ``Node.change_membership`` sends its leader
(what a buggy member, or an older version, would send).  The HTTP and CLI
paths validate addresses; this path is where an unvalidated entry can still
reach the log, so it is the one that tests "applying a committed entry must
never kill a node".  If the leader refuses it at the door, that is noted
(``refused``) and is fine too.

What the stranger may never achieve, checked by :class:`Watch` during the
run and at the end: a member it made (``stranger-*``), a member's peer or
client address it changed, a ``stranger/`` key, or a term at or above
:data:`FORGED_TERM_STEP` (no real run comes near it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from liferaft.codec import encode_message
from liferaft.core import ChangeType, ConfChange, ConfChangeSingle
from liferaft.core.messages import AppendEntries, Entry
from liferaft.kv.state import Put, SetAddr, encode_command
from liferaft.runtime import peer_rpc
from liferaft.transport import TcpTransport
from liferaft.transport._frames import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    FrameError,
    Hello,
    Kind,
    call_frame,
    control,
    frame,
    parse_reply,
)

from .cluster import ChaosCluster

HOSTILE = (
    "peer-junk",
    "peer-hello",
    "peer-forged-ae",
    "peer-join",
    "peer-propose",
    "peer-huge",
    "client-slowloris",
    "client-oversized",
    "client-malformed",
    "operator-bad-addr",
)

# Forged AppendEntries go this far above the target's term; a term this high
# anywhere means forged traffic was believed.
FORGED_TERM_STEP = 1_000_000
# Where the stranger points a member's client address (TEST-NET-3: nobody).
STRANGER_CLIENT_ADDR = "203.0.113.66:6666"
STRANGER_KEYS = "stranger/"
STRANGER_IDS = "stranger-"
OPERATOR_IDS = "oops-"
BAD_ADDRESSES = ("127.0.0.1", "junk", "127.0.0.1:notaport", "", "[::1", "10.0.0.1:99999")

# Bounds on what the stranger holds open at once (the harness's own fds).
_SLOWLORIS_CONNS = 48
_MAX_HELD = 96
_HUGE = 16 * 1024 * 1024 - 64  # just under the default frame limit
_HUGE_SENT = 4 * 1024 * 1024
_IO_TIMEOUT = 3.0


def _jitter_sleep(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)


@dataclass
class Watch:
    """What strangers must never change, and what the harness saw.

    ``changes`` counts each kind of change once per distinct thing changed
    (``membership``, ``client_addr``, ``key``, ``term``); ``details`` says
    what, for the report."""

    c: ChaosCluster
    changes: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def _found(self, kind: str, what: str, key: str | None = None) -> None:
        key = key or what
        if key not in self._seen:
            self._seen.add(key)
            self.changes[kind] += 1
            self.details.append(f"{kind}: {what}")

    def check_status(self, nid: str, st: dict[str, Any]) -> None:
        """One node's /v1/status against what only the harness may change."""
        if int(st.get("term", 0)) >= FORGED_TERM_STEP:
            self._found(
                "term", f"{nid} at term {st['term']} (forged AppendEntries believed)", f"term {nid}"
            )
        for m in st.get("members", []):
            mid = str(m.get("id", ""))
            known = self.c.members.get(mid)
            # Keyed by what changed, not by who saw it: one forged member
            # seen by five nodes is one change.
            if known is None:
                if not mid.startswith(OPERATOR_IDS):
                    self._found("membership", f"{nid} lists member {mid!r}", f"member {mid}")
                continue
            peer, client = m.get("peer_addr"), m.get("client_addr")
            if peer not in ("", known.peer):
                self._found(
                    "membership", f"{nid} lists {mid} at peer address {peer!r}", f"{mid} {peer}"
                )
            if client not in ("", known.client):
                self._found(
                    "client_addr",
                    f"{nid} lists {mid} at client address {client!r}",
                    f"{mid} client {client}",
                )

    async def sweep(self) -> None:
        """Every reachable node's status, checked."""
        for nid in list(self.c.members):
            st = await self.c.status(nid)
            if st is not None:
                self.check_status(nid, st)

    async def final(self) -> None:
        """After healing: status everywhere, and no ``stranger/`` key anywhere."""
        await self.sweep()
        for nid in list(self.c.members):
            path = f"/v1/kv?prefix={STRANGER_KEYS}&limit=100&consistency=stale"
            code, body = await self.c.call(nid, "GET", path, timeout=5)
            if code == 200 and isinstance(body, dict):
                for item in body.get("items", []):
                    key = item.get("key")
                    self._found("key", f"{nid} holds {key!r}", f"key {key}")


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
        self._oops: set[str] = set()  # operator members not removed yet

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
            await _sleep(stop, _jitter_sleep(self.rng, 0.3, 1.2))
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
        for nid in sorted(self._oops):
            await self._remove_member(nid)

    # -- plumbing ---------------------------------------------------------------------------

    def _peer(self, nid: str) -> tuple[str, int]:
        host, _, port = self.c.members[nid].peer.rpartition(":")
        return host.strip("[]"), int(port)

    def _client(self, nid: str) -> tuple[str, int]:
        host, _, port = self.c.members[nid].client.rpartition(":")
        return host.strip("[]"), int(port)

    async def _open(
        self, where: tuple[str, int]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(_IO_TIMEOUT):
            return await asyncio.open_connection(*where)

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
        """Open a connection to ``nid``'s peer port and send a HELLO or CALLER
        claiming ``claim``; returns the reader, the writer and what came back
        (``welcome``, ``refused: ...`` or ``closed``)."""
        reader, writer = await self._open(self._peer(nid))
        hello = Hello(MAGIC, PROTOCOL_VERSION, self.c.cluster_id, claim, to)
        writer.write(control(kind, hello))
        await writer.drain()
        return reader, writer, await _answer(reader)

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
        reader, writer = await self._open(self._peer(nid))
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
        self._outcome("peer-junk", f"{how}: {await _answer(reader)}")
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
            await _answer(reader)
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
            cmd = encode_command(Put(f"{STRANGER_KEYS}ae-{self._n}", "forged"))
            ae = AppendEntries(
                term, claim, nid, last, int(st["term"]), (Entry(last + 1, term, cmd),), last + 1
            )
            writer.write(frame(Kind.MSG, encode_message(ae)))
            await writer.drain()
            await asyncio.sleep(0.3)
        self._outcome("peer-forged-ae", f"HELLO as {claim}: {answer}")
        writer.close()

    async def _call(self, nid: str, claim: str, request: peer_rpc.Request) -> str:
        """One call on a CALLER connection claiming ``claim``; what came back."""
        reader, writer, answer = await self._greet(nid, Kind.CALLER, claim, "")
        try:
            if answer != "welcome":
                return answer
            writer.writelines(call_frame(self._n, peer_rpc.encode(request)))
            await writer.drain()
            return await _answer(reader, timeout=5.0)
        finally:
            writer.close()

    async def _peer_join(self, stop: asyncio.Event) -> None:
        nid = self._target()
        me = f"{STRANGER_IDS}{self._n}"
        addr = self.rng.choice(["127.0.0.1:1", STRANGER_CLIENT_ADDR])
        answer = await self._call(nid, me, peer_rpc.Join(me, addr, self.rng.random() < 0.5))
        self._outcome("peer-join", f"join as {me}: {answer}")

    async def _peer_propose(self, stop: asyncio.Event) -> None:
        # At the leader most of the time: a follower only forwards, so this
        # is where a forged write would take effect.
        nid = await self._leader_or_any()
        claim = self._other_member(nid)
        what = self.rng.choice(["put", "setaddr", "conf"])
        req: peer_rpc.Request
        if what == "put":
            forged = Put(f"{STRANGER_KEYS}p-{self._n}", "forged")
            req = peer_rpc.Propose(encode_command(forged), False)
        elif what == "setaddr":
            victim = self.rng.choice(list(self.c.members))
            req = peer_rpc.Propose(encode_command(SetAddr(victim, STRANGER_CLIENT_ADDR)), False)
        else:
            sid = f"{STRANGER_IDS}{self._n}"
            ctx = json.dumps({sid: {"addr": "127.0.0.1:1"}}).encode()
            cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, sid),), context=ctx)
            req = peer_rpc.ChangeConf(cc.encode())
        answer = await self._call(nid, claim, req)
        self._outcome("peer-propose", f"{what} as {claim}: {answer}")

    async def _peer_huge(self, stop: asyncio.Event) -> None:
        nid = self._target()
        pre = self.rng.random() < 0.5
        if pre:  # before any handshake
            reader, writer = await self._open(self._peer(nid))
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
                _, writer = await self._open(self._client(nid))
            except (OSError, TimeoutError):
                break
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            self._hold(writer, self.rng.uniform(10.0, 30.0))
            opened += 1
        self._outcome("client-slowloris", f"{opened} partial requests held")

    async def _raw_http(self, nid: str, data: bytes, body_chunks: int = 0) -> str:
        """Send ``data`` (then ``body_chunks`` x 256 KiB of body) and return the
        status line of the answer, or what happened."""
        reader, writer = await self._open(self._client(nid))
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
        try:
            leader = await self.c.leader(timeout=5)
        except Exception:
            self._outcome("operator-bad-addr", "no leader; skipped")
            return
        nid = f"{OPERATOR_IDS}{self._n}"
        addr = self.rng.choice(BAD_ADDRESSES)
        ctx = json.dumps({nid: {"addr": addr}}).encode()
        cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, nid),), context=ctx)
        t = await self._member_transport(self._other_member(leader))
        answer = "no answer"
        for _ in range(5):  # another change (churn) may be in flight
            try:
                req = peer_rpc.encode(peer_rpc.ChangeConf(cc.encode()))
                raw = await t.call_address(self.c.members[leader].peer, req, 5.0)
                rep = peer_rpc.decode_reply(raw)
                answer = "ok" if isinstance(rep, peer_rpc.Accepted) else repr(rep)[:120]
                if isinstance(rep, peer_rpc.Refused):
                    answer = f"refused ({rep.message})"[:120]
                    if "in flight" in answer or "not yet applied" in answer:
                        await _sleep(stop, 1.0)
                        continue
                break
            except Exception as exc:  # CallError, TimeoutError, a bad reply
                answer = f"{type(exc).__name__}: {exc}"[:120]
                await _sleep(stop, 1.0)
        await t.close()
        self._outcome("operator-bad-addr", f"add {nid} at {addr!r} via {leader}: {answer}")
        if answer == "ok":
            self._oops.add(nid)
            # The cluster must keep serving with it committed; the operator
            # notices the mistake a little later and removes the member.
            await _sleep(stop, self.rng.uniform(2.0, 5.0))
            await self._remove_member(nid)

    async def _member_transport(self, as_member: str) -> TcpTransport:
        """A started transport that proves membership with the cluster's peer
        secret, as the member ``as_member``; it only makes calls (it listens
        on an ephemeral port, which no node dials, and serves nothing)."""
        kw: dict[str, Any] = {}
        if self.secret is not None:
            kw["peer_secret"] = self.secret
        for listen in ("127.0.0.1:0", "0.0.0.0:0"):  # lo may be down in a namespace
            t = TcpTransport(as_member, self.c.cluster_id, listen, **kw)
            try:
                await t.start(_CallsOnly())
                return t
            except OSError:
                await t.close()
        raise OSError("the operator's transport could not listen anywhere")

    async def _remove_member(self, nid: str) -> None:
        for _ in range(20):
            via = self._target()
            code, _ = await self.c.call(via, "DELETE", f"/v1/members/{nid}", timeout=5)
            if code in (200, 404):
                self._oops.discard(nid)
                self.note(f"operator removed {nid} ({code})")
                return
            await asyncio.sleep(0.5)
        self.note(f"operator could not remove {nid}")


class _CallsOnly:
    """The operator transport's handler: it makes calls and takes nothing."""

    def deliver(self, msg: Any) -> None:
        pass

    def unreachable(self, peer: str) -> None:
        pass

    def snapshot_source(self, msg: Any) -> Any:
        raise RuntimeError("the operator sends no snapshots")

    def snapshot_sink(self, msg: Any) -> Any:
        raise RuntimeError("the operator takes no snapshots")

    def snapshot_status(self, peer: str, ok: bool) -> None:
        pass

    async def handle_call(self, frm: str, payload: bytes, known_peer: bool) -> bytes:
        raise PermissionError("the operator serves no calls")


def _req(method: bytes, path: bytes, body: bytes) -> bytes:
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _put(body: bytes) -> bytes:
    return _req(b"PUT", b"/v1/kv/junk/m", body)


async def _answer(reader: asyncio.StreamReader, timeout: float = _IO_TIMEOUT) -> str:
    """What the node answered on the peer port: ``welcome``, ``refused: ...``,
    ``reply ok|error ...`` for a call, ``closed`` or ``silent``."""
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readexactly(HEADER.size)
            length, kind = HEADER.unpack(head)
            body = await reader.readexactly(min(max(length - 1, 0), 1 << 20))
    except TimeoutError:
        return "silent"
    except (asyncio.IncompleteReadError, OSError):
        return "closed"
    if kind == Kind.WELCOME:
        return "welcome"
    if kind == Kind.REFUSE:
        with contextlib.suppress(Exception):
            return f"refused: {msgspec.msgpack.decode(body)[0]}"[:120]
        return "refused"
    if kind == Kind.REPLY:
        try:
            _, ok, payload = parse_reply(memoryview(body))
        except FrameError:
            return f"frame kind {kind} (malformed)"
        try:
            raw = bytes(payload)
            text = repr(peer_rpc.decode_reply(raw)) if ok else raw.decode()
        except Exception:
            text = repr(bytes(payload[:60]))
        return f"reply {'ok' if ok else 'error'} {text}"[:160]
    return f"frame kind {kind}"


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
