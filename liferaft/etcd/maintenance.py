"""etcd's Maintenance service: Status, Alarm, Snapshot, MoveLeader and HashKV
(docs/etcd.md, "Maintenance").

- **Status** is this node's view, as etcd's: no read barrier, answered
  without a leader (``errors`` then says "etcdserver: no leader").
- **Alarm**: liferaft-kv raises no alarms (LMDB grows its map instead of
  hitting a quota; a disk that refuses writes shows in Status's
  ``errors``), so GET lists none and DEACTIVATE has nothing to clear.
  ACTIVATE is refused: an alarm that changed nothing would be a lie.
- **Snapshot** streams the node's checkpoint, exactly the bytes of
  :meth:`KVMachine.checkpoint_chunks <liferaft.kv.machine.KVMachine.checkpoint_chunks>`
  cut into blobs, so a file written by ``etcdctl snapshot save`` is a
  liferaft checkpoint that ``liferaft snapshot restore`` reads (keep it so).
  The checkpoint is padded to 32 modulo 512 bytes, the only check etcdctl
  3.4 makes of the file.  It is read in a worker thread a chunk at a time
  as the client takes them: the database is never in memory whole.  etcd
  appends a SHA-256 of the copy as a last blob; liferaft's checkpoint
  carries its own length and digest instead (liferaft/kv/mvcc/checkpoint.py).
- **MoveLeader** names the target by etcd member id; etcd takes it only on
  the leader, liferaft-kv on any member (a follower asks the leader).
- **HashKV**: a CRC-32 of the history a read can see up to a revision
  (liferaft/kv/mvcc/hashkv.py), equal on replicas with equal histories.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from liferaft.kv.mvcc.hashkv import hash_kv
from liferaft.kv.service import KVService

from . import errors
from .calls import Call
from .context import EtcdContext
from .proto import rpc_pb2 as pb
from .version import ETCD_VERSION

#: etcdctl 3.4's ``snapshot save`` refuses a stream whose length is not 32
#: modulo 512 ("sha256 checksum not found"): a checkpoint padded to it.
ETCDCTL_ALIGN = (512, 32)
#: What a checkpoint adds to the copy it frames: a 5-byte head, a 4-byte
#: length per frame (one per 64 KiB chunk), the padding and a 44-byte
#: trailer.  Only the estimate of ``remaining_bytes`` uses it.
_FRAMING = 5 + 44 + 4 + 512
_CHUNK = 64 * 1024

STORAGE_FAILED = "liferaft: storage failed (this node's disk refuses writes)"


#: Snapshot streams one node serves at once.  Each holds an LMDB read
#: transaction (of 256 readers), a copy thread and its pipe for as long as
#: its client takes to read it: a third is "too many requests".
MAX_SNAPSHOTS = 2


class _NodeLoad:
    """What a node's Maintenance calls have running (one per KV service)."""

    def __init__(self) -> None:
        #: One hash at a time: each walks the whole store in a thread, and a
        #: client asking for many at once must not take every core.
        self.hashing = asyncio.Semaphore(1)
        self.snapshots = 0


_load: weakref.WeakKeyDictionary[KVService, _NodeLoad] = weakref.WeakKeyDictionary()


def _load_of(ctx: EtcdContext) -> _NodeLoad:
    if ctx.service not in _load:
        _load[ctx.service] = _NodeLoad()
    return _load[ctx.service]


# -- Status ------------------------------------------------------------------------------


async def status(ctx: EtcdContext, r: pb.StatusRequest) -> pb.StatusResponse:
    svc = ctx.service
    st = svc.status()
    machine = svc.machine
    size, in_use = await asyncio.to_thread(lambda: (machine.db_size(), machine.db_size_in_use()))
    out = pb.StatusResponse(
        header=ctx.header(st.revision),
        version=ETCD_VERSION,
        dbSize=size,
        dbSizeInUse=in_use,
        leader=ctx.member_of(st.leader) if st.leader else 0,
        raftIndex=st.commit_index,
        raftTerm=st.term,
        raftAppliedIndex=st.applied_index,
        isLearner=any(m.id == st.id and not m.voter for m in st.members),
    )
    if not st.leader:
        out.errors.append(errors.NO_LEADER.message)
    if not st.storage_ok:
        out.errors.append(STORAGE_FAILED)
    return out


# -- Alarm -------------------------------------------------------------------------------


async def alarm(ctx: EtcdContext, r: pb.AlarmRequest) -> pb.AlarmResponse:
    if r.action in (pb.AlarmRequest.GET, pb.AlarmRequest.DEACTIVATE):
        return pb.AlarmResponse(header=ctx.header())
    if r.action == pb.AlarmRequest.ACTIVATE:
        raise errors.EtcdError(
            errors.Code.UNIMPLEMENTED,
            "liferaft-kv: alarms cannot be raised (liferaft-kv has no space quota to enforce)",
        )
    raise errors.EtcdError(errors.Code.INVALID_ARGUMENT, "etcdserver: unknown alarm action")


# -- Snapshot ----------------------------------------------------------------------------


