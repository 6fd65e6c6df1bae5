"""A minimal HTTP BitTorrent tracker for tests: every announce gets the same fixed peer list.

Runs aiohttp on its own event loop in a thread (like origin_server.py). `GET /announce` answers
the bencoded dict `{interval: 30, peers: <compact 6-byte IPv4+port entries>}` whatever the
info-hash; `announces` records the (client ip, query) of every request so tests can tell a client
did announce. Bencoding is libtorrent's own.
"""

from __future__ import annotations

import ipaddress

import libtorrent as lt
from aiohttp import web

from threaded_server import ThreadedServer


def compact_peers(peers: list[tuple[str, int]]) -> bytes:
    """BEP 23 compact form: 4 bytes of IPv4 address + 2 bytes of port, big-endian, per peer."""
    return b"".join(ipaddress.IPv4Address(ip).packed + port.to_bytes(2, "big") for ip, port in peers)


class Tracker(ThreadedServer):
    def __init__(self, peers: list[tuple[str, int]], host: str = "127.0.0.1") -> None:
        super().__init__()
        self.peers = list(peers)
        self.host = host
        self.port = 0
        self.announces: list[tuple[str | None, str]] = []  # (client ip, raw query string)

    @property
    def announce_url(self) -> str:
        return f"http://{self.host}:{self.port}/announce"



    def announced_from(self, ip: str) -> bool:
        return any(remote == ip for remote, _ in self.announces)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/announce", self._announce)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _announce(self, request: web.Request) -> web.Response:
        # info_hash/peer_id are raw bytes, %-encoded: keep the raw query string, for the record.
        self.announces.append((request.remote, request.query_string))
        body = lt.bencode({"interval": 30, "peers": compact_peers(self.peers)})
        return web.Response(body=body, content_type="text/plain")
