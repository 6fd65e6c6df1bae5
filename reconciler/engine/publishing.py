"""Datasets published from a node's disk (`source: {node: {name, path}}`): the I/O shell.

On the publishing node, the pinner's build reads `path` once: every byte is copied into the
version's staging directory while it is hashed, and the torrent is built from what was
copied. So the store holds a snapshot, and a training job that keeps writing next to or over
the published files (in place, or by replace-by-rename) cannot change what peers receive.
Hard links would be free on the same filesystem, but they share the inode: an in-place write
(`open(..., "r+b")`, `O_TRUNC` then write) would change the seeded bytes, peers would reject
them piece by piece and never complete. A copy costs the checkpoint's size once on the
publisher's disk, for that guarantee.

The path is checked against the node's `publishRoots` (symlinks resolved) before a byte is
read; the `file` origin that reads it is confined to them too. The refusal is the build's
error: the publisher answers every peer's metadata request with it, so the dataset is Failed
on every target node, naming the node and the path.

Every other target node asks only the publisher for the torrent (it is the one source of
truth: there is no origin to check a peer's torrent against) and takes the bytes from the
swarm; no web seed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from reconciler.adapters.published import PublishedVersions
from reconciler.adapters.sources import OriginContext, OriginError
from reconciler.core.pinning import check
from reconciler.core.publish import Published, conflict, offered_conflict, refusal
from reconciler.engine.locking import build_lock
from reconciler.model.desired import Dataset, FileSource, NodeSource

if TYPE_CHECKING:
    from reconciler.engine.pinning import Pinner, Work

POLL_FIRST, POLL_MAX = 0.5, 5.0  # seconds between questions to the publisher, growing
POLL_FAILED = 15.0  # the publisher refused: ask again this often (a fixed config, a new path)


class PublishRefused(Exception):
    """This node will not publish: outside publishRoots, or a published version's bytes
    changed. The message is the status error, as is. `final`: trying again cannot help (the
    same version stays refused until the dataset's version or path changes), so the source
    is not read again every retry."""

    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


async def snapshot(node: str, d: Dataset, ctx: OriginContext,
                   progress: Callable[[int, int], None], write_to: Path) -> bytes:
    """Copy `d`'s published path into `write_to` while hashing it; the torrent of the copy."""
    src = d.source
    assert isinstance(src, NodeSource)
    roots = tuple(ctx.publish_roots or ())
    real = await asyncio.to_thread(os.path.realpath, src.path)
    why = refusal(node, src.path, real, [os.path.realpath(r) for r in roots])
    if why is not None:
        raise PublishRefused(why)
    # The same reader as a `file` source, confined to publishRoots: each file's own symlinks
    # are checked again as it is opened.
    as_file = dataclasses.replace(d, source=FileSource(path=src.path))
    confined = OriginContext(ctx.state_root, roots, ctx.connections)
    try:
        return await build_lock(as_file, confined, progress, write_to=write_to)
    except OriginError as e:
        raise PublishRefused(f"node {node} cannot publish {src.path}: {e}") from None
    finally:
        await confined.close()


def check_immutable(node: str, d: Dataset, torrent: bytes, record: PublishedVersions) -> None:
    """PublishRefused if `d.version` was published before with other bytes."""
    lock = check(torrent, d, "snapshot")
    why = conflict(node, d.name, d.version, lock.info_hash, record.get(d.name))
    if why is not None:
        raise PublishRefused(why, final=True)


def remember(d: Dataset, torrent: bytes, record: PublishedVersions) -> None:
    assert isinstance(d.source, NodeSource)
    lock = check(torrent, d, "snapshot")
    record.record(d.name, Published(d.version, lock.info_hash, d.source.path))


async def follow(pinner: "Pinner", w: "Work") -> None:
    """A target node other than the publisher: ask the publisher for the torrent until it has
    it; its refusal is this node's error too."""
    d = w.dataset
    assert isinstance(d.source, NodeSource)
    pub = d.source.name
    delay = POLL_FIRST
    while True:
        if pub not in w.api_of:
            state, data = "unknown", None
        else:
            state, data = await pinner._ask(w, pub)
        if data is not None:
            try:
                offered = check(data, d, f"the torrent from node {pub}").info_hash
                held = {ih: v.version for ih, v in
                        pinner.store.observe_dataset(d.name).versions.items() if v.complete}
                why = offered_conflict(pub, d.name, d.version, offered, held)
                if why is not None:
                    raise PublishRefused(why, final=True)
                lock = pinner.cache.put(d, data)
            except PublishRefused as e:
                w.state, w.error = "failed", str(e)
                delay = POLL_FAILED
            except (ValueError, OSError) as e:
                w.state, w.error = "failed", f"the torrent from publishing node {pub}: {e}"
                delay = POLL_FAILED
            else:
                pinner.log.info("metadata fetched", dataset=d.name, version=d.version,
                                peer=pub, info_hash=lock.info_hash)
                pinner._done(w)
                return
        elif state == "failed":
            w.state = "failed"
            w.error = w.peer_errors.get(pub) or f"publishing node {pub} could not publish it"
            delay = POLL_FAILED
        else:
            w.state, w.error = "waiting", None
            if state == "unreachable":
                w.error = f"waiting for publishing node {pub}: its API does not answer"
            delay = min(delay * 1.5, POLL_MAX) if state != "building" else POLL_FIRST
        pinner._say_wait(w, pub, state)
        await asyncio.sleep(delay)
