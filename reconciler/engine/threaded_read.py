"""One file of a version read as concurrent ranges, each on a thread of its own (the origin's
`RangeReader`: an http(s) GET, sources/blocking_get.py, a local file, sources/file.py, or a
ranged S3 `get_object`, sources/s3.py):
written at its offset and hashed where it arrives.

The ranges are whole pieces (the last may end the file), so every thread hashes its own
pieces (`PieceRun`) and none waits for another: no byte is held in memory beyond one buffer
per range, and a kill -9 loses at most that. The event loop only hands out connection slots,
judges the origin (`Caps`), counts bytes and paces them (`arrived`, given a batch every 4 MiB
or 0.1 s and awaited by the thread before its next batch: a `bandwidth.origin` limit slows the
thread, and TCP the origin).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any
from pathlib import Path

import structlog

from reconciler.adapters.offset_writer import create, pwritev_all
from reconciler.adapters.sources.base import OriginFile
from reconciler.adapters.sources.threaded import RangeReader, Reading, Stopped
from reconciler.core.ranges import MIN_PART
from reconciler.torrent.hybrid import FileHasher, FileHashes, PieceRun

#: Threads every threaded read of the process shares (a thread per range in flight; the
#: ranges in flight are bounded by `streams` and the node's `originConnections`).
MAX_THREADS = 64
#: A thread hands the loop its bytes (counters, `bandwidth.origin`) this often, at least.
REPORT_BYTES = 4 << 20
REPORT_SECONDS = 0.1
#: Bytes/s under which one connection shows the origin caps connections (one thread takes
#: hundreds of MiB/s from a fast origin).
CAPPED_RATE = 16 << 20
#: Bytes a read's connections bring before their rate judges the origin (unless one is slow).
JUDGED_BYTES = 1 << 20
#: A fast origin's threads ask for this much at a time (adjacent ranges in one request): a
#: request per 2 MiB range (64 ranges in flight) took a fifth of a direct read's speed.
FAST_RANGE = 16 << 20
#: How often a thread waiting for `arrived` (a rate limit) looks whether the read stopped.
POLL = 0.1

log = structlog.get_logger()

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(MAX_THREADS,
                                                          thread_name_prefix="syncbit-range")
        return _pool


class Caps:
    """What the files of one build showed of their origin: None until a thread's first bytes
    tell, then True (a connection came slower than `CAPPED_RATE`: every range at once) or
    False (a fast origin: a few threads, each asking for `FAST_RANGE` at a time)."""

    capped: bool | None = None


def piece_parts(size: int, piece_size: int, streams: int) -> list[tuple[int, int]]:
    """`(offset, length)` ranges covering a file of `size` bytes: `streams` of them or fewer,
    each whole pieces (the last one ends the file), none shorter than `MIN_PART` unless the
    file is."""
    if size <= 0:
        return []
    pieces = -(-size // piece_size)
    per = max(-(-pieces // max(1, streams)), -(-MIN_PART // piece_size))
    return [(p * piece_size, min(per * piece_size, size - p * piece_size))
            for p in range(0, pieces, per)]


async def read_file(get: RangeReader, f: OriginFile, piece_size: int, dest: Path | None, *,
                    streams: int, fast_streams: int, slots: asyncio.Semaphore | None,
                    arrived: Callable[[int], Coroutine[Any, Any, None]],
                    caps: Caps | None = None) -> FileHashes:
    """Read `f` through `get` into `dest` (created or truncated; None: hash only) and hash it,
    `fast_streams` ranges at a time, or up to `streams` once the origin shows a cap.
    Raises NotRanged when the origin does not serve a range plainly (before that range's
    first byte: the caller reads the file its own way), OriginError, or the disk's OSError.
    Cancelled or failed, it returns only once every thread has stopped: nothing is written
    to `dest` after it."""
    loop = asyncio.get_running_loop()
    parts = piece_parts(f.size, piece_size, streams)
    runs: dict[int, PieceRun] = {}  # by the first range of each request
    reading = Reading()

    fd = await asyncio.to_thread(create, dest) if dest is not None else None

    def wait(paced: concurrent.futures.Future[None] | None) -> None:
        """Until the loop has taken a batch's bytes (its rate limit too), or the read stops."""
        while paced is not None:
            try:
                paced.result(POLL)
                return
            except concurrent.futures.TimeoutError:
                if reading.stopped.is_set():
                    paced.cancel()
                    raise Stopped() from None

    def run(first: int, last: int) -> None:
        """Ranges `first`..`last` (adjacent) in one request, hashed as one run of pieces."""
        at = parts[first][0]
        length = parts[last][0] + parts[last][1] - at
        hasher = runs[first] = PieceRun(piece_size)
        paced: concurrent.futures.Future[None] | None = None
        unreported, reported_at = 0, time.monotonic()

        def report() -> None:
            """Hand the bytes so far to the loop; wait for the batch before (see below)."""
            nonlocal paced, unreported, reported_at
            wait(paced)
            now = time.monotonic()
            paced = asyncio.run_coroutine_threadsafe(took(unreported, now - reported_at), loop)
            unreported, reported_at = 0, now

        def into(view: memoryview) -> None:
            nonlocal at, unreported
            if fd is not None:
                pwritev_all(fd, [view], at)
            hasher.update(view)
            at += len(view)
            unreported += len(view)
            # The loop takes a batch while the thread reads on, and the thread waits only for
            # the batch before (a rate limit holds it back a batch late): a round trip through
            # the loop per buffer made the threads wait for the loop's turn on a busy CPU
            # (slower than the event loop's own receive path).
            if unreported >= REPORT_BYTES or time.monotonic() - reported_at >= REPORT_SECONDS:
                report()

        get.read_range(at, length, f.size, into, reading)
        if unreported:
            report()
        wait(paced)

    # Workers, each a thread taking the next range when it is done with one (no turn of the
    # event loop between ranges: that cost a fifth of the speed with 64 ranges), each holding
    # a connection slot. A fast origin's file is read by `fast_streams` of them: every thread
    # more only contends for the GIL (16 at once were 1.3x slower than 4 on 2 cores). A
    # connection slower than `CAPPED_RATE` shows a per-connection cap: then `streams` go.
    caps = caps or Caps()
    todo = collections.deque(range(len(parts)))  # ranges not yet asked for, in order
    workers: list[asyncio.Task[None]] = []
    started: list[asyncio.Future[None]] = []

    take = threading.Lock()

    def drain() -> None:
        while not reading.stopped.is_set():
            with take:  # the next range, and the ones after it up to FAST_RANGE once fast
                if not todo:
                    return
                first = last = todo.popleft()
                while (caps.capped is False and todo and todo[0] == last + 1
                       and parts[todo[0]][0] + parts[todo[0]][1] - parts[first][0] <= FAST_RANGE):
                    last = todo.popleft()
            run(first, last)

    async def worker() -> None:
        async with slots if slots is not None else contextlib.nullcontext():
            if reading.stopped.is_set() or not todo:
                return
            fut = asyncio.wrap_future(_threads().submit(drain))
            started.append(fut)
            await asyncio.shield(fut)

    def launch(n: int) -> None:
        while len(workers) < min(n, len(parts)):
            workers.append(asyncio.create_task(worker()))

    seen = [0, 0.0]  # bytes and thread-seconds reported before the origin was judged

    async def took(n: int, seconds: float) -> None:
        if caps.capped is None:
            # Judged on a connection's rate over `JUDGED_BYTES`, or as soon as one report
            # took `REPORT_SECONDS` (a slow connection); a short range alone (its connection's
            # set-up and first byte in its time) judges nothing.
            seen[0] += n
            seen[1] += seconds
            if seen[0] >= JUDGED_BYTES or seconds >= REPORT_SECONDS:
                caps.capped = seen[0] < CAPPED_RATE * seen[1]
                log.debug("origin speed judged", path=f.path, capped=caps.capped,
                          rate=round(seen[0] / max(seen[1], 1e-9)))
        if caps.capped:
            launch(streams)
        await arrived(n)

    launch(streams if caps.capped else max(1, fast_streams))
    try:
        while True:
            running = [w for w in workers if not w.done()]
            if not running:
                break
            await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
            for w in workers:
                error = w.exception() if w.done() else None
                if error is not None:
                    raise error
    finally:
        reading.stop()  # a no-op once every range is read
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # Every thread stops within a buffer (its socket shut down), and nothing may write
        # after this returns: wait for them even when cancelled again meanwhile.
        pending = asyncio.gather(*started, return_exceptions=True)
        while not pending.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(pending)
        if fd is not None:
            os.close(fd)
    if todo:  # pragma: no cover - every worker ended without error, so none is left
        raise RuntimeError(f"{f.path}: ranges left unread")
    hasher = FileHasher(piece_size)
    ordered = [runs[i] for i in sorted(runs)]
    for k, r in enumerate(ordered):
        if r.tail and k < len(ordered) - 1:  # pragma: no cover - ranges are whole pieces
            raise RuntimeError(f"{f.path}: a range ended inside a piece")
        if r.v1:
            hasher.add_pieces(r.v1, r.layer)
    if ordered:
        hasher.update(bytes(ordered[-1].tail))
    return await asyncio.to_thread(hasher.finish)
