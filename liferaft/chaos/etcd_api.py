"""The soak's clients on etcd's v3 gRPC API (``--api etcd``).

:class:`EtcdApi` makes each call of :class:`~liferaft.chaos.api.Api` with
grpc.aio stubs of liferaft/etcd/proto on the node's ``--grpc-addr``, and
answers in the ``/v1`` shapes the clients record (:mod:`.api`): a page's
``items`` and ``revision`` from a RangeResponse and its header, a write's
``revision`` from its header, and so on.

Outcomes, as docs/etcd.md "What clients retry" says a client may read
them (:func:`outcome`):

- ``UNAVAILABLE`` "etcdserver: no leader", "server stopped" or "unhealthy
  cluster", and ``RESOURCE_EXHAUSTED`` "too many requests": nothing was
  proposed, so 503 (``fail``: the checker holds the server to it);
- ``UNAVAILABLE`` "etcdserver: request timed out": proposed, outcome
  unknown, 504 (``info``);
- ``DEADLINE_EXCEEDED``, ``CANCELLED`` and any other ``UNAVAILABLE`` (the
  transport's: a connection refused, reset or dropped mid-call, which
  grpc does not tell apart): 0, no answer (``info``: it may have applied);
- ``NOT_FOUND`` "requested lease not found": 404 ``lease_not_found``, as
  the ``/v1`` API;
- anything else is an answer the contract does not allow: the clients
  count it as unexpected, and it fails the run.

A watch is one gRPC Watch stream per connection, created with
``progress_notify`` and, when a start is given, ``start_revision`` (a
resume from the last revision seen + 1, as clientv3 resumes a broken
watch).  A quiet stream is asked for progress (``progress_request``) every
``NUDGE`` seconds, as clientv3's ``RequestProgress``, so a watcher learns
how far it is covered without waiting for the 10 s notifications.  A
response carries whole revisions, so it is split into one ``/v1`` line
per revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from liferaft.etcd import errors
from liferaft.etcd.proto import kv_pb2 as mvccpb
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc as stubs

from .api import Answer, Cluster, Query

__all__ = ["EtcdApi", "outcome", "prefix_end"]

#: Seconds of silence on a watch stream before it asks for progress.
NUDGE = 2.0

#: Reconnect quickly to a node that was killed and restarted (grpc's
#: default backoff grows to two minutes; the nemesis restarts in seconds).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),  # the clients decide; nothing is sent twice behind them
]

_NOT_APPLIED = {
    (grpc.StatusCode.UNAVAILABLE, e.message) for e in (errors.NO_LEADER, errors.STOPPED,
                                                       errors.UNHEALTHY)
} | {(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.TOO_MANY_REQUESTS.message)}  # fmt: skip
_NO_ANSWER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED}  # fmt: skip
LEASE_GONE: Answer = (404, {"error": "lease_not_found"})

_TARGETS = {
    "value": (pb.Compare.VALUE, "value"),
    "version": (pb.Compare.VERSION, "version"),
    "create_revision": (pb.Compare.CREATE, "create_revision"),
    "mod_revision": (pb.Compare.MOD, "mod_revision"),
    "lease": (pb.Compare.LEASE, "lease"),
}
_RESULTS = {"=": pb.Compare.EQUAL, "!=": pb.Compare.NOT_EQUAL, ">": pb.Compare.GREATER,
            "<": pb.Compare.LESS}  # fmt: skip


def outcome(exc: grpc.aio.AioRpcError) -> Answer:
    """A failed call's status as the ``/v1`` contract's (module docstring)."""
    code, message = exc.code(), exc.details() or ""
    if (code, message) in _NOT_APPLIED:
        return 503, {"error": message}
    if code == grpc.StatusCode.UNAVAILABLE and message == errors.TIMEOUT.message:
        return 504, {"error": message}
    if code in _NO_ANSWER:
        return 0, f"{code.name}: {message}"
    if code == grpc.StatusCode.NOT_FOUND and message == errors.LEASE_NOT_FOUND.message:
        return LEASE_GONE
    return 600, f"{code.name}: {message}"  # no status of the contract: unexpected


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end of every key starting with ``prefix`` (``b"\\0"``,
    every key, for the empty prefix or one of 0xff bytes)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else b"\0"


def _keys(key: str, prefix: bool) -> tuple[bytes, bytes]:
    k = key.encode()
    return (k or b"\0", prefix_end(k)) if prefix else (k, b"")


def item(kv: mvccpb.KeyValue) -> dict[str, Any]:
    """A KeyValue as a ``/v1`` page item (text: the harness writes UTF-8;
    anything else, a stranger's, must not end a client)."""
    key, value = kv.key.decode(errors="replace"), kv.value.decode(errors="replace")
    return {"key": key, "value": value, "revision": kv.mod_revision,
            "create_revision": kv.create_revision, "version": kv.version,
            "lease": kv.lease}  # fmt: skip


def _page(r: pb.RangeResponse) -> dict[str, Any]:
    return {"items": [item(kv) for kv in r.kvs], "revision": r.header.revision,
            "count": r.count, "more": r.more}  # fmt: skip


def _compare(c: dict[str, Any]) -> pb.Compare:
    target, field = _TARGETS[c["target"]]
    out = pb.Compare(key=c["key"].encode(), target=target, result=_RESULTS[c["op"]])
    setattr(out, field, c["value"].encode() if field == "value" else int(c["value"]))
    return out


def _request_op(o: dict[str, Any]) -> pb.RequestOp:
    if "put" in o:
        p = o["put"]
        return pb.RequestOp(request_put=pb.PutRequest(
            key=p["key"].encode(), value=p["value"].encode(), lease=p.get("lease", 0)))
    if "delete" in o:
        return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
            key=o["delete"]["key"].encode()))  # fmt: skip
    return pb.RequestOp(request_range=pb.RangeRequest(key=o["range"]["key"].encode()))


