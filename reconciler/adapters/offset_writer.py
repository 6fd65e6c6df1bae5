"""A file written at the offsets its bytes come from, as they arrive, on a thread of its own.

Concurrent range requests deliver a file out of order. Writing each chunk where it belongs as
it arrives, instead of in order behind the first part, means a kill -9 loses only what waits
here for the disk (at most `WAKE` bytes or `LINGER` seconds' worth, plus a write under way),
not every part buffered ahead of the reader; libtorrent's check after a restart keeps every
whole piece on disk.

The thread wakes once per `WAKE` bytes queued (or after `LINGER`) and writes all that waits,
adjacent chunks in one `pwritev`: a wake-up per chunk made every chunk a GIL hand-off between
the event loop, this thread and the hashing threads (py-spy: a third of a direct read's samples
were threads waiting for the GIL). `room()` makes the reader wait while more than `limit`
bytes are queued, so a slow disk slows the origin reads (TCP) instead of filling memory.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

WAKE = 1 << 20  # bytes queued that wake the writing thread
LINGER = 0.05  # seconds a smaller queue waits for the thread
LIMIT = 16 << 20  # bytes queued for the disk before `room()` waits
IOV_MAX = 1024  # buffers per pwritev (Linux's limit)


class OffsetWriter:
    """Write `path` (created, or truncated) at the offsets of the chunks `put` into it."""

    def __init__(self, fd: int, path: Path, limit: int = LIMIT) -> None:
        self.path = path
        self.limit = limit
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: deque[tuple[int, bytes]] = deque()  # under _lock
        self._pending = 0  # bytes put and not yet written (under _lock)
        self._unsignalled = 0  # bytes put since the thread was last woken
        self._error: OSError | None = None
        self._room: asyncio.Future[None] | None = None  # what readers waiting for room await
        self._closing = False
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="offset-writer", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, limit: int = LIMIT) -> OffsetWriter:
        return cls(await asyncio.to_thread(create, path), path, limit)

    def put(self, offset: int, chunk: bytes) -> None:
        """Queue `chunk` for `offset`; raises the OSError of an earlier write that failed."""
        if self._closing:
            raise ValueError(f"{self.path}: put() after close()")
        if self._error is not None:
            raise self._error
        with self._lock:
            self._queue.append((offset, chunk))
            self._pending += len(chunk)
        self._unsignalled += len(chunk)
        if self._unsignalled >= WAKE:
            self._unsignalled = 0
            self._wake.set()

    async def room(self) -> None:
        """Wait until at most `limit` bytes are queued (raises a failed write's OSError)."""
        while self._pending > self.limit and self._error is None:
            if self._room is None or self._room.done():  # one future for every reader waiting
                self._room = self._loop.create_future()
            self._wake.set()
            await asyncio.shield(self._room)
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Write everything queued, then close the file. Also after a cancellation: what
        arrived is kept (the thread finishes on its own). Raises a failed write's OSError."""
        if not self._closing:
            self._closing = True
            self._wake.set()
        await asyncio.shield(self._closed)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(LINGER)
                self._wake.clear()
                with self._lock:
                    batch = list(self._queue)
                    self._queue.clear()
                if batch and self._error is None:
                    try:
                        self._write(batch)
                    except OSError as e:
                        self._error = e
                with self._lock:
                    self._pending -= sum(len(c) for _, c in batch)
                    last = self._closing and not self._queue
                if self._room is not None and (self._pending <= self.limit or self._error):
                    self._call(self._free_room)
                if last:
                    break
        finally:
            try:
                os.close(self._fd)
            except OSError as e:
                self._error = self._error or e
            self._call(self._set_closed)

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _free_room(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None

    def _set_closed(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        self._free_room()

    def _write(self, batch: list[tuple[int, bytes]]) -> None:
        """Each run of adjacent chunks in one pwritev."""
        batch.sort(key=lambda item: item[0])
        i = 0
        while i < len(batch):
            start, bufs, end = batch[i][0], [batch[i][1]], batch[i][0] + len(batch[i][1])
            i += 1
            while i < len(batch) and batch[i][0] == end and len(bufs) < IOV_MAX:
                bufs.append(batch[i][1])
                end += len(batch[i][1])
                i += 1
            pwritev_all(self._fd, bufs, start)


def create(path: Path) -> int:
    """A write descriptor of `path`, created (its directory too) or truncated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def pwritev_all(fd: int, bufs: Sequence[bytes | memoryview], offset: int) -> None:
    """All of `bufs`, one after the other, at `offset` of `fd` (pwritev may write less)."""
    views = [memoryview(b) for b in bufs]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
