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

Origins cap each connection (object stores, CDNs, busy web servers), so one libtorrent request
(up to 16 MiB, within one file) is read as many concurrent origin range requests, in order
(`sources.parallel.read_parallel`), all requests of the node together holding at most
`originConnections` of them (`slots`); and every torrent has `SEED_URLS` web-seed URLs, because
libtorrent has one request answered at a time per URL. Bytes are counted as they arrive from
the origin (`bytes_served`), `bandwidth.origin` throttles those reads, and a failing origin
hands over to a mirror at the first byte not yet relayed. libtorrent's end game asks a second
URL for blocks already asked of the first: `Relay` serves those from the read in progress
rather than from the origin again.

The listen address is a random one in 127.128.0.0/9, not 127.0.0.1: libtorrent's ip_filter
applies to outgoing web-seed connections too, so the gateway's address must be on the peer
allow-list, and 127.0.0.1 there would admit every local BitTorrent client (the kernel's
default source address for loopback). A local process can still choose any 127.x source, so
this only keeps the default path closed: the secret is what guards the origin.

The work is split by concern behind this facade: `gateway_relay.Relay` (one request, read
from the origins with failover), `gateway_kept.Kept` (the end-game keep cache) and
`gateway_follower.Follower` (a request riding on an older one's reads).
"""

from __future__ import annotations

import asyncio
import hmac
import random
import re
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import quote

import structlog
from aiohttp import web

from reconciler.adapters import origin_errors
from reconciler.adapters.gateway_kept import Kept
from reconciler.adapters.gateway_relay import (BACKOFF, BACKOFF_MAX, MAX_ATTEMPTS,  # noqa: F401
                                               SPREAD, Relay)
from reconciler.adapters.origin_gate import OriginGate
from reconciler.adapters.sources import Origin
from reconciler.adapters.sources.parallel import Pace
from reconciler.core.origin_pool import OriginPool, ServedLog, covers
from reconciler.adapters.ratelimit import TokenBucket

log = structlog.get_logger("gateway")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_SEED = re.compile(r"^s[0-9]{1,3}$")
MAX_REQUESTS = 64  # concurrent requests the gateway serves, all datasets together
MAX_REQUESTS_PER_DATASET = 16  # ...and for one dataset (libtorrent: one per web-seed URL)
#: Concurrent origin range requests of the whole node (`originConnections`), all datasets
#: and requests together; each libtorrent request is split over several of them.
ORIGIN_CONNECTIONS = 64
#: Web-seed URLs per torrent (`seed_urls`): libtorrent answers one request at a time per URL,
#: so two keep a request in flight while the previous one ends (measured: bench/single_origin).
SEED_URLS = 2
REDACTED = "<secret>"
#: The reason phrase of a request outside the node's origin share (libtorrent quotes it in
#: its url_seed_alert; the swarm knows it is no origin failure).
NOT_THE_SHARE = "Not In This Node's Origin Share"
#: The bytes relayed last (all files together) are kept in memory this long: libtorrent's end
#: game asks a second web-seed URL for blocks it has asked of the first, often just relayed.
KEPT_BYTES = 32 << 20


def private_loopback() -> str:
    """A random address in 127.128.0.0/9 (test clusters use 127.0.0.x): see the module doc."""
    return f"127.{random.randint(128, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@dataclass
class Entry:
    dataset: str
    name: str  # the torrent's top directory
    sizes: dict[str, int]
    origins: list[Origin]  # the source first, then the mirrors
    pool: OriginPool
    info_hash: str = ""
    served: ServedLog = field(default_factory=ServedLog)
    #: The byte ranges of each file this node may read from the origin (its share, see
    #: `allow`); None: any (nothing shared out, e.g. `lock` or a node alone).
    share: dict[str, tuple[tuple[int, int], ...]] | None = None
    version: str = ""  # the dataset's version, for log lines
    #: Per origin (same order): what its reads showed of its connections (`parallel.Pace`).
    paces: list[Pace] = field(default_factory=list)


@dataclass
class Gateway:
    host: str = field(default_factory=private_loopback)
    port: int = 0
    #: In every web-seed URL; never logged. repr=False keeps it out of reprs in tracebacks.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    max_requests: int = MAX_REQUESTS
    max_per_dataset: int = MAX_REQUESTS_PER_DATASET
    refused: int = 0  # requests turned away: wrong secret, or over a concurrency cap
    declined: int = 0  # requests outside the node's origin share
    bytes_served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: What libtorrent received from the gateway, per dataset: origin bytes, and bytes kept or
    #: followed (end-game repeats, not read again). The rest of its payload came from peers.
    bytes_relayed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, str] = field(default_factory=dict)  # dataset -> last origin error
    limit: TokenBucket = field(default_factory=lambda: TokenBucket(0))  # bandwidth.origin
    origin_connections: int = ORIGIN_CONNECTIONS  # the node's originConnections
    _entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Requests reading from an origin now, by (torrent, file): what a duplicate can follow.
    _reading: dict[tuple[str, str, str], list[Relay]] = field(
        default_factory=lambda: defaultdict(list))
    _kept: Kept = field(default_factory=lambda: Kept(KEPT_BYTES))  # bytes relayed last
    _seq: int = 0  # requests started so far: a request waits only for older ones

    def __post_init__(self) -> None:
        if self.origin_connections < 1:
            raise ValueError("originConnections must be at least 1")
        #: One slot per origin range request in flight, shared by every request and dataset
        #: (and by `lock`, pinning and direct reads, which read outside the gateway).
        self.slots = asyncio.Semaphore(self.origin_connections)
        #: ...of which the gateway's requests hold as many as pay (core/origin_streams.py).
        self.gate = OriginGate(self.slots, self.origin_connections)

    def register(self, dataset: str, info_hash: str, name: str,
                 files: tuple[tuple[str, int], ...], origin: Origin | Sequence[Origin],
                 labels: Sequence[str] | None = None, version: str = "") -> str:
        """Serve one torrent from `origin` (or an ordered list: the source, then its mirrors;
        `labels` name them in logs and errors); returns the web-seed URL to give libtorrent."""
        origins = [origin] if isinstance(origin, Origin) else list(origin)
        if not origins:
            raise ValueError("a torrent needs at least one origin")
        names = list(labels) if labels is not None else [
            "source" if i == 0 else f"mirrors[{i - 1}]" for i in range(len(origins))]
        self._entries[(dataset, info_hash)] = Entry(dataset, name, dict(files), origins,
                                                    OriginPool(names), info_hash,
                                                    version=version,
                                                    paces=[Pace() for _ in origins])
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
        self._kept.drop((dataset, info_hash, path), first, last + 1)  # never serve them again
        now = time.monotonic()
        blamed = sorted(entry.served.blame(path, first, last))
        self._kept.drop_origins(dataset, info_hash, set(blamed))
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
        # Kept bytes stay (LRU): a version registered again (a suspended download resuming)
        # takes what was read ahead for it; an infohash names its bytes.
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

    def allow(self, dataset: str, info_hash: str,
              share: dict[str, tuple[tuple[int, int], ...]] | None) -> None:
        """Read only these byte ranges from the origin for this torrent (core.origin_pool.
        piece_ranges of the node's share), or any when None. libtorrent's web seed asks for
        pieces a peer has (priority FROM_PEERS) once every owned piece is requested; those
        belong to the peers, so such a request is declined with a 503 and a Retry-After of
        1 s, and the origin sends each byte about once per cluster whatever libtorrent picks."""
        entry = self._entries.get((dataset, info_hash))
        if entry is not None:
            entry.share = share

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

    def _target(self, request: web.Request) -> tuple[Entry, str, int]:
        """The registered torrent, file path and file size a request names (404 otherwise).
        The infohash segment may carry a web-seed index (`<ih>.s3`, see `seed_urls`)."""
        ih, _, seed = request.match_info["ih"].partition(".")
        entry = self._entries.get((request.match_info["dataset"], ih))
        if entry is None or (seed and not _SEED.match(seed)):
            raise web.HTTPNotFound(text="unknown dataset version\n")
        tail = request.match_info.get("tail")
        if tail is None and len(entry.sizes) == 1:
            top, path = entry.name, next(iter(entry.sizes))
        else:
            top, _, path = (tail or "").partition("/")
        size = entry.sizes.get(path)
        if top != entry.name or size is None:
            raise web.HTTPNotFound(text="no such file in this torrent\n")
        return entry, path, size

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        entry, path, size = self._target(request)
        start, end, status = byte_range(request.headers.get("Range"), size)
        if entry.share is not None and not covers(entry.share.get(path, ()), start, end):
            self.declined += 1
            raise web.HTTPServiceUnavailable(reason=NOT_THE_SHARE, headers={"Retry-After": "1"},
                                             text="outside this node's origin share\n")
        resp = web.StreamResponse(status=status)
        resp.content_length = end - start + 1
        resp.content_type = "application/octet-stream"
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        relay = Relay(self, entry, path, request, resp, start, end + 1)
        try:
            await relay.run()
        except ConnectionResetError:
            # libtorrent hung up (end game, completion, its web seed switched off): not the
            # origin's fault, and nothing to report.
            pass
        return resp


def byte_range(header: str | None, size: int) -> tuple[int, int, int]:
    """(first, last, status) for a `Range` header value (None: the whole file, 200)."""
    if not header:
        return 0, size - 1, 200
    m = _RANGE.match(header.strip())
    if m:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        if start <= end:
            return start, end, 206
    raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})


def seed_urls(url: str, count: int = SEED_URLS, generation: int = 0) -> list[str]:
    """`count` distinct web-seed URLs for one registered torrent (`url` from `register`):
    libtorrent opens one connection per URL and serves one request at a time on it, so
    several URLs are several requests in flight. They differ in the infohash segment
    (`<ih>.s1`...), which no torrent name or path can make ambiguous. Each `generation` has
    URLs of its own (`.s2`, `.s3` for the second with two URLs...; the 1,000 names wrap):
    libtorrent keeps what it learnt about a URL, see Swarm.pump."""
    count = max(1, count)
    return [url if k == 0 else f"{url}.s{k}"
            for k in ((generation * count + i) % 1000 for i in range(count))]
