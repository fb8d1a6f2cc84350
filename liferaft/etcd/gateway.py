"""etcd's JSON gateway on the client port: ``POST /v3/...`` with protobuf's
JSON mapping (keys and values base64, 64-bit numbers as strings, fields by
their .proto names), served by the same handlers as gRPC (calls.py).

etcd 3.4 embeds grpc-gateway v1; what a client of it sees, and this serves:

- a unary call answers the response message, or an error as
  ``{"error", "message", "code"}`` with the HTTP status of its gRPC code
  (errors.HTTP_STATUS);
- a streaming call (Watch, LeaseKeepAlive, Snapshot) reads a stream of JSON
  request objects from the body and answers a chunked stream of
  ``{"result": response}`` lines, ending with ``{"error": ...}`` on failure;
- a unary call's body must arrive within the client port's body timeout
  (``--client-body-timeout``), else 408 with gRPC's ``CANCELLED`` and the
  connection ends (liferaft/kv/listener.py, ``FinalResponse``): a stranger
  cannot hold a connection by trickling a body;
- the token goes in the ``Authorization`` header, as etcd's gateway takes it
  (liferaft's ``Bearer`` token of the native API works too);
- ``/v3beta/`` is an alias of ``/v3/``, as in etcd 3.4.

``GET /version`` answers as etcd's (etcd3gw reads it to choose the prefix).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from liferaft.kv.http_util import read_within
from liferaft.kv.listener import DEFAULT_BODY_TIMEOUT, FinalResponse

from . import auth, errors, jsonin
from .calls import Call
from .context import EtcdContext
from .errors import Code, EtcdError, etcd_error
from .registry import all_calls
from .version import CLUSTER_VERSION, ETCD_VERSION

log = logging.getLogger("liferaft.etcd")

_READ = 64 * 1024
#: Seconds between looks at an idle stream's connection (has the client gone?).
GONE_CHECK = 2.0
#: The largest request object a streamed body may hold (a watch create or a
#: keep-alive is tiny): past it, the stream ends with an error rather than
#: buffer a stranger's endless object.
MAX_STREAM_OBJECT = 64 * 1024
#: A unary answer larger than this (protobuf bytes) is turned into JSON in
#: a worker thread: protobuf's JSON mapping is Python, about 35 ms a MB,
#: and a big Range would otherwise hold the event loop for seconds.
JSON_OFF_LOOP = 256 * 1024


def _too_deep() -> EtcdError:
    """A body nested deeper than json's decoder recurses (RecursionError)."""
    return EtcdError(Code.INVALID_ARGUMENT, "invalid request body: nested too deeply")


def to_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return out


async def _json_response(msg: Message) -> web.Response:
    """``msg`` as the gateway's JSON body (a big one built off the loop)."""
    if msg.ByteSize() > JSON_OFF_LOOP:
        text = await asyncio.to_thread(lambda: json.dumps(to_json(msg)))
    else:
        text = json.dumps(to_json(msg))
    return web.Response(text=text, content_type="application/json")


def _error_body(e: EtcdError) -> dict[str, Any]:
    return {"error": e.message, "message": e.message, "code": e.code.value[0]}


def _metadata(ctx: EtcdContext, request: web.Request) -> dict[str, str]:
    """The gRPC metadata a gateway call carries: its token."""
    return auth.gateway_metadata(ctx, request.headers.get("Authorization", ""))


