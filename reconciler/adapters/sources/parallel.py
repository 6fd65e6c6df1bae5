"""Reading one byte range of an origin file as many concurrent range requests, in order.

The first part streams through as it arrives (libtorrent's web-seed connection never sits
idle waiting for a whole part); the parts after it are read at the same time and buffered, at
most `streams` parts ahead of the reader, so memory stays at `streams × MAX_PART`. Every part
holds one slot of `slots` (the node's `originConnections`, shared by all datasets) only while
it talks to the origin.

A part that fails surfaces as its `OriginError` when the reader reaches it: the bytes before
it are good and already delivered, so the caller can resume from there, on another origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import cast

from reconciler.adapters.sources.base import Origin, OriginError
from reconciler.core.ranges import MAX_PART, MIN_PART, split_range


class _Part:
    """One range's bytes as they arrive, for the reader to take in order."""

    def __init__(self, offset: int, length: int) -> None:
        self.offset, self.length = offset, length
        self.chunks: list[bytes] = []
        self.received = 0
        self.taken = 0  # bytes the reader has taken
        self.done = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()


async def _fill(origin: Origin, path: str, part: _Part, slots: asyncio.Semaphore | None,
                on_bytes: Callable[[int], None] | None,
                throttle: Callable[[int], Awaitable[None]] | None) -> None:
    try:
        async with slots if slots is not None else contextlib.nullcontext():
            stream = cast(AsyncGenerator[bytes, None],
                          origin.read(path, part.offset, part.length))
            try:
                # Read to the stream's own end (an origin sends what was asked), so that its
                # connection goes back to the pool instead of being closed mid-response.
                async for chunk in stream:
                    chunk = chunk[:part.length - part.received]
                    if not chunk:
                        break  # more than asked: stop reading
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    part.chunks.append(chunk)
                    part.received += len(chunk)
                    part.changed.set()
                    if throttle is not None:  # holding the connection: TCP slows the origin
                        await throttle(len(chunk))
            finally:
                await stream.aclose()
        if part.received < part.length:
            raise OriginError(f"{path}: the origin sent {part.received} of {part.length} "
                              f"bytes from offset {part.offset}")
    except Exception as e:  # handed to the reader, in order
        part.error = e
    finally:
        part.done = True
        part.changed.set()


async def read_parallel(origin: Origin, path: str, offset: int, length: int, *, streams: int,
                        slots: asyncio.Semaphore | None = None,
                        on_bytes: Callable[[int], None] | None = None,
                        throttle: Callable[[int], Awaitable[None]] | None = None,
                        on_unread: Callable[[int, bytes], None] | None = None,
                        min_part: int = MIN_PART, max_part: int = MAX_PART,
                        ) -> AsyncIterator[bytes]:
    """`length` bytes of `path` from `offset`, in order, read through up to `streams`
    concurrent range requests. `on_bytes(n)` sees every byte read from the origin as it
    arrives (delivered or not: what the origin spent), and `throttle(n)` (a rate limit) is
    awaited after each chunk before its connection reads on. Close the generator to cancel
    the reads still in flight; `on_unread(offset, chunk)` then gets every byte read from the
    origin that the reader did not take (a failing part, or the reader closing early)."""
    parts = [_Part(a, n) for a, n in split_range(offset, length, streams, min_part, max_part)]
    tasks: list[asyncio.Task[None]] = []
    try:
        for i, part in enumerate(parts):
            while len(tasks) < min(len(parts), i + max(1, streams)):
                tasks.append(asyncio.create_task(
                    _fill(origin, path, parts[len(tasks)], slots, on_bytes, throttle)))
            while True:
                while part.chunks:
                    chunk = part.chunks.pop(0)
                    part.taken += len(chunk)
                    yield chunk
                if part.done:
                    break
                part.changed.clear()
                await part.changed.wait()
            if part.error is not None:
                raise part.error
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if on_unread is not None:
            for part in parts[:len(tasks)]:
                at = part.offset + part.taken
                for chunk in part.chunks:
                    on_unread(at, chunk)
                    at += len(chunk)
