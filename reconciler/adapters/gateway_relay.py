"""One libtorrent range request relayed from the origins (`Relay`), for `gateway.Gateway`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, cast

import structlog
from aiohttp import web

from reconciler.adapters import origin_errors
from reconciler.adapters.gateway_follower import Follower
from reconciler.adapters.sources import OriginError
from reconciler.adapters.sources.parallel import read_parallel

if TYPE_CHECKING:
    from reconciler.adapters.gateway import Entry, Gateway

log = structlog.get_logger("gateway")

MAX_ATTEMPTS = 4  # origins tried for one request
BACKOFF = 0.05  # seconds before the 2nd attempt, doubling for each further one
BACKOFF_MAX = 1.0
#: Each aligned stretch of a file this long chooses its origin on its own: libtorrent's
#: requests are up to 16 MiB, and the source and mirrors share the load by stretch.
SPREAD = 4 << 20


class Relay:
    """One libtorrent range request, relayed from the origins: each attempt reads what is
    left through concurrent origin range requests (`read_parallel`, each holding a place of
    the gateway's `OriginGate` and a slot of the node's `originConnections`), and a failing
    origin hands over to the next one at the first byte not yet delivered.

    libtorrent's end game asks a second web-seed URL for 16 KiB blocks it has asked of the
    first, so the same bytes would be read from the origin twice. Instead, at every position a
    request takes, in this order: bytes relayed lately (`Gateway._kept`, gateway_kept); the bytes an older
    request is reading from there on (it follows it, a copy of each chunk as it is relayed);
    and only then the origins, up to where one of the first two can take over. A request only
    waits for older ones, so no two wait for each other."""

    def __init__(self, gw: Gateway, entry: Entry, path: str, request: web.Request,
                 resp: web.StreamResponse, start: int, stop: int) -> None:
        self.gw, self.entry, self.path = gw, entry, path
        self.key = (entry.dataset, entry.info_hash, path)
        self.request, self.resp = request, resp
        self.pos, self.stop = start, stop
        self.followers: list[Follower] = []
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

    def _older(self) -> list[Relay]:
        return [r for r in self.gw._reading.get(self.key, []) if r.seq < self.seq]

    def _leader(self) -> Relay | None:
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

    async def _follow(self, leader: Relay) -> None:
        follower = Follower(self.pos)
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
            streams=self.gw.origin_connections, slots=self.gw.gate, on_bytes=self._count,
            throttle=self.gw.limit.take, on_unread=lambda at, chunk: self._unread(i, at, chunk),
            pace=self.entry.paces[i]))
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
        self.gw.gate.count(n)

    async def _deliver(self, chunk: bytes, keep: bool = True) -> None:
        for f in self.followers:  # first: they keep their copy if our client hangs up
            f.feed(self.pos, chunk)
        if keep and self.origin is not None:  # from an origin: kept for end-game repeats
            self.gw._kept.add(self.key, self.pos, chunk, self.origin)
            # Before libtorrent has the bytes, so a hash failure always finds who sent them.
            self.entry.served.record(self.path, self.pos, self.pos + len(chunk) - 1,
                                     self.origin)
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
