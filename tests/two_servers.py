"""Two real HTTP servers on their own loopback addresses, on the test's event loop: `home`
(127.0.0.2, the configured origin) and `other` (127.0.0.3, where a redirect may lead, like a
CDN). Each records every request and answers with the handler a test gives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    host: str
    handler: Handler | None = None
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (address, port)s
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        if request.transport is not None:
            self.transports.append(request.transport)
            self.peers.add(request.transport.get_extra_info("peername")[:2])
        assert self.handler is not None
        return await self.handler(request)

    def header_values(self) -> list[str]:
        return [v for _, _, h in self.seen for v in h.values()]


@asynccontextmanager
async def two_servers() -> AsyncIterator[tuple[Server, Server]]:
    """`home` and `other` (random ports), both stopped at the end."""
    runners: list[web.AppRunner] = []
    pair = (Server("127.0.0.2"), Server("127.0.0.3"))
    try:
        for s in pair:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", s.handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            runners.append(runner)
            await runner.setup()
            site = web.TCPSite(runner, s.host, 0)
            await site.start()
            s.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield pair
    finally:
        for r in runners:
            await r.cleanup()
