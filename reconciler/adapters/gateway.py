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
URL for blocks already asked of the first: `_Relay` serves those from the read in progress
rather than from the origin again.

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
from collections import defaultdict, deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Sequence, cast
from urllib.parse import quote

import structlog
from aiohttp import web

from reconciler.adapters import origin_errors
from reconciler.adapters.sources import Origin, OriginError
from reconciler.adapters.sources.parallel import read_parallel
from reconciler.core.origin_pool import OriginPool, ServedLog, covers
from reconciler.adapters.ratelimit import TokenBucket

log = structlog.get_logger("gateway")

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_SEED = re.compile(r"^s[0-9]{1,3}$")
MAX_ATTEMPTS = 4  # origins tried for one request
BACKOFF = 0.05  # seconds before the 2nd attempt, doubling for each further one
BACKOFF_MAX = 1.0
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
#: Each aligned stretch of a file this long chooses its origin on its own: libtorrent's
#: requests are up to 16 MiB, and the source and mirrors share the load by stretch.
SPREAD = 4 << 20


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
    info_hash: str = ""
    served: ServedLog = field(default_factory=ServedLog)
    #: The byte ranges of each file this node may read from the origin (its share, see
    #: `allow`); None: any (nothing shared out, e.g. `lock` or a node alone).
    share: dict[str, tuple[tuple[int, int], ...]] | None = None
    version: str = ""  # the dataset's version, for log lines


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
    _entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Requests reading from an origin now, by (torrent, file): what a duplicate can follow.
    _reading: dict[tuple[str, str, str], list[_Relay]] = field(
        default_factory=lambda: defaultdict(list))
    _kept: _Kept = field(default_factory=lambda: _Kept(KEPT_BYTES))  # bytes relayed last
    _seq: int = 0  # requests started so far: a request waits only for older ones

    def __post_init__(self) -> None:
        if self.origin_connections < 1:
            raise ValueError("originConnections must be at least 1")
        #: One slot per origin range request in flight, shared by every request and dataset.
        self.slots = asyncio.Semaphore(self.origin_connections)

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
        self._entries[(dataset, info_hash)] = _Entry(dataset, name, dict(files), origins,
                                                     OriginPool(names), info_hash,
                                                     version=version)
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

    def _target(self, request: web.Request) -> tuple[_Entry, str, int]:
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
        relay = _Relay(self, entry, path, request, resp, start, end + 1)
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


_Key = tuple[str, str, str]  # (dataset, infohash, file)


