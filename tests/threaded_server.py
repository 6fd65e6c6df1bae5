"""The scaffolding every test HTTP server shares: aiohttp on its own event loop in a daemon
thread, so reconciler subprocesses can reach it while the test body stays synchronous."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Self

from aiohttp import web


class ThreadedServer:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _start(self) -> None:
        """Set up `self._runner` and its sites, on the server's loop."""
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def write_body(resp: web.StreamResponse, body: bytes, rate: int | None,
                     throttle: asyncio.Lock, count: Callable[[int], None]) -> None:
    """Write `body` 64 KiB at a time; `rate` (bytes/s, None = unthrottled) bounds every
    response holding `throttle` together. `count(n)` after each chunk reached the socket."""
    for i in range(0, len(body), 1 << 16):
        chunk = body[i:i + (1 << 16)]
        if rate:
            async with throttle:
                await asyncio.sleep(len(chunk) / rate)
        await resp.write(chunk)
        count(len(chunk))
