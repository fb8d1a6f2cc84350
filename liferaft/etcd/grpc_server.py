"""etcd's gRPC services on ``--grpc-addr``: grpcio's asyncio server, built
from the call table (calls.py).

Trust (docs/etcd.md, "Trust"): the port trusts what the client port does.
It serves TLS with the client port's certificate when that port does (and
asks for client certificates when it does).
With ``--token-file``, every call but ``Auth/Authenticate`` must carry the
token Authenticate gives (gRPC metadata ``token``, as etcd clients send
it, or ``authorization``); without it, anyone who reaches the port may read
and write, as with etcd before ``auth enable``.  Requests over
:data:`MAX_RECEIVE` bytes (2 MiB) are refused by grpcio before any handler
runs.

What a stranger can hold (kv/listener.py says the same of the client
port): at most ``ClientLimits.max_connections`` connections (one more is
closed at once by grpc-core's connection quota); a connection that has not
finished its TLS handshake and HTTP/2 preface within
``ClientLimits.header_timeout`` is closed, and so is one with no call
open for as long (a graceful GOAWAY: the client reconnects); at most
:data:`CALLS_PER_CONNECTION` times the connection cap are open on the whole
port (one more is refused with ``RESOURCE_EXHAUSTED``), and of them at most
:data:`AUTH_WAITING` Authenticate calls whose message has not come, each for
``header_timeout`` at most.  Without them grpc-core took
every connection offered and kept a silent one for 120 s, so a stranger
could take every descriptor the node has, which its WAL and snapshots need;
and one connection could hold any number of calls (a call costs the node
12-50 KiB, even one whose message never comes).  The token is checked at a
call's headers (:class:`_Calls`), so without it a call ends at once; only
Authenticate is open, and it reads its message itself, within a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from liferaft.kv.listener import DEFAULT_HEADER_TIMEOUT, ClientLimits

from . import auth
from .calls import Call
from .context import EtcdContext
from .errors import TOO_MANY_REQUESTS, Code, EtcdError, etcd_error
from .registry import all_calls

log = logging.getLogger("liferaft.etcd")

#: etcd's default --max-request-bytes is 1.5 MiB; grpcio's receive limit is
#: that plus etcd's allowance for the message around the value.
MAX_RECEIVE = 2 * 1024 * 1024
MAX_SEND = 2**31 - 1  # etcd sends any size (math.MaxInt32)
#: Calls open at once on the whole port, per connection the cap allows:
#: 1,024 with the default 1,024 connections (about 50 MiB at most: a held
#: call costs 12-50 KiB, a Watch stream the most).  Not a per-connection
#: limit (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS): grpc-core's server
#: refuses a stream past it with REFUSED_STREAM, which grpcio clients
#: report as UNAVAILABLE instead of queueing the call.
CALLS_PER_CONNECTION = 1
#: Authenticate calls waiting for their message, at most (more are
#: RESOURCE_EXHAUSTED at once).  The one call open without the token: held
#: at will, they would fill the port's budget and lock out token holders.
AUTH_WAITING = 64


class _Undecodable:
    """A request message that did not decode (what the deserializer hands
    the handler instead of raising: grpcio would answer UNKNOWN and log a
    traceback per stranger's message)."""

    def __init__(self, exc: DecodeError) -> None:
        # grpc-go's answer (etcd's server), so clients see what etcd sends.
        self.error = EtcdError(Code.INTERNAL, f"grpc: error unmarshalling request: {exc}")


def _decoder(message: type[Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return decode


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for r in requests:
        yield _decoded(r)


async def _fail(context: aio.ServicerContext, exc: Exception) -> None:
    e = etcd_error(exc)
    if e.code == grpc.StatusCode.UNKNOWN:
        log.exception("etcd call failed", exc_info=exc)
    await context.abort(e.code, e.message)


def _unary(ctx: EtcdContext, call: Call) -> Callable[..., Any]:
    async def handle(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await call.handler(ctx, _decoded(request))
        except Exception as exc:  # noqa: BLE001 - every failure is an etcd status
            await _fail(context, exc)

    return handle


def _streaming(ctx: EtcdContext, call: Call) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            got = _decoded_stream(request) if call.kind == "stream" else _decoded(request)
            async for resp in call.handler(ctx, got):
                yield resp
        except Exception as exc:  # noqa: BLE001
            await _fail(context, exc)

    return handle


def _handler(ctx: EtcdContext, call: Call) -> grpc.RpcMethodHandler:
    de, ser = _decoder(call.request), call.response.SerializeToString
    if call.kind == "unary":
        return grpc.unary_unary_rpc_method_handler(
            _unary(ctx, call), request_deserializer=de, response_serializer=ser
        )
    if call.kind == "stream":
        return grpc.stream_stream_rpc_method_handler(
            _streaming(ctx, call), request_deserializer=de, response_serializer=ser
        )
    return grpc.unary_stream_rpc_method_handler(
        _streaming(ctx, call), request_deserializer=de, response_serializer=ser
    )


def _refusal(exc: Exception) -> grpc.RpcMethodHandler:
    """A handler that answers ``exc`` at once, whatever the call's kind:
    as a client-streaming handler it runs before any message is read."""

    async def refuse(requests: Any, context: aio.ServicerContext) -> None:
        await _fail(context, exc)

    return grpc.stream_unary_rpc_method_handler(refuse)


class _Calls(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpcio is untyped
    """Every etcd call by its path, with the token checked when the call's
    HEADERS arrive.  grpcio reads a unary call's message before its handler
    runs, so a check in the handler let a stranger without the token hold
    a call (and a slot of the port's call budget) by never sending one.
    Authenticate, open to all, reads its message itself (:meth:`_login`)."""

    def __init__(self, ctx: EtcdContext, calls: list[Call], message_timeout: float) -> None:
        self._ctx = ctx
        self._message_timeout = message_timeout
        self._waiting = 0  # Authenticate calls waiting for their message
        self._calls = {
            c.grpc_path: (c, self._login(c) if c.grpc_path == auth.AUTHENTICATE
                          else _handler(ctx, c))
            for c in calls
        }  # fmt: skip

    def _login(self, call: Call) -> grpc.RpcMethodHandler:
        """Authenticate as a client-streaming handler, which runs at the
        call's HEADERS: at most :data:`AUTH_WAITING` wait for their message,
        each for ``message_timeout`` at most."""

        async def handle(requests: Any, context: aio.ServicerContext) -> Any:
            if self._waiting >= AUTH_WAITING:
                await _fail(context, TOO_MANY_REQUESTS)
            self._waiting += 1
            try:
                request = await asyncio.wait_for(context.read(), self._message_timeout)
            except TimeoutError:
                request = None
            finally:
                self._waiting -= 1
            if request is None or request is aio.EOF:
                await _fail(context, EtcdError(
                    Code.CANCELLED,
                    f"the request did not arrive within {self._message_timeout:g} s",
                ))  # fmt: skip
            try:
                return await call.handler(self._ctx, _decoded(request))
            except Exception as exc:  # noqa: BLE001 - every failure is an etcd status
                await _fail(context, exc)

        return grpc.stream_unary_rpc_method_handler(
            handle,
            request_deserializer=_decoder(call.request),
            response_serializer=call.response.SerializeToString,
        )

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._calls.get(details.method)
        if found is None:
            return None  # grpcio answers UNIMPLEMENTED
        call, handler = found
        try:
            auth.check(self._ctx, call, dict(details.invocation_metadata or ()))
        except Exception as exc:  # noqa: BLE001 - every failure is an etcd status
            return _refusal(exc)
        return handler


def generic_handlers(
    ctx: EtcdContext,
    calls: list[Call] | None = None,
    message_timeout: float = DEFAULT_HEADER_TIMEOUT,
) -> list[Any]:
    """The grpcio generic handler of the etcd calls in ``calls`` (all);
    ``message_timeout``: how long an Authenticate call waits for its message."""
    return [_Calls(ctx, calls if calls is not None else all_calls(), message_timeout)]


def _credentials(cert: str, key: str, ca: str | None) -> grpc.ServerCredentials:
    """Server TLS from PEM files (read once, at start)."""
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
        root = Path(ca).read_bytes() if ca else None
    except OSError as exc:
        raise OSError(f"TLS files: {exc.strerror or exc}") from exc
    return grpc.ssl_server_credentials([pair], root_certificates=root,
                                       require_client_auth=root is not None)  # fmt: skip


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class GrpcServer:
    """The etcd gRPC server of one node (start, then stop)."""

    def __init__(
        self,
        ctx: EtcdContext,
        listen: str,
        tls: tuple[str, str, str | None] | None = None,
        limits: ClientLimits | None = None,
    ) -> None:
        """``tls``: (certificate, key, client CA or None) files, the client
        port's: with a CA, clients must present a certificate it signed.
        ``limits``: the connection cap and the header timeout (as the
        handshake's deadline); the defaults when None."""
        self.ctx = ctx
        self.listen = listen
        self.tls = tls
        self.limits = limits if limits is not None else ClientLimits()
        self.port = 0
        self._server: aio.Server | None = None

    async def start(self) -> None:
        """Bind and serve; OSError if the address cannot be bound."""
        server = aio.server(
            maximum_concurrent_rpcs=self.limits.max_connections * CALLS_PER_CONNECTION,
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE),
                ("grpc.max_send_message_length", MAX_SEND),
                ("grpc.so_reuseport", 0),
                ("grpc.max_allowed_incoming_connections", self.limits.max_connections),
                ("grpc.server_handshake_timeout_ms", _millis(self.limits.header_timeout)),
                # With no call open for this long, a connection gets a
                # graceful GOAWAY (its client reconnects at its next call),
                # as the client port closes an idle kept-alive connection.
                ("grpc.max_connection_idle_ms", _millis(self.limits.header_timeout)),
            ],
        )
        server.add_generic_rpc_handlers(
            generic_handlers(self.ctx, message_timeout=self.limits.header_timeout)
        )
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                self.port = server.add_secure_port(self.listen, _credentials(*self.tls))
        except RuntimeError as exc:
            raise OSError(f"cannot bind {self.listen}: {exc}") from exc
        if not self.port:
            raise OSError(f"cannot bind {self.listen}")
        await server.start()
        self._server = server

    async def stop(self, grace: float = 1.0) -> None:
        """Stop taking calls; those running get ``grace`` seconds."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)


__all__ = ["EtcdError", "GrpcServer", "generic_handlers"]
