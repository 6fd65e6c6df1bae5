"""Reads of one range on a thread of its own (engine/threaded_read.py): what an origin offers
for them (`RangeReader`, from `Origin.range_reader`), how a read's ranges are stopped together
(`Reading`), and the two ways a range ends early.

A thread per range, writing and hashing where the bytes arrive, keeps the event loop's
per-chunk work (and its GIL turns) out of a read whose speed is the CPU's: an http(s) origin
on a fast network (sources/blocking_get.py), a local or NFS directory (sources/file.py), an
S3-compatible store (sources/s3.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from reconciler.adapters.sources.base import OriginError


class NotRanged(OriginError):
    """The origin did not answer the range straight away: read through `Origin.read`."""


class Stopped(Exception):
    """The read was stopped (`Reading.stop`) while this range was being read."""


class Reading:
    """The ranges of one read in flight on their threads: `stop()` ends them all at once,
    a range blocked in a socket read included (its socket is shut down under it)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    @contextmanager
    def holding(self, sock: socket.socket) -> Iterator[None]:
        with self._lock:
            self._socks.add(sock)
        try:
            if self.stopped.is_set():
                raise Stopped()
            yield
        finally:
            with self._lock:
                self._socks.discard(sock)


class RangeReader(Protocol):
    """One file of an origin, read a range at a time on the calling thread."""

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        """Hand `length` bytes from `offset` of the file (listed as `size` bytes) to `into`,
        in order (the view is reused: `into` copies or writes what it keeps). Raises
        NotRanged (nothing read: the caller reads through `Origin.read`), OriginError (the
        origin failed, sent less, or the file changed), Stopped; an error of `into` (the
        disk's OSError) as it is."""


class NoRanges:
    """The reader of a file with no bytes: there is no range to ask for, so no origin is
    asked anything (not even where the file is)."""

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        if length > 0:
            raise NotRanged("an empty file has no ranges")
