"""The loopback web-seed gateway: libtorrent's BEP 19 range requests in, origin reads out.

libtorrent builds web-seed URLs itself (`<url>/<torrent name>/<path>`), so it cannot sign S3
requests or carry per-request credentials. This gateway can: it listens on a loopback address
only, maps `/<secret>/<dataset>/<infohash>/<name>/<path>` to the dataset's origin, and counts
every byte it relays, which is the exact `bytesFromOrigin` of the status file.

It reads origins with the node's credentials, so it must not serve any local process that
finds its port (issue 11, item 6): every URL carries a per-process random secret (compared in
constant time; a wrong or missing one is a 404 before any origin is touched) that only
libtorrent learns, and concurrent requests are capped per dataset and in all. The secret is
never logged; `redact()` hides it in anything that may quote the URL (libtorrent's alerts).

The listen address is a random one in 127.128.0.0/9, not 127.0.0.1: libtorrent's ip_filter
applies to outgoing web-seed connections too, so the gateway's address must be on the peer
allow-list, and 127.0.0.1 there would admit every local BitTorrent client (the kernel's
default source address for loopback). A local process can still choose any 127.x source, so
this only keeps the default path closed: the secret is what guards the origin.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import re
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Sequence, cast
from urllib.parse import quote

import structlog
from aiohttp import web

from reconciler.adapters import origin_errors
from reconciler.adapters.sources import Origin, OriginError
from reconciler.core.origin_pool import OriginPool, ServedLog
from reconciler.adapters.ratelimit import TokenBucket

log = structlog.get_logger("gateway")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
MAX_ATTEMPTS = 4  # origins tried for one request
BACKOFF = 0.05  # seconds before the 2nd attempt, doubling for each further one
BACKOFF_MAX = 1.0
MAX_REQUESTS = 64  # concurrent requests the gateway serves, all datasets together
MAX_REQUESTS_PER_DATASET = 16  # ...and for one dataset (libtorrent uses ~1 per torrent)
REDACTED = "<secret>"


def private_loopback() -> str:
    """A random address in 127.128.0.0/9 (test clusters use 127.0.0.x): see the module doc."""
    return f"127.{random.randint(128, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


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
    host: str = field(default_factory=private_loopback)
    port: int = 0
    #: In every web-seed URL; never logged. repr=False keeps it out of reprs in tracebacks.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    max_requests: int = MAX_REQUESTS
    max_per_dataset: int = MAX_REQUESTS_PER_DATASET
    refused: int = 0  # requests turned away: wrong secret, or over a concurrency cap
    bytes_served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, str] = field(default_factory=dict)  # dataset -> last origin error
    limit: TokenBucket = field(default_factory=lambda: TokenBucket(0))  # bandwidth.origin
    _entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _active: dict[str, int] = field(default_factory=lambda: defaultdict(int))

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
        return f"http://{self.host}:{self.port}/{self.secret}/{quote(dataset)}/{info_hash}"

    def redact(self, text: str) -> str:
        """`text` with the secret replaced, for anything that may quote a web-seed URL."""
        return text.replace(self.secret, REDACTED) if self.secret else text

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
            origin_errors.record(dataset, entry.pool.names[i], reason)
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
        app.router.add_get("/{secret}/{dataset}/{ih}/{tail:.+}", self._guarded)
        # libtorrent requests a one-file torrent's web seed URL as it is, without the path.
        app.router.add_get("/{secret}/{dataset}/{ih}", self._guarded)
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

    async def _guarded(self, request: web.Request) -> web.StreamResponse:
        """The secret (constant time, 404 like any unknown path) and the concurrency caps (503:
        libtorrent retries after urlseed_wait_retry) before anything reaches an origin."""
        given = request.match_info["secret"].encode()
        if not hmac.compare_digest(given, self.secret.encode()):
            self.refused += 1
            raise web.HTTPNotFound(text="not found\n")
        dataset = request.match_info["dataset"]
        if (sum(self._active.values()) >= self.max_requests
                or self._active[dataset] >= self.max_per_dataset):
            self.refused += 1
            raise web.HTTPServiceUnavailable(text="too many concurrent requests\n",
                                             headers={"Retry-After": "1"})
        self._active[dataset] += 1
        try:
            return await self._handle(request)
        finally:
            self._active[dataset] -= 1
            if self._active[dataset] <= 0:
                del self._active[dataset]

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
                origin_errors.record(entry.dataset, pool.names[i], str(e))
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
