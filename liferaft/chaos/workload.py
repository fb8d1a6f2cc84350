"""Client workloads that record a history for the checker.

Every client is a sequence of operations against a random node's API
(``c.api``: liferaft's /v1 or etcd's gRPC, :mod:`.api`; followers forward
writes), each timed on the harness's monotonic clock and
classified by the API contract (docs/kv.md; docs/architecture.md, "Outcomes"):

- 200 (and 404 for a read, 412 for a CAS): ``ok``, with its output;
- 503: ``fail``: nothing was applied, the contract says so;
- 504, a dropped connection or no answer: ``info`` for a write (it may have
  been applied, now or later), ``fail`` for a read (a read that returned
  nothing tells nothing);
- any other status is a harness error, counted and shown.

Register workload: reads, writes of unique values and CAS on a few keys;
checked for linearizability (liferaft.verify, Register model).  Set
workload: each add writes a unique key under ``set/``; at the end every
acknowledged add must be present on every node, and nothing that was never
attempted.

Both also go into the revisioned history of the run
(:class:`~liferaft.chaos.coord.RevLog`) when one is given: every write with
the revision its answer named, and half the register reads through the
range route (``GET /v1/kv?key=``), whose page names the store revision it
was read at (the single-key route names only the key's ``mod_revision``,
which cannot place a read; a 412 names no revision and changed nothing, so
it stays out).  A write the history leaves out would be a gap, after which
the revision checker can hold nothing against a read.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from liferaft.verify.history import Op
from liferaft.verify.rev_history import KV, cas, put

from .api import Query
from .cluster import ChaosCluster
from .coord import RevLog, read_key


@dataclass
class Recorder:
    ops: list[Op] = field(default_factory=list)
    unexpected: Counter[str] = field(default_factory=Counter)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, op: Op) -> None:
        self.ops.append(op)


async def register_client(
    c: ChaosCluster,
    rec: Recorder,
    proc: int,
    keys: list[str],
    rng: random.Random,
    stop: asyncio.Event,
    consistency: str = "linearizable",
    rev: RevLog | None = None,
) -> None:
    seen: dict[str, Any] = {}
    n = 0
    while not stop.is_set():
        nid = rng.choice(list(c.members))
        key = rng.choice(keys)
        r = rng.random()
        t0 = time.monotonic()
        if r < 0.25 and rev is not None:
            got = await read_key(c, rev, proc, nid, key, consistency)
            if got is not False:
                value = got.value if isinstance(got, KV) else None
                seen[key] = value
                rec.add(Op(next(rec.ids), proc, key, "read", None, value, t0, time.monotonic()))
            continue
        if r < 0.5:
            st, body = await c.api.get(nid, key, consistency)
            t1 = time.monotonic()
            if st == 200:
                seen[key] = body["value"]
                rec.add(Op(next(rec.ids), proc, key, "read", None, body["value"], t0, t1))
            elif st == 404:
                seen[key] = None
                rec.add(Op(next(rec.ids), proc, key, "read", None, None, t0, t1))
            elif st not in (0, 503, 504):
                rec.unexpected[f"read {st} {body}"[:120]] += 1
            if st == 0:  # no answer (a dead node): do not spin on it
                await asyncio.sleep(0.05)
            continue
        n += 1
        value = f"p{proc}-{n}"
        inp: Any
        if r < 0.8 or seen.get(key) is None:
            st, body = await c.api.put(nid, key, value)
            f, inp, out = "write", value, None
            ok = st == 200
        else:
            old = seen[key]
            st, body = await c.api.put(nid, key, value, if_value=old)
            f, inp = "cas", (old, value)
            ok = st in (200, 412)
            out = st == 200
        t1 = time.monotonic()
        if rev is not None and not (f == "cas" and st == 412):
            shape = put(key, value) if f == "write" else cas(key, seen[key], value, True)
            # Another status is counted below; to the history it is unknown.
            rev.write(proc, t0, st if st in (200, 503, 504) else 0, body, f, **shape)
        if ok:
            rec.add(Op(next(rec.ids), proc, key, f, inp, out, t0, t1))
        elif st == 503:
            rec.add(Op(next(rec.ids), proc, key, f, inp, None, t0, t1, "fail"))
        elif st in (0, 504):
            rec.add(Op(next(rec.ids), proc, key, f, inp, None, t0, None, "info"))
            if st == 0:
                await asyncio.sleep(0.05)
        else:
            rec.unexpected[f"{f} {st} {body}"[:120]] += 1
            rec.add(Op(next(rec.ids), proc, key, f, inp, None, t0, None, "info"))


@dataclass
class SetState:
    attempted: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    ops: int = 0


async def set_client(
    c: ChaosCluster,
    st: SetState,
    rec: Recorder,
    proc: int,
    rng: random.Random,
    stop: asyncio.Event,
    rev: RevLog | None = None,
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        elem = f"{proc}-{n}"
        st.attempted.add(elem)
        st.ops += 1
        nid = rng.choice(list(c.members))
        t0 = time.monotonic()
        code, body = await c.api.put(nid, f"set/{elem}", elem)
        if rev is not None:
            known = code if code in (200, 503, 504) else 0  # another is counted below
            rev.write(proc, t0, known, body, "add", **put(f"set/{elem}", elem))
        if code == 200:
            st.acked.add(elem)
        elif code not in (0, 503, 504):
            rec.unexpected[f"add {code} {body}"[:120]] += 1
        await asyncio.sleep(0.05)  # at most 20 adds/s per client: a bounded set


async def final_reads(
    c: ChaosCluster,
    rec: Recorder,
    keys: list[str],
    proc: int,
    set_procs: list[int],
    budget: float = 60.0,
) -> dict[str, set[str] | None]:
    """After healing: a linearizable read of every register key from every
    node (into the history), and the set's content as each node sees it.

    Each read is retried a few times; past ``budget`` seconds in all (a
    cluster that stopped serving), no more retries: the sets still unread
    are None."""
    sets: dict[str, set[str] | None] = {}
    deadline = time.monotonic() + budget

    def tries() -> range:
        return range(20 if time.monotonic() < deadline else 1)

    for nid in c.members:
        for key in keys:
            for _ in tries():
                t0 = time.monotonic()
                st, body = await c.api.get(nid, key, "linearizable", timeout=5)
                t1 = time.monotonic()
                if st in (200, 404):
                    out = body["value"] if st == 200 else None
                    rec.add(Op(next(rec.ids), proc, key, "read", None, out, t0, t1))
                    break
                await asyncio.sleep(0.5)
        got: set[str] | None = set()
        for p in set_procs:  # one listing per client keeps each under the limit
            for _ in tries():
                st, body = await c.api.range(nid, Query(f"set/{p}-", True, limit=10000), 10)
                if st == 200:
                    assert got is not None
                    got |= {i["key"][len("set/") :] for i in body["items"]}
                    break
                await asyncio.sleep(0.5)
            else:
                got = None
                break
        sets[nid] = got
    return sets
