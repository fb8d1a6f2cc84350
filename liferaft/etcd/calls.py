"""The table of etcd calls liferaft-kv serves, one row per call.

Both front ends are built from the rows (registry.py gathers each module's
``CALLS``): the gRPC server registers every row under
``/etcdserverpb.<service>/<method>`` (grpc_server.py), and the JSON gateway
routes each row's ``paths`` (gateway.py).  A handler takes the
node's :class:`EtcdContext` and the request message and answers with the
response message, or raises (errors.py says how an exception is sent).

- ``unary``: ``await handler(ctx, request) -> response``;
- ``stream``: ``handler(ctx, requests) -> async iterator of responses``,
  ``requests`` an async iterator of request messages (a bidirectional
  stream: Watch, LeaseKeepAlive);
- ``server_stream``: ``handler(ctx, request) -> async iterator of
  responses`` (Snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from .context import EtcdContext

Kind = Literal["unary", "stream", "server_stream"]
Unary = Callable[[EtcdContext, Any], Awaitable[Message]]
Streaming = Callable[[EtcdContext, Any], AsyncIterator[Message]]


@dataclass(frozen=True)
class Call:
    service: str  # "KV", "Watch", ... (package etcdserverpb)
    method: str  # "Range"
    request: type[Message]
    response: type[Message]
    handler: Callable[..., Any]
    paths: tuple[str, ...] = ()  # the JSON gateway's, e.g. ("/v3/kv/range",)
    kind: Kind = "unary"

    @property
    def grpc_path(self) -> str:
        return f"/etcdserverpb.{self.service}/{self.method}"
