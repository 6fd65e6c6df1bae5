"""The web-seed gateway's origin requests in flight: as many as pay (`core.origin_streams`).

Each origin range request the gateway makes holds one place here while it talks to the
origin, and one of the node's `originConnections` slots (shared with `lock`, pinning and
direct reads) inside it. The number of places follows `core.origin_streams.observe`, fed
with the bytes the gateway counts and how full the places are; places are handed out in
the order they were asked for, so a read's parts start in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType
from typing import Callable

import structlog

from reconciler.core.origin_streams import StreamLimit, observe

log = structlog.get_logger("gateway")


class OriginGate:
    """An async context manager: `async with gate:` around one origin request."""

    def __init__(self, slots: asyncio.Semaphore, ceiling: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.state = StreamLimit.new(ceiling)
        self.clock = clock
        self.busy = 0  # places held
        self.counted = 0  # bytes the origins brought through the gateway
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.state.limit

    def count(self, n: int) -> None:
        """`n` more bytes arrived from an origin."""
        self.counted += n
        self._observe()

    def _observe(self) -> None:
        before = self.state.limit
        self.state = observe(self.state, self.clock(), self.counted, self.busy,
                             len(self._queue))
        if self.state.limit != before:
            log.debug("origin requests in flight", limit=self.state.limit, before=before)
            self._wake()

    def _wake(self) -> None:
        while self._queue and self.busy < self.state.limit:
            waiter = self._queue.popleft()
            if not waiter.done():
                self.busy += 1  # the place passes to the waiter
                waiter.set_result(None)

    def _leave(self) -> None:
        self.busy -= 1
        self._wake()

    async def __aenter__(self) -> None:
        self._observe()
        if self.busy < self.state.limit and not self._queue:
            self.busy += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._leave()  # it was given a place as it was cancelled
                elif waiter in self._queue:
                    self._queue.remove(waiter)
                raise
        try:
            await self.slots.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.slots.release()
        self._leave()
        self._observe()