class _Kept:
    """The last `limit` bytes read from origins, as chunks by (dataset, infohash, file) and
    offset: relayed, or read ahead for a request that ended first."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.files: dict[_Key, dict[int, tuple[bytes, int]]] = defaultdict(dict)
        self.order: deque[tuple[_Key, int]] = deque()

    def add(self, key: _Key, offset: int, chunk: bytes, origin: int) -> None:
        if not chunk or offset in self.files[key]:
            return
        self.files[key][offset] = (chunk, origin)
        self.order.append((key, offset))
        self.size += len(chunk)
        while self.size > self.limit and self.order:
            k, off = self.order.popleft()
            old = self.files.get(k, {}).pop(off, None)
            self.size -= len(old[0]) if old is not None else 0

    def at(self, key: _Key, pos: int) -> tuple[bytes, int]:
        """Kept bytes from `pos` on (one chunk's worth; empty if none) and their origin."""
        for off, (chunk, origin) in self.files.get(key, {}).items():
            if off <= pos < off + len(chunk):
                return chunk[pos - off:], origin
        return b"", -1

    def next_start(self, key: _Key, pos: int, stop: int) -> int:
        """Where the first kept chunk after `pos` begins, or `stop`."""
        return min((off for off in self.files.get(key, {}) if pos < off < stop), default=stop)

    def drop(self, key: _Key, first: int, stop: int) -> None:
        chunks = self.files.get(key, {})
        for off in [o for o, (c, _) in chunks.items() if o < stop and first < o + len(c)]:
            self.size -= len(chunks.pop(off)[0])

    def drop_origins(self, dataset: str, info_hash: str, origins: set[int]) -> None:
        """Everything these origins sent for this torrent (they sent bad bytes)."""
        for key, chunks in self.files.items():
            if key[:2] == (dataset, info_hash):
                for off in [o for o, (_, i) in chunks.items() if i in origins]:
                    self.size -= len(chunks.pop(off)[0])


class _Follower:
    """A request waiting for bytes another request is reading (see `_Relay.run`)."""

    def __init__(self, pos: int) -> None:
        self.fed = pos  # the next byte it needs
        self.chunks: deque[bytes] = deque()
        self.ended = False  # the leader has no more to give
        self.changed = asyncio.Event()

    def feed(self, at: int, chunk: bytes) -> None:
        if at <= self.fed < at + len(chunk):
            piece = chunk[self.fed - at:]
            self.chunks.append(piece)
            self.fed += len(piece)
            self.changed.set()

    def end(self) -> None:
        self.ended = True
        self.changed.set()


class _Relay:
    """One libtorrent range request, relayed from the origins: each attempt reads what is
    left through concurrent origin range requests (`read_parallel`, holding slots of the
    node's `originConnections`), and a failing origin hands over to the next one at the
    first byte not yet delivered.

    libtorrent's end game asks a second web-seed URL for 16 KiB blocks it has asked of the
    first, so the same bytes would be read from the origin twice. Instead, at every position a
    request takes, in this order: bytes relayed lately (`Gateway._kept`); the bytes an older
    request is reading from there on (it follows it, a copy of each chunk as it is relayed);
    and only then the origins, up to where one of the first two can take over. A request only
    waits for older ones, so no two wait for each other."""

    def __init__(self, gw: Gateway, entry: _Entry, path: str, request: web.Request,
                 resp: web.StreamResponse, start: int, stop: int) -> None:
        self.gw, self.entry, self.path = gw, entry, path
        self.key = (entry.dataset, entry.info_hash, path)
        self.request, self.resp = request, resp
        self.pos, self.stop = start, stop
        self.followers: list[_Follower] = []
        self.origin: int | None = None  # the origin being read now
        self.prefer: int | None = None  # the origin of the bytes taken from others so far
        gw._seq += 1
        self.seq = gw._seq

    async def run(self) -> None:
        reading = self.gw._reading[self.key]
        reading.append(self)
        try:
            while self.pos < self.stop:
                # Only bytes of an origin usable now, and then the rest from that origin too:
                # a piece mixing two origins' bytes that fails its check would blame both.
                usable = self.entry.pool.candidates(f"{self.path}:{self.pos}", time.monotonic())
                kept, origin = self.gw._kept.at(self.key, self.pos)
                leader = self._leader()
                if kept and origin in usable:
                    self.prefer = origin
                    await self._deliver(kept[:self.stop - self.pos], keep=False)
                elif leader is not None and (leader.origin is None or leader.origin in usable):
                    self.prefer = leader.origin  # None: it is between two origins
                    await self._follow(leader)
                else:
                    end = self._next_start()
                    if len(usable) > 1:  # the source and mirrors share the load by stretch
                        end = min(end, self._spread_end())
                    await self._read_origins(end)
                    self.prefer = None
        finally:
            reading.remove(self)
            if not reading:
                del self.gw._reading[self.key]
            for f in self.followers:
                f.end()

    def _older(self) -> list[_Relay]:
        return [r for r in self.gw._reading.get(self.key, []) if r.seq < self.seq]

    def _leader(self) -> _Relay | None:
        """An older request reading, from an origin, the bytes from this one's position on."""
        return max((r for r in self._older() if r.pos <= self.pos < r.stop),
                   key=lambda r: r.stop, default=None)

    def _spread_end(self) -> int:
        """Where this position's SPREAD-aligned stretch of the file ends: each stretch picks
        its origin on its own (OriginPool spreads stretches over the source and mirrors)."""
        return (self.pos // SPREAD + 1) * SPREAD

    def _next_start(self) -> int:
        """Where kept bytes or an older request's reading begin after this position."""
        end = self.gw._kept.next_start(self.key, self.pos, self.stop)
        return min([end] + [r.pos for r in self._older() if self.pos < r.pos < end])

    async def _follow(self, leader: _Relay) -> None:
        follower = _Follower(self.pos)
        leader.followers.append(follower)
        try:
            while self.pos < self.stop:
                while follower.chunks and self.pos < self.stop:
                    await self._deliver(follower.chunks.popleft()[:self.stop - self.pos],
                                        keep=False)
                if follower.ended or self.pos >= self.stop:
                    return
                follower.changed.clear()
                await follower.changed.wait()
        finally:
            leader.followers.remove(follower)

    async def _read_origins(self, end: int) -> None:
        """Bytes up to `end` from the origins: the source or a mirror, failing over."""
        pool = self.entry.pool
        stretch = self.pos // SPREAD * SPREAD
        candidates = pool.candidates(f"{self.path}:{stretch}", time.monotonic())
        if self.prefer in candidates:
            candidates.remove(self.prefer)
            candidates.insert(0, self.prefer)
        for attempt, i in enumerate(candidates[:MAX_ATTEMPTS]):
            if attempt:
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF * 2 ** (attempt - 1)))
            if await self._attempt(i, end):
                self.gw.errors.pop(self.entry.dataset, None)
                return
        self._give_up(bool(candidates))

    async def _attempt(self, i: int, end: int) -> bool:
        """Read up to `end` from origin `i`; False when it failed (recorded in the pool)."""
        pool, began, verdict = self.entry.pool, self.pos, False
        pool.begin(i, time.monotonic())
        self.origin = i
        stream = cast(AsyncGenerator[bytes, None], read_parallel(
            self.entry.origins[i], self.path, self.pos, end - self.pos,
            streams=self.gw.origin_connections, slots=self.gw.slots, on_bytes=self._count,
            throttle=self.gw.limit.take, on_unread=lambda at, chunk: self._unread(i, at, chunk)))
        try:
            async for chunk in stream:
                await self._deliver(chunk[:end - self.pos])
                if self.pos >= end:
                    break
            if self.pos < end:
                raise OriginError(f"{self.path}: the origin sent {self.pos - began} of "
                                  f"{end - began} bytes from offset {began}")
            pool.success(i, time.monotonic())
            verdict = True
            return True
        except OriginError as e:
            pool.failure(i, time.monotonic(), str(e))
            verdict = True
            log.warning("origin read failed", dataset=self.entry.dataset, version=self.entry.version,
                        origin=pool.names[i], file=self.path, error=str(e))
            origin_errors.record(self.entry.dataset, pool.names[i], str(e))
            return False
        finally:
            self.origin = None
            if not verdict:
                pool.abandon(i)
            self.entry.served.record(self.path, began, self.pos - 1, i)
            await stream.aclose()  # cancels the origin reads still in flight

    def _unread(self, i: int, at: int, chunk: bytes) -> None:
        """Bytes origin `i` sent that this request did not relay (it ended, or an earlier
        part failed): kept for the next request that wants them, and blamed on `i` if they
        fail a hash check then."""
        self.gw._kept.add(self.key, at, chunk, i)
        self.entry.served.record(self.path, at, at + len(chunk) - 1, i)

    def _count(self, n: int) -> None:
        # Counted as it arrives from the origin, relayed or not: what the origin spent.
        self.gw.bytes_served[self.entry.dataset] += n

    async def _deliver(self, chunk: bytes, keep: bool = True) -> None:
        for f in self.followers:  # first: they keep their copy if our client hangs up
            f.feed(self.pos, chunk)
        if keep and self.origin is not None:  # from an origin: kept for end-game repeats
            self.gw._kept.add(self.key, self.pos, chunk, self.origin)
        if not self.resp.prepared:  # headers go once the origin has answered
            await self.resp.prepare(self.request)
        await self.resp.write(chunk)
        self.gw.bytes_relayed[self.entry.dataset] += len(chunk)
        self.pos += len(chunk)

    def _give_up(self, had_candidates: bool) -> None:
        error = self.entry.pool.summary()
        self.gw.errors[self.entry.dataset] = error
        if not self.resp.prepared:
            if not had_candidates:
                raise web.HTTPServiceUnavailable(text=f"{error}\n")
            raise web.HTTPBadGateway(text=f"{error}\n")
        raise OriginError(error)  # mid-body: drop the connection, libtorrent retries
