"""A token bucket for `bandwidth.origin`: what this node pulls from origins, all datasets
together. libtorrent has no web-seed rate limit (research notes §4), so the gateway applies it.

Hand-written (20 lines): the usual async limiters (aiolimiter) count requests, not bytes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


class TokenBucket:
    def __init__(self, rate: int, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate  # bytes/s; 0 = unlimited
        self.capacity = burst if burst is not None else max(rate // 4, 64 << 10)
        self.tokens = float(self.capacity)
        self._clock, self._sleep = clock, sleep
        self._t = clock()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        """Wait until `n` bytes may pass. Debt is allowed, so a chunk larger than the burst
        still passes, after the wait its size costs."""
        if self.rate <= 0:
            return
        async with self._lock:
            now = self._clock()
            self.tokens = min(float(self.capacity), self.tokens + (now - self._t) * self.rate)
            self._t = now
            self.tokens -= n
            if self.tokens < 0:
                await self._sleep(-self.tokens / self.rate)
