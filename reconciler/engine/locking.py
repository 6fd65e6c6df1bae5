"""Reading a dataset's source once into its lock: the hybrid torrent that pins its bytes.

Used by `syncbit-reconcile lock` and by the node that pins an unlocked dataset (which also
writes the bytes into its staging directory as it hashes them, so it reads the source once).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, BinaryIO, Callable

from reconciler.adapters.sources import OriginContext, OriginError, open_origin
from reconciler.model.desired import Dataset
from reconciler.torrent.hybrid import FileHasher, build_torrent, check_path, choose_piece_size


async def build_lock(dataset: Dataset, ctx: OriginContext,
                     progress: Callable[[int, int], None] | None = None, *,
                     write_to: Path | None = None,
                     throttle: Callable[[int], Awaitable[None]] | None = None) -> bytes:
    """The lock torrent of `dataset`; `progress(done, total)` is called as bytes are hashed.

    `write_to`: also write every file there (`write_to/<path>`) as it is read, so a node that
    builds the torrent of an unlocked dataset reads the source once. `throttle(n)` is awaited
    before `n` bytes are taken (the node's `bandwidth.origin`). Hashing and writing run in a
    worker thread, so a node's event loop keeps serving its swarm meanwhile.
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
    hashed = []
    for f in files:
        hasher = FileHasher(piece_size)
        out = None
        if write_to is not None:
            dest = write_to / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(dest, "wb")
        try:
            seen = 0
            async for chunk in origin.read(f.path):
                if throttle is not None:
                    await throttle(len(chunk))
                await asyncio.to_thread(_consume, hasher, out, chunk)
                seen += len(chunk)
                if progress is not None:
                    done += len(chunk)
                    progress(done, total)
        finally:
            if out is not None:
                out.close()
        if seen != f.size:
            raise OriginError(f"{f.path}: listed as {f.size} bytes but {seen} were read "
                              "(did it change while locking?)")
        hashed.append((f.path, hasher.finish()))
    extra = {"syncbit": {"dataset": dataset.name, "source": dict(origin.describe()),
                         "revision": {f.path: dict(f.revision) for f in files}}}
    return build_torrent(dataset.name, piece_size, hashed, extra)


def _consume(hasher: FileHasher, out: BinaryIO | None, chunk: bytes) -> None:
    hasher.update(chunk)
    if out is not None:
        out.write(chunk)
