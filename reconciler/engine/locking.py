"""Reading a dataset's source once into its lock: the hybrid torrent that pins its bytes.

Used by `syncbit-reconcile lock` and by the node that pins an unlocked dataset (which also
writes the bytes into its staging directory as it hashes them, so it reads the source once).

Several files are read and hashed at once, and a large file is read through concurrent range
requests (`sources.parallel.read_parallel`), so neither one connection's speed nor one core's
hashing speed bounds the build. Hashing runs on `torrent.hybrid`'s thread pool (SHA-1 and
SHA-256 release the GIL), writing and hashing off the event loop, so a node keeps serving its
swarm meanwhile. Memory stays bounded: about `streams` range parts of 4 MiB ahead of the
readers, plus a few 4 MiB hashing batches per file in flight.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, BinaryIO, Callable

from reconciler.adapters.sources import Origin, OriginContext, OriginError, OriginFile, open_origin
from reconciler.adapters.sources.parallel import read_parallel
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


async def build_lock(dataset: Dataset, ctx: OriginContext,
                     progress: Callable[[int, int], None] | None = None, *,
                     write_to: Path | None = None,
                     throttle: Callable[[int], Awaitable[None]] | None = None,
                     streams: int = STREAMS, slots: asyncio.Semaphore | None = None,
                     files_at_once: int | None = None) -> bytes:
    """The lock torrent of `dataset`; `progress(done, total)` is called as bytes are hashed.

    `write_to`: also write every file there (`write_to/<path>`) as it is read, so a node that
    builds the torrent of an unlocked dataset reads the source once. `throttle(n)` is awaited
    before `n` bytes are taken (the node's `bandwidth.origin`). `streams`: range requests in
    flight over the whole build, shared out among the `files_at_once` files read at a time
    (default: one per core, at most 8); `slots`: a semaphore every request also holds (the
    node's origin connections, shared with its downloads). The torrent does not depend on
    any of these.
    """
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

    # Largest first: a big file that starts last would be read alone at the end.
    queue = sorted(files, key=lambda f: -f.size)

    async def worker() -> None:
        while queue:
            f = queue.pop(0)
            hashed[f.path] = await _lock_file(origin, f, piece_size, write_to, throttle,
                                              per_file, slots, counted)

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
                     slots: asyncio.Semaphore | None,
                     counted: Callable[[int], None]) -> FileHashes:
    hasher = FileHasher(piece_size)
    out: BinaryIO | None = None
    if write_to is not None:
        dest = write_to / f.path
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        out = await asyncio.to_thread(open, dest, "wb")
    if f.size >= 2 * MIN_PART and streams > 1:
        stream = read_parallel(origin, f.path, 0, f.size, streams=streams, slots=slots)
    else:
        stream = origin.read(f.path)
    seen = 0
    batch: list[bytes] = []
    batched = 0
    try:
        async for chunk in stream:
            if throttle is not None:
                await throttle(len(chunk))
            seen += len(chunk)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= FEED:
                await asyncio.to_thread(_consume, hasher, out, batch)
                counted(batched)
                batch, batched = [], 0
        if batch:
            await asyncio.to_thread(_consume, hasher, out, batch)
            counted(batched)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        if out is not None:
            await asyncio.to_thread(out.close)
    if seen != f.size:
        raise OriginError(f"{f.path}: listed as {f.size} bytes but {seen} were read "
                          "(did it change while locking?)")
    return await asyncio.to_thread(hasher.finish)


def _consume(hasher: FileHasher, out: BinaryIO | None, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
        if out is not None:
            out.write(chunk)