class _ThreadedChunks:
    """A blocking chunk iterator read one chunk at a time in a worker thread.

    A chunk being read when the stream is abandoned is waited for before
    the iterator is closed: a generator cannot be closed from one thread
    while it runs in another."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending: asyncio.Future[bytes | None] | None = None

    async def next(self) -> bytes | None:
        """The next chunk; None at the end."""
        self._pending = asyncio.ensure_future(asyncio.to_thread(next, self._chunks, None))
        chunk = await asyncio.shield(self._pending)
        self._pending = None
        return chunk

    async def close(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
        # Closing breaks the copy's pipe and joins its thread: not on the loop.
        close = getattr(self._chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


async def snapshot(ctx: EtcdContext, r: pb.SnapshotRequest) -> AsyncIterator[pb.SnapshotResponse]:
    """The checkpoint as blobs.  ``remaining_bytes`` is an estimate from the
    store's size (a copy's length is known only at its end) that stays
    above 0 until the last blob, which has 0, as etcd's last one."""
    load = _load_of(ctx)
    if load.snapshots >= MAX_SNAPSHOTS:
        raise errors.TOO_MANY_REQUESTS
    load.snapshots += 1
    blobs = _snapshot(ctx)
    try:
        async for resp in blobs:
            yield resp
    finally:
        try:
            # Now, not when the generator is collected: its copy ends here.
            await blobs.aclose()
        finally:
            load.snapshots -= 1


async def _snapshot(ctx: EtcdContext) -> AsyncGenerator[pb.SnapshotResponse, None]:
    machine = ctx.service.machine
    header = ctx.header()
    used = await asyncio.to_thread(machine.db_size_in_use)
    estimate = used + _FRAMING + 4 * (used // _CHUNK + 1)
    chunks = _ThreadedChunks(machine.checkpoint_chunks(align=ETCDCTL_ALIGN))
    sent = 0
    try:
        # One chunk of look-ahead: only the last blob may say 0 bytes remain.
        held = await chunks.next()
        while held is not None:
            ahead = await chunks.next()
            sent += len(held)
            remaining = 0 if ahead is None else max(1, estimate - sent)
            yield pb.SnapshotResponse(header=header, remaining_bytes=remaining, blob=held)
            held = ahead
    finally:
        await chunks.close()


# -- MoveLeader --------------------------------------------------------------------------


async def move_leader(ctx: EtcdContext, r: pb.MoveLeaderRequest) -> pb.MoveLeaderResponse:
    """Leadership to the voter ``targetID``; returns once it leads (etcd's
    "bad leader transferee" for an unknown member or a learner)."""
    target = ctx.node_of(r.targetID) if r.targetID else None
    voters = {m.id for m in ctx.service.members() if m.voter}
    if target is None or target not in voters:
        raise errors.BAD_LEADER_TRANSFEREE
    await ctx.service.transfer(target)
    return pb.MoveLeaderResponse(header=ctx.header())


# -- HashKV ------------------------------------------------------------------------------


async def hash_kv_call(ctx: EtcdContext, r: pb.HashKVRequest) -> pb.HashKVResponse:
    """etcd's HashKV: the hash up to ``revision`` (0: the current one);
    etcd's errors for a compacted or future revision."""
    if r.revision < 0:
        raise errors.EtcdError(errors.Code.INVALID_ARGUMENT, "etcdserver: negative revision")
    machine = ctx.service.machine

    def run() -> tuple[int, int, int]:
        with machine.read() as view:
            rev = r.revision or view.revision
            if r.revision and rev <= view.compact_revision:
                raise errors.COMPACTED
            if rev > view.revision:
                raise errors.FUTURE_REV
            return hash_kv(view, rev), view.revision, view.compact_revision

    async with _load_of(ctx).hashing:
        h, current, compact = await asyncio.to_thread(run)
    return pb.HashKVResponse(header=ctx.header(current), hash=h, compact_revision=compact)


def _call(method: str, req: Any, resp: Any, handler: Any, *paths: str, kind: Any = "unary") -> Call:
    return Call("Maintenance", method, req, resp, handler, paths, kind)


CALLS = [
    _call("Status", pb.StatusRequest, pb.StatusResponse, status, "/v3/maintenance/status"),
    _call("Alarm", pb.AlarmRequest, pb.AlarmResponse, alarm, "/v3/maintenance/alarm"),
    _call(
        "Snapshot",
        pb.SnapshotRequest,
        pb.SnapshotResponse,
        snapshot,
        "/v3/maintenance/snapshot",
        kind="server_stream",
    ),
    _call(
        "MoveLeader",
        pb.MoveLeaderRequest,
        pb.MoveLeaderResponse,
        move_leader,
        "/v3/maintenance/transfer-leadership",
    ),
    # etcd 3.4's gateway routes /v3/maintenance/hash to HashKV (registered
    # after Hash, it wins); later etcd moved it to /hashkv: both.
    _call(
        "HashKV",
        pb.HashKVRequest,
        pb.HashKVResponse,
        hash_kv_call,
        "/v3/maintenance/hash",
        "/v3/maintenance/hashkv",
    ),
]