def _result(r: pb.ResponseOp) -> dict[str, Any]:
    kind = r.WhichOneof("response")
    if kind == "response_range":
        return {"range": _page(r.response_range)}
    if kind == "response_delete_range":
        d = r.response_delete_range
        return {"delete": {"revision": d.header.revision, "deleted": d.deleted}}
    return {"put": {"revision": r.response_put.header.revision}}


def txn_request(body: dict[str, Any]) -> pb.TxnRequest:
    """A ``POST /v1/txn`` body (the shapes the soak sends) as etcd's Txn."""
    return pb.TxnRequest(
        compare=[_compare(c) for c in body.get("compare", [])],
        success=[_request_op(o) for o in body.get("success", [])],
        failure=[_request_op(o) for o in body.get("failure", [])],
    )


def watch_lines(resp: pb.WatchResponse, start: int) -> list[dict[str, Any]]:
    """One WatchResponse as ``/v1`` watch lines (see :meth:`Api.watch`).
    ``start``: the revision asked for (0: now, which the created header
    names: the watch starts after it)."""
    if resp.created:
        out: list[dict[str, Any]] = [{"created": True,
                                      "start_revision": start or resp.header.revision + 1}]
        if resp.canceled:  # a refused create, or a start below what history keeps
            out += watch_lines(pb.WatchResponse(header=resp.header, canceled=True,
                                                compact_revision=resp.compact_revision,
                                                cancel_reason=resp.cancel_reason), start)
        return out
    if resp.canceled:
        if resp.compact_revision:
            return [{"error": "compacted", "compact_revision": resp.compact_revision}]
        return [{"error": f"canceled: {resp.cancel_reason}"}]
    if not resp.events:
        return [{"progress": resp.header.revision}]  # a notification or a progress answer
    lines: list[dict[str, Any]] = []
    for e in resp.events:
        rev = e.kv.mod_revision
        if not lines or lines[-1]["revision"] != rev:
            lines.append({"revision": rev, "events": []})
        ev: dict[str, Any] = {"type": "put" if e.type == mvccpb.Event.PUT else "delete",
                              "kv": item(e.kv)}  # fmt: skip
        if e.HasField("prev_kv"):
            ev["prev_kv"] = item(e.prev_kv)
        lines[-1]["events"].append(ev)
    return lines


