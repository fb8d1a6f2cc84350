"""The web console as a front end of ``liferaft serve`` (kv/server.py's
FrontEnd, as etcd's API is): the static page at ``/ui/``, the live stream
at ``/v1/console/stream``, CORS for the members' origins on /v1, and this
node's counters in its answers to other members' status calls.  kv never
imports it; liferaft/cli/serve.py adds it unless ``--no-console``."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from liferaft.kv.serve import ServeOptions
from liferaft.kv.service import KVService

from .cors import Cors, member_origins
from .gather import Gatherer
from .rates import Rates, counters
from .static import StaticFiles
from .stream import Streams
from .timeline import NodeFeed, Timeline

log = logging.getLogger("liferaft.console")


class ConsoleFrontEnd:
    """One node's console."""

    # /ui and its files are open (they carry no data); the stream is under
    # /v1 and meets the token like every /v1 route.  Every route under /ui
    # is this front end's.
    own_auth: tuple[str, ...] = ("/ui",)

    def __init__(self, service: KVService, o: ServeOptions) -> None:
        self.service = service
        self.node = node = service.node
        self.client_addr = o.client_addr
        self.scheme = "https" if o.client_ssl is not None else "http"
        self.token = o.token
        self.timeline = Timeline(node.id)
        self.rates = Rates()
        self.feed = NodeFeed(node, self.timeline)
        self.gatherer = Gatherer(node, self.counters, self.timeline, self.rates)
        self.streams = Streams(self.gatherer, self.timeline, self.rates)
        self.static = StaticFiles(self.origins)
        self.cors = Cors(self.origins)

    def origins(self) -> set[str]:
        return member_origins(self.node, self.client_addr)

    def counters(self) -> dict[str, Any]:
        return counters(self.service)

    def add_routes(self, app: web.Application) -> None:
        self.static.add_routes(app)
        app.router.add_get("/v1/console/stream", self.streams.handle)
        self.cors.install(app)

    async def start(self) -> None:
        self.node.on_status(self.counters)
        self.feed.attach()
        log.info(
            "console on %s://%s/ui/ (the page is open to anyone; its data, "
            "/v1/console/stream, %s; CORS for the members' client addresses only)",
            self.scheme,
            self.client_addr,
            "needs the API's bearer token" if self.token else "is open like the rest of the API",
        )

    async def stop(self) -> None:
        self.streams.closing = True
        self.feed.detach()
        await self.gatherer.close()
