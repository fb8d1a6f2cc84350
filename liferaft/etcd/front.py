"""etcd's v3 API as a front end of ``liferaft serve`` (kv/serve.py's
FrontEnd): the JSON gateway on the client port, always, and the gRPC
server on ``--grpc-addr`` when given."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from aiohttp import web

from liferaft.kv.serve import ServeError, ServeOptions
from liferaft.kv.service import KVService

from .cluster import promote_wanted
from .context import EtcdContext
from .gateway import Gateway
from .grpc_server import GrpcServer
from .planted import PlantedBugError, plant_from_env

log = logging.getLogger("liferaft.etcd")


class EtcdFrontEnd:
    """One node's etcd API."""

    own_auth: tuple[str, ...] = ("/v3/", "/v3beta/", "/version")

    def __init__(self, service: KVService, o: ServeOptions) -> None:
        # Tests only (planted.py): before anything reads the call table.
        self.planted, self.plant_error = None, ""
        try:
            self.planted = plant_from_env(os.environ)
        except PlantedBugError as exc:
            self.plant_error = str(exc)
        self.ctx = EtcdContext(service, o.cluster_id, o.token)
        self.gateway = Gateway(self.ctx, body_timeout=o.client_limits.body_timeout)
        self.grpc_listen = o.grpc_listen
        self.tls = o.client_tls_files
        self.limits = o.client_limits
        self.grpc: GrpcServer | None = None
        self._promoter: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application) -> None:
        self.gateway.add_routes(app)

    async def start(self) -> None:
        if self.plant_error:
            raise ServeError(self.plant_error)
        if self.planted:
            log.warning("PLANTED BUG %s: this node's etcd API is wrong on purpose (a test of "
                        "the fault harness; docs/chaos.md)", self.planted)  # fmt: skip
        if self.grpc_listen:
            await self._start_grpc()
        # MemberAdd's voters are learners until caught up (cluster.py).
        self._promoter = asyncio.create_task(promote_wanted(self.ctx))

    async def _start_grpc(self) -> None:
        server = GrpcServer(self.ctx, self.grpc_listen, tls=self.tls, limits=self.limits)
        try:
            await server.start()
        except OSError as exc:
            raise ServeError(
                f"cannot listen on gRPC address {self.grpc_listen} (--grpc-addr or "
                f"--listen-grpc-addr): {exc}"
            ) from exc
        self.grpc = server
        log.info(
            "serving etcd's v3 API: gRPC on %s (%s, %s), JSON gateway on the client port",
            self.grpc_listen,
            "TLS" if self.tls else "plain text",
            "Authenticate as root with the token"
            if self.ctx.token
            else "no auth: anyone who reaches it may read and write",
        )

    async def stop(self) -> None:
        if self._promoter is not None:
            task, self._promoter = self._promoter, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.grpc is not None:
            server, self.grpc = self.grpc, None
            await server.stop()