async def _body(request: web.Request, timeout: float) -> str:
    """The body as text, within ``timeout`` seconds; a client's error (not a
    logged 500) when it is late, not UTF-8 or over the client port's size
    limit."""
    try:
        raw = await read_within(request, timeout)
        return raw.decode(request.charset or "utf-8")
    except TimeoutError:
        raise EtcdError(
            Code.CANCELLED, f"the request body did not arrive within {timeout:g} s; nothing applied"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise errors.REQUEST_TOO_LARGE from None
    except UnicodeDecodeError:
        raise EtcdError(Code.INVALID_ARGUMENT, "invalid request body: not UTF-8") from None
    except LookupError:  # a charset Python does not know
        raise EtcdError(Code.INVALID_ARGUMENT, "invalid request body: unknown charset") from None
    except web.RequestPayloadError as exc:  # e.g. "gzip" that is not
        raise EtcdError(
            Code.INVALID_ARGUMENT, f"invalid request body: {exc.__cause__ or exc}"
        ) from None


def parse(call: Call, text: str) -> Message:
    """A unary call's request from its body (empty: the default message)."""
    if not text.strip():
        return call.request()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EtcdError(Code.INVALID_ARGUMENT, f"invalid request body: {exc}") from None
    except RecursionError:  # a stranger's "[[[[...": a client error, not a logged bug
        raise _too_deep() from None
    return parse_value(call, value)


def parse_value(call: Call, value: Any) -> Message:
    """A request from one decoded JSON value."""
    msg = call.request()
    # What etcd refuses and the lenient parser below would take.
    jsonin.check(value, msg.DESCRIPTOR)
    try:
        # etcd's gateway (grpc-gateway v1) skips fields it does not know:
        # a newer client's request still works on an older server.
        json_format.ParseDict(value, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise EtcdError(Code.INVALID_ARGUMENT, f"invalid request body: {exc}") from None
    return msg


async def _json_values(request: web.Request) -> AsyncIterator[Any]:
    """The successive JSON values of a streamed body, as each completes."""
    dec = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")("replace")  # a chunk may split a character
    buf = ""
    while True:
        chunk = await request.content.read(_READ)
        if not chunk:
            break
        buf += text.decode(chunk)
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                value, end = dec.raw_decode(buf)
            except ValueError:
                break  # incomplete: read on
            except RecursionError:
                raise _too_deep() from None
            buf = buf[end:]
            yield value
        if len(buf) > MAX_STREAM_OBJECT:
            raise EtcdError(Code.INVALID_ARGUMENT, "invalid request body: an object is too large")
    if buf.strip():
        raise EtcdError(Code.INVALID_ARGUMENT, "invalid request body: a JSON value is cut short")


class Gateway:
    """The ``/v3`` routes of one node's client port."""

    def __init__(
        self,
        ctx: EtcdContext,
        calls: list[Call] | None = None,
        *,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.ctx = ctx
        self.calls = calls if calls is not None else all_calls()
        self.body_timeout = body_timeout

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for call in self.calls:
            for path in call.paths:
                for p in (path, path.replace("/v3/", "/v3beta/", 1)):
                    r.add_post(p, self._route(call))
        r.add_get("/version", self.version)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION})

    def _route(self, call: Call) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if call.kind == "stream":
                return await self._stream(call, request)
            try:
                auth.check(self.ctx, call, _metadata(self.ctx, request))
                req = parse(call, await _body(request, self.body_timeout))
                if call.kind == "server_stream":
                    return await self._server_stream(call, request, req)
                resp = await call.handler(self.ctx, req)
            except Exception as exc:  # noqa: BLE001 - every failure is an etcd status
                e = _logged(exc)
                if e.http_status == 408:
                    # Mid-body: the connection ends with this answer.
                    return FinalResponse(
                        text=json.dumps(_error_body(e)), status=408, content_type="application/json"
                    )
                return web.json_response(_error_body(e), status=e.http_status)
            return await _json_response(resp)

        return handle

    async def _server_stream(
        self, call: Call, request: web.Request, req: Message
    ) -> web.StreamResponse:
        return await self._pump(request, call.handler(self.ctx, req))

    async def _stream(self, call: Call, request: web.Request) -> web.StreamResponse:
        try:
            auth.check(self.ctx, call, _metadata(self.ctx, request))
        except EtcdError as e:
            return web.json_response(_error_body(e), status=e.http_status)

        async def requests() -> AsyncIterator[Message]:
            async for value in _json_values(request):
                yield parse_value(call, value)

        return await self._pump(request, call.handler(self.ctx, requests()))

    async def _pump(
        self, request: web.Request, responses: AsyncIterator[Message]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            while (msg := await _next_while_connected(request, responses)) is not None:
                await resp.write(json.dumps({"result": to_json(msg)}).encode() + b"\n")
        except Exception as exc:  # noqa: BLE001
            e = _logged(exc)
            body = {"error": {"grpc_code": e.code.value[0], "http_code": e.http_status,
                              "message": e.message, "http_status": e.http_status}}  # fmt: skip
            with contextlib.suppress(ConnectionError, RuntimeError):  # the client went
                await resp.write(json.dumps(body).encode() + b"\n")
        finally:
            # End the handler's stream now (its watchers), not when collected.
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp


async def _next_while_connected(
    request: web.Request, responses: AsyncIterator[Message]
) -> Message | None:
    """The stream's next response; None when it ends or the client has gone.
    aiohttp does not cancel a handler whose client left, so an idle stream
    (a watch with no events) would otherwise hold its watchers forever:
    the connection is looked at every :data:`GONE_CHECK` seconds."""
    nxt = asyncio.ensure_future(anext(responses, None))
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=GONE_CHECK)
            if done:
                return nxt.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                return None
    finally:
        if not nxt.done():  # the client went, or this handler was cancelled
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await nxt


def _logged(exc: Exception) -> EtcdError:
    e = etcd_error(exc)
    if e.code.name == "UNKNOWN":
        log.exception("etcd gateway call failed", exc_info=exc)
    return e


__all__ = ["ETCD_VERSION", "Gateway", "to_json"]