class EtcdApi:
    """The soak's calls on each node's etcd gRPC port (module docstring)."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}

    def _channel(self, nid: str) -> grpc.aio.Channel:
        addr = self.c.members[nid].grpc
        got = self._channels.get(nid)
        if got is None or got[0] != addr:
            got = (addr, grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS))
            self._channels[nid] = got
        return got[1]

    # The generated stubs are untyped (docs/etcd.md, "Generated modules").
    def kv(self, nid: str) -> Any:
        return stubs.KVStub(self._channel(nid))  # type: ignore[no-untyped-call]

    def lease(self, nid: str) -> Any:
        return stubs.LeaseStub(self._channel(nid))  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for _, ch in channels.values():
            await ch.close()

    async def range(self, nid: str, q: Query, timeout: float = 3.0) -> Answer:
        k, end = _keys(q.key, q.prefix)
        req = pb.RangeRequest(key=k, range_end=end, limit=q.limit, count_only=q.count_only,
                              serializable=q.consistency == "stale")  # fmt: skip
        try:
            return 200, _page(await self.kv(nid).Range(req, timeout=timeout))
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)

    async def get(self, nid: str, key: str, consistency: str, timeout: float = 3.0) -> Answer:
        st, body = await self.range(nid, Query(key, consistency=consistency), timeout)
        if st != 200:
            return st, body
        if not body["items"]:
            return 404, {"error": "not_found", "revision": body["revision"]}
        return 200, {**body["items"][0], "revision": body["revision"]}

    async def put(
        self, nid: str, key: str, value: str, *, lease: int = 0, if_value: str | None = None
    ) -> Answer:
        req = pb.PutRequest(key=key.encode(), value=value.encode(), lease=lease)
        try:
            if if_value is None:
                resp = await self.kv(nid).Put(req, timeout=3.0)
                return 200, {"revision": resp.header.revision}
            # A conditional put is a Txn comparing the value (etcd has no other).
            got = await self.kv(nid).Txn(pb.TxnRequest(
                compare=[pb.Compare(key=req.key, target=pb.Compare.VALUE,
                                    result=pb.Compare.EQUAL, value=if_value.encode())],
                success=[pb.RequestOp(request_put=req)]), timeout=3.0)  # fmt: skip
            return (200 if got.succeeded else 412), {"revision": got.header.revision}
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)

    async def txn(self, nid: str, body: dict[str, Any]) -> Answer:
        try:
            got = await self.kv(nid).Txn(txn_request(body), timeout=3.0)
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)
        return 200, {"succeeded": got.succeeded, "revision": got.header.revision,
                     "results": [_result(r) for r in got.responses]}  # fmt: skip

    async def lease_grant(self, nid: str, ttl: int) -> Answer:
        try:
            got = await self.lease(nid).LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=3.0)
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)
        return 200, {"id": got.ID, "ttl": got.TTL}

    async def lease_keepalive(self, nid: str, lease: int, timeout: float) -> Answer:
        """One request on a LeaseKeepAlive stream of its own (so each
        keep-alive may go to another node, as the ``/v1`` holder's do)."""
        call = self.lease(nid).LeaseKeepAlive(timeout=timeout)
        try:
            await call.write(pb.LeaseKeepAliveRequest(ID=lease))
            await call.done_writing()
            got = await call.read()
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"  # the call had ended: no answer
        finally:
            call.cancel()
        if got is grpc.aio.EOF:
            return 0, "the keep-alive stream ended without an answer"
        return (200, {"ttl": got.TTL}) if got.TTL > 0 else LEASE_GONE

    async def lease_revoke(self, nid: str, lease: int) -> Answer:
        try:
            got = await self.lease(nid).LeaseRevoke(pb.LeaseRevokeRequest(ID=lease), timeout=3.0)
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)
        return 200, {"revision": got.header.revision}

    async def watch(
        self, nid: str, key: str, prefix: bool, prev_kv: bool, start: int, idle: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        k, end = _keys(key, prefix)
        create = pb.WatchCreateRequest(key=k, range_end=end, prev_kv=prev_kv,
                                       start_revision=start, progress_notify=True)  # fmt: skip
        call = stubs.WatchStub(self._channel(nid)).Watch()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        reading: asyncio.Future[Any] | None = None
        try:
            await call.write(pb.WatchRequest(create_request=create))
            heard = loop.time()
            while True:
                # One read at a time, never cancelled (that would end the call).
                reading = reading or asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({reading}, timeout=NUDGE)
                if not done:
                    if loop.time() - heard > idle:
                        raise TimeoutError(f"no answer on the watch stream for {idle:g} s")
                    await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
                    continue
                resp, reading = reading.result(), None
                if resp is grpc.aio.EOF:
                    return
                heard = loop.time()
                lines = watch_lines(resp, start)
                for line in lines:
                    yield line
                if "error" in lines[-1]:
                    # Canceled: this stream watches nothing now (a progress
                    # answer would claim what it never covered); start again.
                    return
        except grpc.aio.AioRpcError as exc:
            # A broken stream: the watcher resumes on another node.
            yield {"error": f"{exc.code().name}: {exc.details()}"}
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # A write (a progress request) on a stream the server had ended.
            yield {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            call.cancel()
            if reading is not None:
                reading.cancel()
