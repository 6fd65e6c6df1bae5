"""Reading one byte range of an origin file as many concurrent range requests, in order.

The first part streams through as it arrives (libtorrent's web-seed connection never sits
idle waiting for a whole part); the parts after it are read at the same time and buffered, at
most `streams` parts ahead of the reader, so memory stays at `streams × MAX_PART`. Every part
holds `slots` (the node's `originConnections`, shared by all datasets, or the gateway's
`OriginGate` in front of them) only while it talks to the origin.

A part that fails surfaces as its `OriginError` when the reader reaches it: the bytes before
it are good and already delivered, so the caller can resume from there, on another origin.

Many small parts are what a per-connection-capped origin needs, and what a fast one does not:
there each part only gets its share of the origin's bandwidth, so the first part (the one
streaming on to the reader) ends as late as the last, every other byte waits in memory until
then, and every part costs a request on both sides (bench/single_origin, fast origin: 64 parts
of 256 KiB per 16 MiB relayed 2-3x slower than 4 parts of 4 MiB). A `Pace` shared by the reads
of one origin tells them apart: a read probes with one connection for up to `PROBE_SECONDS`,
its first part alone and then parts twice as long each; once one of at least `JUDGED_PART`
came at the speed that brings a `MAX_PART` within `PROBE_SECONDS`, the origin is fast and its
reads use parts of `MAX_PART`. Otherwise, at the deadline or after a `MAX_PART` part, the rest
is split over `streams` parts as before. No part is cut short, so the origin sends nothing unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from reconciler.adapters.sources.base import Origin, OriginError
from reconciler.core.ranges import MAX_PART, MIN_PART, finish_on_close, split_range

#: How long the first part of a read goes alone to show whether the origin is fast.
PROBE_SECONDS = 0.15
#: A part this long or longer shows the connection's speed (shorter ones show its latency).
JUDGED_PART = 1 << 20
#: A fast origin's parts share it (4 per 16 MiB request): one part this many times slower
#: than a probe must be shows a cap, not the sharing.
SLOWER = 4
#: A slow origin's reads probe again this often (its connections may have become fast).
REPROBE_EVERY = 16
#: At most this long is spent reading parts to their end after the reader stopped.
FINISH_SECONDS = 5.0


def is_fast(nbytes: int, seconds: float, max_part: int = MAX_PART) -> bool:
    """Whether one connection brought `nbytes` quickly enough that parts of `max_part` need no
    more of them: a whole `max_part` within `PROBE_SECONDS`, first byte included."""
    return nbytes * PROBE_SECONDS >= max_part * max(seconds, 1e-9)


class Pace:
    """What the reads of one origin have shown about its connections (the gateway keeps one
    per origin of each torrent): None until a probe has judged it, then fast or not."""

    def __init__(self) -> None:
        self.fast: bool | None = None
        self._since_probe = 0

    def probe_next(self) -> bool:
        """Whether the next read probes: the first, and every `REPROBE_EVERY`th while slow."""
        if self.fast is None:
            return True
        if self.fast:
            return False
        self._since_probe += 1
        if self._since_probe >= REPROBE_EVERY:
            self._since_probe = 0
            return True
        return False

    def observe(self, nbytes: int, seconds: float, max_part: int = MAX_PART) -> None:
        """A whole part of a fast origin arrived: one that came `SLOWER` times slower than a
        probe must (a cap now, not parts sharing a fast origin) makes the next reads split
        over all their streams again."""
        if (self.fast and nbytes >= JUDGED_PART
                and not is_fast(nbytes * SLOWER, seconds, max_part)):
            self.fast = False


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
        self.began = 0.0  # when it got its connection slot
        self.seconds = 0.0  # from `began` to its last byte, once done without error


async def _fill(origin: Origin, path: str, part: _Part,
                slots: AbstractAsyncContextManager[Any] | None,
                on_bytes: Callable[[int], None] | None,
                throttle: Callable[[int], Awaitable[None]] | None,
                on_chunk: Callable[[int, bytes], None] | None = None) -> None:
    try:
        async with slots if slots is not None else contextlib.nullcontext():
            part.began = time.monotonic()
            part.changed.set()  # a probe's time runs from here
            stream = cast(AsyncGenerator[bytes, None],
                          origin.read(path, part.offset, part.length))
            try:
                # Read to the stream's own end (an origin sends what was asked), so that its
                # connection goes back to the pool instead of being closed mid-response.
                async for chunk in stream:
                    chunk = chunk[:part.length - part.received]
                    if not chunk:
                        break  # more than asked (or the part was cut short): stop reading
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    if on_chunk is not None:
                        on_chunk(part.offset + part.received, chunk)
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
        part.seconds = time.monotonic() - part.began
    except Exception as e:  # handed to the reader, in order
        part.error = e
    finally:
        part.done = True
        part.changed.set()


async def read_parallel(origin: Origin, path: str, offset: int, length: int, *, streams: int,
                        slots: AbstractAsyncContextManager[Any] | None = None,
                        on_bytes: Callable[[int], None] | None = None,
                        throttle: Callable[[int], Awaitable[None]] | None = None,
                        on_unread: Callable[[int, bytes], None] | None = None,
                        min_part: int = MIN_PART, max_part: int = MAX_PART,
                        pace: Pace | None = None,
                        on_chunk: Callable[[int, bytes], None] | None = None
                        ) -> AsyncIterator[bytes]:
    """`length` bytes of `path` from `offset`, in order, read through up to `streams`
    concurrent range requests. `on_bytes(n)` sees every byte read from the origin as it
    arrives (delivered or not: what the origin spent), and `throttle(n)` (a rate limit) is
    awaited after each chunk before its connection reads on. Close the generator to stop
    the reads still in flight (a part asked for with little left is read to its end first,
    `core.ranges.finish_on_close`, for at most FINISH_SECONDS; cancelling the reader's task
    cancels them all); `on_unread(offset, chunk)` then gets every byte read from the
    origin that the reader did not take (a failing part, or the reader closing early).
    With a `pace`, the parts are sized by what it knows of the origin (see the module doc).
    `on_chunk(offset, chunk)` gets every chunk the moment it arrives, before the reader takes
    it in order (a writer that puts it in place at once: engine/locking.py)."""
    probe = pace is not None and length > min_part and pace.probe_next()
    if pace is not None and pace.fast and not probe:
        parts = [_Part(a, n) for a, n in split_range(offset, length, 1, max_part, max_part)]
    else:
        parts = [_Part(a, n) for a, n in split_range(offset, length, streams, min_part, max_part)]
        if probe:  # the first part alone, then twice as long each, until judged
            parts = parts[:1]
    tasks: list[asyncio.Task[None]] = []

    def split_rest(after: _Part) -> None:
        """Parts for what follows `after`: of `max_part` for a fast origin, else by `streams`."""
        at = after.offset + after.length
        fast = pace is not None and pace.fast
        parts.extend(_Part(a, n) for a, n in split_range(
            at, offset + length - at, 1 if fast else streams,
            max_part if fast else min_part, max_part))

    def launch(i: int) -> None:
        """Start reading the parts up to `streams` ahead of part `i`, the reader's."""
        while len(tasks) < min(len(parts), i + max(1, streams)):
            tasks.append(asyncio.create_task(
                _fill(origin, path, parts[len(tasks)], slots, on_bytes, throttle, on_chunk)))

    closed = False  # the reader closed the generator (not cancelled, no error)
    try:
        i = 0
        probing = probe
        while i < len(parts):
            part = parts[i]
            launch(i)
            while True:
                while part.chunks:
                    chunk = part.chunks.pop(0)
                    part.taken += len(chunk)
                    yield chunk
                if part.done:
                    break
                part.changed.clear()
                # A probe's time runs from when its first part got a connection slot.
                left = parts[0].began + PROBE_SECONDS - time.monotonic()
                if not probing or not parts[0].began:
                    await part.changed.wait()
                elif left > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(part.changed.wait(), left)
                else:  # not judged in time: a slow origin, read through all the streams
                    assert pace is not None
                    pace.fast, probing = False, False
                    split_rest(parts[-1])
                    launch(i)
            if part.error is not None:
                raise part.error
            if probing:  # came whole in time: judge the origin by it, or probe on, longer
                assert pace is not None
                if part.length >= JUDGED_PART and is_fast(part.length, part.seconds, max_part):
                    pace.fast, probing = True, False
                    split_rest(part)
                elif part.length >= max_part:
                    pace.fast, probing = False, False
                    split_rest(part)
                elif part.offset + part.length < offset + length:
                    at = part.offset + part.length
                    parts.append(_Part(at, min(2 * part.length, max_part, offset + length - at)))
            elif pace is not None and part.seconds:
                pace.observe(part.length, part.seconds, max_part)
            i += 1
    except GeneratorExit:
        closed = True
        raise
    finally:
        # Parts asked of the origin with little left are read to their end (`finish_on_close`):
        # their bytes go to `on_unread`, for the next request of them; the rest are cancelled.
        finish = [t for t, p in zip(tasks, parts)
                  if closed and not p.done and finish_on_close(p.began > 0, p.length, p.received)]
        for t in tasks:
            if t not in finish:
                t.cancel()
        if finish:
            try:
                await asyncio.wait(finish, timeout=FINISH_SECONDS)
            finally:  # timed out, or the reader's own task was cancelled
                for t in finish:
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
