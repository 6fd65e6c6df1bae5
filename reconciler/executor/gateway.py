"""The loopback web-seed gateway: libtorrent's BEP 19 range requests in, origin reads out.

libtorrent builds web-seed URLs itself (`<url>/<torrent name>/<path>`), so it cannot sign S3
requests or carry per-request credentials. This gateway can: it listens on 127.0.0.1 only,
maps `/<dataset>/<infohash>/<name>/<path>` to the dataset's origin, and counts every byte it
relays, which is the exact `bytesFromOrigin` of the status file.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote

import structlog
from aiohttp import web

from ..sources import Origin, OriginError
from .ratelimit import TokenBucket

log = structlog.get_logger("gateway")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class _Entry:
    dataset: str
    name: str  # the torrent's top directory
    sizes: dict[str, int]
    origin: Origin


@dataclass
class Gateway:
    host: str = "127.0.0.1"
    port: int = 0
    bytes_served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, str] = field(default_factory=dict)  # dataset -> last origin error
    limit: TokenBucket = field(default_factory=lambda: TokenBucket(0))  # bandwidth.origin
    _entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def register(self, dataset: str, info_hash: str, name: str,
                 files: tuple[tuple[str, int], ...], origin: Origin) -> str:
        """Serve one torrent from `origin`; returns the web-seed URL to give libtorrent."""
        self._entries[(dataset, info_hash)] = _Entry(dataset, name, dict(files), origin)
        return f"http://{self.host}:{self.port}/{quote(dataset)}/{info_hash}"

    def unregister(self, dataset: str, info_hash: str) -> None:
        self._entries.pop((dataset, info_hash), None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{dataset}/{ih}/{tail:.+}", self._handle)
        # libtorrent requests a one-file torrent's web seed URL as it is, without the path.
        app.router.add_get("/{dataset}/{ih}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["dataset"], request.match_info["ih"])
        entry = self._entries.get(key)
        if entry is None:
            raise web.HTTPNotFound(text="unknown dataset version\n")
        tail = request.match_info.get("tail")
        if tail is None and len(entry.sizes) == 1:
            top, path = entry.name, next(iter(entry.sizes))
        else:
            top, _, path = (tail or "").partition("/")
        size = entry.sizes.get(path)
        if top != entry.name or size is None:
            raise web.HTTPNotFound(text="no such file in this torrent\n")

        start, end = 0, size - 1
        status = 200
        rng = request.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if not m:
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start > end:
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
            status = 206
        length = end - start + 1

        resp = web.StreamResponse(status=status)
        resp.content_length = length
        resp.content_type = "application/octet-stream"
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        sent = 0
        stream = entry.origin.read(path, start, length)
        try:
            first = await anext(stream, b"")  # fail before headers when the origin refuses
            await resp.prepare(request)
            chunk = first
            while chunk:
                await self.limit.take(len(chunk))
                await resp.write(chunk)
                sent += len(chunk)
                self.bytes_served[entry.dataset] += len(chunk)
                chunk = await anext(stream, b"")
        except OriginError as e:
            self.errors[entry.dataset] = str(e)
            log.warning("origin read failed", dataset=entry.dataset, file=path, error=str(e))
            if not resp.prepared:
                raise web.HTTPBadGateway(text=f"{e}\n")
            raise  # mid-body: drop the connection, libtorrent retries
        except ConnectionResetError:
            # libtorrent hung up (end game, completion, its web seed switched off): not the
            # origin's fault, and nothing to report.
            return resp
        finally:
            await stream.aclose()
        if sent == length:
            self.errors.pop(entry.dataset, None)
        elif resp.prepared:
            log.warning("origin sent a short range", dataset=entry.dataset, file=path,
                        expected=length, sent=sent)
        return resp
