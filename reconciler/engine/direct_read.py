"""A locked version read straight from its source into staging (core.transfer.read_directly).

libtorrent takes a web seed's bytes at about 250 MiB/s on a 2-vCPU machine; a node that is a
version's only target has no swarm to share the reading with, so it reads the source the way
`lock` does: concurrent range requests, every chunk written in place as it arrives
(`OffsetWriter`), every byte hashed in order from memory. When the read ends, the executor adds
the torrent: seeded as it is if the hashes make the lock's info-hash, else checked by libtorrent,
which keeps every good piece and fetches the rest through the web-seed gateway (mirrors
included). A read that is stopped (paused by the scheduler, handed over when another download
starts, no longer wanted) leaves what it wrote for that check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.adapters.sources import Origin, OriginContext, OriginError
from reconciler.core.pinning import check as check_torrent
from reconciler.core.plan import Target
from reconciler.engine.locking import build_lock
from reconciler.model.ids import InfoHash


@dataclass
class DirectRead:
    """One version being read directly; `task` ends True when what it wrote is exactly the
    lock's bytes (then seeded without libtorrent's check)."""

    target: Target
    info_hash: InfoHash
    task: asyncio.Task[bool] | None = None
    done: int = 0  # bytes received from the origin (and queued for the disk)
    base_origin: int = 0  # bytesFromOrigin saved by an earlier process (staging metadata)
    served_base: int = 0  # the gateway's count for the dataset when the read began
    stopping: bool = False  # halted: libtorrent goes on from what it wrote
    pause: str | None = None  # the scheduler paused it: libtorrent's download starts paused
    dropped: bool = False  # no longer wanted: nothing starts when it ends

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done() and not self.stopping

    def halt(self) -> None:
        """Stop reading; what was received is written before the task ends."""
        self.stopping = True
        if self.task is not None:
            self.task.cancel()

    def matched(self) -> bool:
        """The read ended and what it wrote is the lock's version, byte for byte."""
        t = self.task
        return (t is not None and t.done() and not t.cancelled() and t.exception() is None
                and t.result())


async def read_version(read: DirectRead, origin: Origin, ctx: OriginContext, dest: Path, *,
                       throttle: Callable[[int], Awaitable[None]], streams: int,
                       slots: asyncio.Semaphore | None, on_file: Callable[[str], None],
                       log_: structlog.BoundLogger) -> bool:
    """Read `read.target`'s version from `origin` into `dest` (its top directory in staging),
    hashing it; True when the hashes make the lock's info-hash. An origin's or the disk's
    failure is logged and returns False: libtorrent checks what was written and goes on."""
    t = read.target
    d = t.dataset
    try:
        torrent = await build_lock(d, ctx, write_to=dest, throttle=throttle, streams=streams,
                                   slots=slots, on_file=on_file, origin=origin)
        got = check_torrent(torrent, d, "read directly").info_hash
    except (OriginError, OSError, ValueError) as e:
        log_.warning("direct read failed; libtorrent checks what it wrote and fetches the rest",
                     dataset=t.name, version=d.version, error=str(e))
        return False
    if got != read.info_hash:
        log_.warning("direct read differs from the lock; libtorrent checks what it wrote and "
                     "fetches the rest", dataset=t.name, version=d.version,
                     info_hash=read.info_hash, read=got)
        return False
    return True
