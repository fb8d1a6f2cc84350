"""The coordination workload of the soak: revisions, transactions and leases.

Every request is recorded as the revision checker reads it
(:mod:`liferaft.verify.rev_history`): an ``ok`` answer with the store
revision its response named, ``fail`` for a 503 (nothing applied), ``info``
for a write with no answer or a 504 (it may apply later, or never).  A read
with no answer tells nothing and is not recorded.  Requests go through
``c.api`` (:mod:`.api`): the ``/v1`` routes named below, or with ``--api
etcd`` etcd's calls, whose answers come back in the same shapes.

- :func:`rev_client`: on the keys ``x/0`` .. ``x/3``, reads of one key and
  of the prefix (``GET /v1/kv?key=|prefix=``, whose page carries the
  store's revision; the single-key ``GET /v1/kv/{key}`` answers with the
  key's ``mod_revision`` only, so it cannot place a read), plain puts,
  compare-and-swap transactions that move two keys at once when one key's
  ``mod_revision`` is what the client last read (else a read of it), and
  delete transactions.  Values are unique per write: the checkers pin an
  indeterminate write by its value.
- :class:`LeaseHolder`: grants a lease, puts keys under ``l/`` attached to
  it, keeps it alive with ``POST /v1/lease/{id}/keepalive`` to random
  nodes, reads its keys while it holds the lease (a key gone is an early
  expiry unless the lease lapsed), then "dies" abruptly (the keep-alives
  stop, as when a holder process is killed with kill -9) or revokes the
  lease, and polls until its keys are gone.  Each lease becomes a
  :class:`~liferaft.verify.leases.LeaseRecord`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from liferaft.verify.leases import KeyGone, LeaseRecord
from liferaft.verify.rev_history import KV, Cond, OpMaker, RevOp, Step, get, put, scan

from .api import Query
from .cluster import ChaosCluster

#: The keys of the transaction workload (watched as the prefix ``x/``).
TXN_PREFIX = "x/"
#: Where lease holders put their keys (watched as the prefix ``l/``).
LEASE_PREFIX = "l/"


@dataclass
class RevLog:
    """The revisioned history of a run, and answers the contract does not allow."""

    ops: OpMaker = field(default_factory=OpMaker)
    unexpected: Counter[str] = field(default_factory=Counter)

    def write(
        self, proc: int, t0: float, st: int, body: Any, what: str, **kw: Any
    ) -> RevOp | None:
        """Record a write from its answer: 200 ok (at the response's
        ``revision``), 503 fail, 0 or 504 info; anything else is unexpected
        (and info: the harness cannot tell what happened)."""
        t1 = time.monotonic()
        if st == 200 and isinstance(body, dict) and isinstance(body.get("revision"), int):
            return self.ops(proc, t0, t1, "ok", body["revision"], **kw)
        if st == 503:
            return self.ops(proc, t0, t1, "fail", **kw)
        if st not in (0, 504):
            self.unexpected[f"{what} {st} {body}"[:120]] += 1
        return self.ops(proc, t0, None, "info", **kw)

    def read(self, proc: int, t0: float, st: int, body: Any, what: str, **kw: Any) -> None:
        """Record a read that answered 200 (``kw`` made from its page)."""
        if st == 200:
            self.ops(proc, t0, time.monotonic(), "ok", body["revision"], **kw)
        elif st not in (0, 503, 504):
            self.unexpected[f"{what} {st} {body}"[:120]] += 1

    @property
    def history(self) -> list[RevOp]:
        return self.ops.made


def kv_of(item: dict[str, Any]) -> KV:
    """A key as a page or a transaction result returned it."""
    return KV(item["key"], item["value"], item["revision"], item.get("create_revision", 0),
              item.get("version", 0), item.get("lease", 0))  # fmt: skip


async def read_key(
    c: ChaosCluster, log: RevLog, proc: int, nid: str, key: str, consistency: str
) -> KV | None | bool:
    """A read of one key through the range route, recorded: the key's KV,
    None if absent, False if there was no answer."""
    t0 = time.monotonic()
    st, body = await c.api.range(nid, Query(key, consistency=consistency))
    if st != 200 or not isinstance(body, dict):
        log.read(proc, t0, st, body, "read")
        return False
    kvs = [kv_of(i) for i in body.get("items", [])]
    got = kvs[0] if kvs else None
    meta = {} if got is None else {"create_revision": got.create_revision,
                                   "version": got.version, "lease": got.lease}  # fmt: skip
    log.read(proc, t0, st, body, "read",
             **get(key, None if got is None else got.value, got.mod_revision if got else 0, **meta))
    return got


async def rev_client(
    c: ChaosCluster,
    log: RevLog,
    proc: int,
    rng: random.Random,
    stop: asyncio.Event,
    keys: int = 4,
    consistency: str = "linearizable",
) -> None:
    """Reads, scans, puts, CAS and delete transactions on ``x/0..`` (module docstring)."""
    names = [f"{TXN_PREFIX}{i}" for i in range(keys)]
    mods: dict[str, int] = {}  # the mod_revision this client last read (0: absent)
    n = 0
    while not stop.is_set():
        nid = rng.choice(list(c.members))
        key, other = rng.sample(names, 2)
        r = rng.random()
        n += 1
        value = f"t{proc}-{n}"
        t0 = time.monotonic()
        if r < 0.3:
            got = await read_key(c, log, proc, nid, key, consistency)
            if got is not False:
                mods[key] = got.mod_revision if isinstance(got, KV) else 0
        elif r < 0.4:
            st, body = await c.api.range(nid, Query(TXN_PREFIX, True, consistency))
            kvs = [kv_of(i) for i in body.get("items", [])] if st == 200 else []
            log.read(proc, t0, st, body, "scan", **scan(TXN_PREFIX, kvs))
        elif r < 0.6:
            st, body = await c.api.put(nid, key, value)
            log.write(proc, t0, st, body, "put", **put(key, value))
        elif r < 0.9:
            await _cas(c, log, proc, nid, key, other, mods.get(key, 0), value)
        else:
            await _delete(c, log, proc, nid, key)
        if c.members and rng.random() < 0.02:
            await asyncio.sleep(0.05)  # now and then let the others in


async def _cas(
    c: ChaosCluster, log: RevLog, proc: int, nid: str, key: str, other: str, mod: int, value: str
) -> None:
    """If ``key``'s mod_revision is ``mod``: put ``value`` to it and to
    ``other`` at one revision; else read ``key``."""
    body = {
        "compare": [{"key": key, "target": "mod_revision", "op": "=", "value": mod}],
        "success": [{"put": {"key": key, "value": value}},
                    {"put": {"key": other, "value": value + "b"}}],
        "failure": [{"range": {"key": key}}],
    }  # fmt: skip
    cond = (Cond(key, "mod_revision", "=", mod),)
    success = (Step("put", key, value=value), Step("put", other, value=value + "b"))
    t0 = time.monotonic()
    st, got = await c.api.txn(nid, body)
    failure: tuple[Step, ...] = (Step("range", key),)
    succeeded = True
    if st == 200 and isinstance(got, dict):
        succeeded = bool(got.get("succeeded"))
        if not succeeded:
            page = got["results"][0]["range"]
            failure = (Step("range", key, kvs=tuple(kv_of(i) for i in page.get("items", []))),)
    log.write(proc, t0, st, got, "txn", compare=cond, success=success, failure=failure,
              succeeded=succeeded)  # fmt: skip


async def _delete(c: ChaosCluster, log: RevLog, proc: int, nid: str, key: str) -> None:
    """A delete of ``key`` as a transaction: its answer names the revision
    and the count even when nothing was there (a plain DELETE's 404 names
    neither)."""
    t0 = time.monotonic()
    st, got = await c.api.txn(nid, {"success": [{"delete": {"key": key}}]})
    deleted = None
    if st == 200 and isinstance(got, dict):
        deleted = int(got["results"][0]["delete"]["deleted"])
    log.write(proc, t0, st, got, "delete", success=(Step("delete", key, deleted=deleted),))


# -- leases ----------------------------------------------------------------------------------


@dataclass
class LeaseHolder:
    """One client that holds leases, one after another (module docstring)."""

    c: ChaosCluster
    log: RevLog
    proc: int
    rng: random.Random
    keys: int = 2
    records: list[LeaseRecord] = field(default_factory=list)
    #: Every key this holder attached to a lease: lease id, by key.
    attached: dict[str, int] = field(default_factory=dict)
    deaths: int = 0
    revokes: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await self.one(n, stop)

    async def one(self, n: int, stop: asyncio.Event) -> None:
        """Grant, attach, keep alive for a while, then die or revoke; wait
        until the keys are gone (bounded)."""
        c, rng = self.c, self.rng
        t0 = time.monotonic()
        st, body = await c.api.lease_grant(rng.choice(list(c.members)), 3)
        if st != 200 or not isinstance(body, dict):
            if st not in (0, 503, 504):
                self.log.unexpected[f"lease grant {st} {body}"[:120]] += 1
            await asyncio.sleep(0.2)
            return
        lease, ttl = int(body["id"]), float(body["ttl"])
        granted = (t0, time.monotonic())
        acks: list[tuple[float, float]] = []
        gone: dict[str, float] = {}
        keys = [f"{LEASE_PREFIX}h{self.proc}-{n}-{i}" for i in range(self.keys)]
        live: list[str] = []  # attached, or maybe attached (no answer)
        present: set[str] = set()  # known attached: only these can be seen gone
        for k in keys:
            t = time.monotonic()
            v = f"{k}@{lease}"
            st, body = await c.api.put(rng.choice(list(c.members)), k, v, lease=lease)
            # The lease expired meanwhile: refused, nothing applied.
            code = 503 if lease_gone(st, body) else st
            self.log.write(self.proc, t, code, body, "lease put", **put(k, v, lease))
            if st in (0, 200, 504):
                self.attached[k] = lease
                live.append(k)
            if st == 200:
                present.add(k)
        hold_until = time.monotonic() + rng.uniform(2.0, 8.0)
        lapsed = False
        while time.monotonic() < hold_until and not stop.is_set() and not lapsed:
            await asyncio.sleep(ttl / 6)
            t = time.monotonic()
            st, body = await c.api.lease_keepalive(rng.choice(list(c.members)), lease, ttl / 3)
            if st == 200:
                acks.append((t, time.monotonic()))
            elif lease_gone(st, body):
                lapsed = True  # expired: a keep-alive came too late (the checker judges)
            elif st not in (0, 503, 504):
                self.log.unexpected[f"keepalive {st} {body}"[:120]] += 1
            await self._look(live, present, gone)
        revoked = None
        if not lapsed and rng.random() < 0.3:
            revoked = time.monotonic()
            st, body = await c.api.lease_revoke(rng.choice(list(c.members)), lease)
            if not lease_gone(st, body):  # already expired: nothing to record
                self.log.write(self.proc, revoked, st, body, "revoke", revoke=lease)
            self.revokes += 1
        else:
            self.deaths += 1  # kill -9 of the holder: its keep-alives just stop
        # Until every key is seen gone (a TTL, an election, and some).
        deadline = time.monotonic() + 3 * ttl + 10
        while present - set(gone) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            await self._look(live, present, gone)
        self.records.append(LeaseRecord(
            lease, ttl, granted, tuple(acks), revoked,
            tuple(KeyGone(k, t) for k, t in sorted(gone.items()))))  # fmt: skip

    async def _look(self, live: list[str], present: set[str], gone: dict[str, float]) -> None:
        """Read each key not yet seen gone (linearizable, recorded).  A key
        whose put had no answer counts only once it was seen present: absent
        before, it may never have been written."""
        for k in live:
            if k in gone:
                continue
            got = await read_key(self.c, self.log, self.proc, self.rng.choice(list(self.c.members)),
                                 k, "linearizable")  # fmt: skip
            if isinstance(got, KV):
                present.add(k)
            elif got is None and k in present:
                gone[k] = time.monotonic()


def lease_gone(st: int, body: Any) -> bool:
    """The answer says the lease no longer exists: a 404 with the code
    ``lease_not_found`` (a put, a revoke or a keep-alive naming it)."""
    return st == 404 and isinstance(body, dict) and body.get("error") == "lease_not_found"


def lease_records(holders: list[LeaseHolder], watch_gone: dict[str, float]) -> list[LeaseRecord]:
    """The holders' records, each key's gone time the earliest of the
    holder's own read and a watcher's delete event."""
    out = []
    for h in holders:
        for rec in h.records:
            seen = {g.key: g.seen for g in rec.gone}
            for k, lid in h.attached.items():
                if lid == rec.id and k in watch_gone:
                    seen[k] = min(seen.get(k, watch_gone[k]), watch_gone[k])
            gone = tuple(KeyGone(k, t) for k, t in sorted(seen.items()))
            out.append(LeaseRecord(rec.id, rec.ttl, rec.granted, rec.keepalives, rec.revoked,
                                   gone))  # fmt: skip
    return out
