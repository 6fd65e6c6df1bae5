"""The loopback web-seed gateway: libtorrent's BEP 19 range requests in, origin reads out.

libtorrent builds web-seed URLs itself (`<url>/<torrent name>/<path>`), so it cannot sign S3
requests or carry per-request credentials. This gateway can: it listens on 127.0.0.1 only,
maps `/<dataset>/<infohash>/<name>/<path>` to the dataset's origin, and counts every byte it
relays, which is the exact `bytesFromOrigin` of the status file.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Sequence, cast
from urllib.parse import quote

import structlog
from aiohttp import web

from reconciler.adapters.sources import Origin, OriginError
from reconciler.core.origin_pool import OriginPool, ServedLog
from reconciler.adapters.ratelimit import TokenBucket

log = structlog.get_logger("gateway")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
MAX_ATTEMPTS = 4  # origins tried for one request
BACKOFF = 0.05  # seconds before the 2nd attempt, doubling for each further one
BACKOFF_MAX = 1.0


@dataclass
class _Entry:
    dataset: str
    name: str  # the torrent's top directory
    sizes: dict[str, int]
    origins: list[Origin]  # the source first, then the mirrors
    pool: OriginPool
    served: ServedLog = field(default_factory=ServedLog)


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
                 files: tuple[tuple[str, int], ...], origin: Origin | Sequence[Origin],
                 labels: Sequence[str] | None = None) -> str:
        """Serve one torrent from `origin` (or an ordered list: the source, then its mirrors;
        `labels` name them in logs and errors); returns the web-seed URL to give libtorrent."""
        origins = [origin] if isinstance(origin, Origin) else list(origin)
        if not origins:
            raise ValueError("a torrent needs at least one origin")
        names = list(labels) if labels is not None else [
            "source" if i == 0 else f"mirrors[{i - 1}]" for i in range(len(origins))]
        self._entries[(dataset, info_hash)] = _Entry(dataset, name, dict(files), origins,
                                                     OriginPool(names))
        return f"http://{self.host}:{self.port}/{quote(dataset)}/{info_hash}"

    def mark_bad(self, dataset: str, info_hash: str, path: str, first: int, last: int,
                 reason: str = "served bytes that failed a hash check") -> list[str]:
        """Bytes [first, last] of `path` failed a hash check: the origins that served them
        (ServedLog.blame) are skipped for a long while, so the retry goes elsewhere. Returns
        their names."""
        entry = self._entries.get((dataset, info_hash))
        if entry is None:
            return []
        now = time.monotonic()
        blamed = sorted(entry.served.blame(path, first, last))
        for i in blamed:
            entry.pool.mark_bad(i, now, f"{reason} ({path} bytes {first}-{last})")
            log.warning("origin marked bad", dataset=dataset, origin=entry.pool.names[i],
                        file=path, first=first, last=last, reason=reason)
        if blamed and not entry.pool.available(now):
            self.errors[dataset] = entry.pool.summary()
        return [entry.pool.names[i] for i in blamed]

    async def read_elsewhere(self, dataset: str, n: int) -> None:
        """`n` bytes this node reads from an origin outside the gateway (building an unlocked
        dataset's torrent): counted in `bytes_served` and held to `bandwidth.origin` too."""
        self.bytes_served[dataset] += n
        await self.limit.take(n)

    def unregister(self, dataset: str, info_hash: str) -> None:
        self._entries.pop((dataset, info_hash), None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{dataset}/{ih}/{tail:.+}", self._handle)
        # libtorrent requests a one-file torrent's web seed URL as it is, without the path.
        app.router.add_get("/{dataset}/{ih}", self._handle)
        # A request still streaming from a hung origin must not hold up the stop (the
        # default waits 60 s, which made `--timeout` overrun by a minute).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
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
        pool = entry.pool
        pos, left = start, length
        candidates = pool.candidates(f"{path}:{start}", time.monotonic())
        for attempt, i in enumerate(candidates[:MAX_ATTEMPTS]):
            if attempt:
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF * 2 ** (attempt - 1)))
            pool.begin(i, time.monotonic())
            began, concluded = pos, False
            # Every Origin.read is an async generator function (sources/*.py): closed below so
            # the origin's connection is released even when the client hangs up mid-body.
            stream = cast(AsyncGenerator[bytes, None], entry.origins[i].read(path, pos, left))
            try:
                chunk = await anext(stream, b"")  # fail before headers when the origin refuses
                while chunk and left > 0:
                    # Counted as read from the origin, relayed or not: what the origin spent.
                    self.bytes_served[entry.dataset] += len(chunk)
                    chunk = chunk[:left]
                    if not resp.prepared:
                        await resp.prepare(request)
                    await self.limit.take(len(chunk))
                    await resp.write(chunk)
                    pos += len(chunk)
                    left -= len(chunk)
                    chunk = await anext(stream, b"") if left > 0 else b""
                if left > 0:
                    raise OriginError(f"{path}: the origin sent {pos - began} of "
                                      f"{pos - began + left} bytes from offset {began}")
                pool.success(i, time.monotonic())
                concluded = True
            except OriginError as e:
                pool.failure(i, time.monotonic(), str(e))
                concluded = True
                log.warning("origin read failed", dataset=entry.dataset, origin=pool.names[i],
                            file=path, error=str(e))
            except ConnectionResetError:
                # libtorrent hung up (end game, completion, its web seed switched off): not the
                # origin's fault, and nothing to report.
                return resp
            finally:
                if not concluded:
                    pool.abandon(i)
                entry.served.record(path, began, pos - 1, i)
                await stream.aclose()
            if left == 0:
                self.errors.pop(entry.dataset, None)
                return resp
        error = pool.summary()
        self.errors[entry.dataset] = error
        if not resp.prepared:
            if not candidates:
                raise web.HTTPServiceUnavailable(text=f"{error}\n")
            raise web.HTTPBadGateway(text=f"{error}\n")
        raise OriginError(error)  # mid-body: drop the connection, libtorrent retries
