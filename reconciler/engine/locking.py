"""Reading a dataset's source once into its lock: the hybrid torrent that pins its bytes.

Used by `syncbit-reconcile lock` and by the node that pins an unlocked dataset (which also
writes the bytes into its staging directory as it hashes them, so it reads the source once).

Several files are read and hashed at once, and a large file is read through concurrent range
requests (`sources.parallel.read_parallel`), so neither one connection's speed nor one core's
hashing speed bounds the build. Hashing runs on `torrent.hybrid`'s thread pool (SHA-1 and
SHA-256 release the GIL), writing and hashing off the event loop, so a node keeps serving its
swarm meanwhile. Memory stays bounded: about `streams` range parts of 4 MiB ahead of the
readers, plus a few 4 MiB hashing batches per file in flight, plus what is queued for the disk
(`OffsetWriter`, at most 16 MiB per file). Every chunk is written at its offset as it arrives,
so a process killed mid-read leaves on disk all it had received but that queue.

An http(s) file read plain (no redirect), a local file and an S3 object are read instead on
threads (`Origin.range_reader`), a range per thread, each writing and hashing its own pieces
(engine/threaded_read.py): half the CPU of the event loop's receive path, which bounded a
direct read on a fast origin, and every core hashing for `lock` over several files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from reconciler.adapters.offset_writer import OffsetWriter
from reconciler.adapters.sources import Origin, OriginContext, OriginError, OriginFile, open_origin
from reconciler.adapters.sources.threaded import NoRanges, NotRanged
from reconciler.adapters.sources.parallel import read_parallel
from reconciler.engine import threaded_read
from reconciler.core.ranges import MIN_PART
from reconciler.model.desired import Dataset
from reconciler.torrent.hybrid import (
    FileHasher,
    FileHashes,
    build_torrent,
    check_path,
    choose_piece_size,
    hash_workers,
)

STREAMS = 16  # concurrent range requests to the origin, over all files being read
FEED = 4 << 20  # bytes handed to the hashing/writing thread at a time

log = structlog.get_logger()


async def build_lock(dataset: Dataset, ctx: OriginContext,
                     progress: Callable[[int, int], None] | None = None, *,
                     write_to: Path | None = None,
                     throttle: Callable[[int], Awaitable[None]] | None = None,
                     streams: int = STREAMS, slots: asyncio.Semaphore | None = None,
                     files_at_once: int | None = None,
                     on_file: Callable[[str], None] | None = None,
                     origin: Origin | None = None) -> bytes:
    """The lock torrent of `dataset`; `progress(done, total)` is called as bytes are hashed.

    `write_to`: also write every file there (`write_to/<path>`) as it is read, so a node that
    builds the torrent of an unlocked dataset reads the source once. `throttle(n)` is awaited
    before `n` bytes are taken (the node's `bandwidth.origin`). `streams`: range requests in
    flight over the whole build, shared out among the `files_at_once` files read at a time
    (default: one per core, at most 8); `slots`: a semaphore every request also holds (the
    node's origin connections, shared with its downloads). The torrent does not depend on
    any of these. `on_file(path)` is called when a file is read, hashed and written whole.
    `origin`: read through it instead of opening `dataset.source` (a node reading a locked
    version reads the source pinned to the lock's revision).
    """
    if origin is None:
        origin = open_origin(dataset.source, ctx)
    files = await origin.list_files()
    if not files:
        raise OriginError(f"{dataset.source.type} source lists no files")
    if write_to is not None:
        for f in files:  # before a byte is written: no name may climb out of `write_to`
            check_path(f.path)
    total = sum(f.size for f in files)
    done = 0
    if progress is not None:
        progress(0, total)
    piece_size = choose_piece_size(total)
    at_once = max(1, min(len(files), files_at_once or min(8, hash_workers())))
    per_file = max(1, streams // at_once)
    hashed: dict[str, FileHashes] = {}

    def counted(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    caps = threaded_read.Caps()  # what the first files show of the origin, the next ones use
    # Largest first: a big file that starts last would be read alone at the end.
    queue = sorted(files, key=lambda f: -f.size)

    async def worker() -> None:
        while queue:
            f = queue.pop(0)
            hashed[f.path] = await _lock_file(origin, f, piece_size, write_to, throttle,
                                              per_file, slots, counted, on_file,
                                              max(1, 2 * hash_workers() // at_once), caps)

    workers = [asyncio.create_task(worker()) for _ in range(at_once)]
    try:
        await asyncio.gather(*workers)  # the first error (an OriginError, as is) ends them all
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    extra = {"syncbit": {"dataset": dataset.name, "source": dict(origin.describe()),
                         "revision": {f.path: dict(f.revision) for f in files}}}
    return build_torrent(dataset.name, piece_size, [(f.path, hashed[f.path]) for f in files],
                         extra)


async def _lock_file(origin: Origin, f: OriginFile, piece_size: int, write_to: Path | None,
                     throttle: Callable[[int], Awaitable[None]] | None, streams: int,
                     slots: asyncio.Semaphore | None, counted: Callable[[int], None],
                     on_file: Callable[[str], None] | None = None,
                     fast_streams: int = 2,
                     caps: threaded_read.Caps | None = None) -> FileHashes:
    get = await origin.range_reader(f.path) if f.size else NoRanges()
    if get is not None:
        took = 0

        async def paced(n: int) -> None:
            nonlocal took
            took += n
            counted(n)
            if throttle is not None:
                await throttle(n)

        dest = write_to / f.path if write_to is not None else None
        try:
            hashes = await threaded_read.read_file(get, f, piece_size, dest, streams=streams,
                                                   fast_streams=fast_streams, slots=slots,
                                                   arrived=paced, caps=caps)
        except NotRanged as e:  # a redirect, say: read through the origin's own client
            log.debug("ranges through the event loop", path=f.path, reason=str(e))
            counted(-took)  # read again from the start (an expired CDN location mid-file)
        else:
            if on_file is not None:
                on_file(f.path)
            return hashes
    hasher = FileHasher(piece_size)
    # Every chunk is written in place the moment it arrives (a kill loses only what is queued
    # for the disk, not the parts read ahead); hashing takes the chunks in order, from memory.
    out = await OffsetWriter.open(write_to / f.path) if write_to is not None else None
    parallel = f.size >= 2 * MIN_PART and streams > 1

    async def arrived(n: int) -> None:
        """After each chunk from the origin: `throttle` counts and paces it as it arrives
        (a part's connection waits: TCP slows the origin), and the disk keeps up."""
        if throttle is not None:
            await throttle(n)
        if out is not None:
            await out.room()

    if parallel:
        stream = read_parallel(origin, f.path, 0, f.size, streams=streams, slots=slots,
                               on_chunk=out.put if out is not None else None,
                               throttle=arrived)
    else:
        stream = origin.read(f.path)
    seen = 0
    batch: list[bytes] = []
    batched = 0
    try:
        async for chunk in stream:
            if not parallel:
                if out is not None:
                    out.put(seen, chunk)
                await arrived(len(chunk))
            seen += len(chunk)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= FEED:
                await asyncio.to_thread(_consume, hasher, batch)
                counted(batched)
                batch, batched = [], 0
        if batch:
            await asyncio.to_thread(_consume, hasher, batch)
            counted(batched)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        if out is not None:
            await out.close()
    if seen != f.size:
        raise OriginError(f"{f.path}: listed as {f.size} bytes but {seen} were read "
                          "(did it change while locking?)")
    hashes = await asyncio.to_thread(hasher.finish)
    if on_file is not None:
        on_file(f.path)
    return hashes


def _consume(hasher: FileHasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
