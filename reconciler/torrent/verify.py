"""Verify a downloaded version on disk against its lock, without touching the swarm.

libtorrent hashes every piece of a hybrid torrent against the lock's v1 and v2 hashes, as it
arrives and when a check finds it on disk; the one exception is a piece loaded from resume
data after a clean stop, which libtorrent takes on trust. So before a version is moved into
the store and consumers are switched to it, `verify_content`:

* checks that every file is there with the size the lock gives it (a file truncated, removed
  or grown in staging behind libtorrent's back);
* reads back the files in `read` (the executor passes those holding a piece libtorrent did not
  hash in this process, core.transfer.unhashed_files) and compares their BEP 52 `pieces root`
  with the lock, on the hashing thread pool;
* reads back, too, any file in `stamps` whose (inode, size, mtime) changed since it was
  recorded: the executor records the files it hard-linked from the object store once
  libtorrent's check has found them whole, since libtorrent never writes those again and
  would not notice an object modified behind the store's back before the version completes.

It runs in a worker thread while libtorrent keeps seeding to peers (a libtorrent recheck
would disconnect them). `read=None` reads every file back (the full second read this used to
be, still what `verify_content(torrent, dir)` does).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import libtorrent as lt

from reconciler.torrent.hybrid import FileHasher

CHUNK = 4 << 20

Stamp = tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns)

# A bdecoded dict as libtorrent returns it; its stubs type `lt.bdecode` as any bencodable value.
_Dict = dict[bytes, Any]


def _walk(tree: _Dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], _Dict]]:
    for name, node in tree.items():
        if name == b"":
            yield prefix, node
        else:
            yield from _walk(node, (*prefix, name.decode()))


def stamp(path: Path) -> Stamp:
    """What changes when a file is replaced or written: inode, size, modification time."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def verify_content(torrent: bytes, content_dir: Path, read: Collection[str] | None = None,
                   stamps: Mapping[str, Stamp] | None = None,
                   only: Collection[str] | None = None) -> list[str]:
    """Files under `content_dir` that are missing or differ from the lock (empty = verified).

    Every file's size is checked; the contents of those in `read` (all when None) and of those
    whose stamp differs from `stamps` are hashed and compared with the lock. `only`: a split
    version's files held here (core/split.py); the others are not looked at."""
    info = cast(_Dict, cast(_Dict, lt.bdecode(torrent))[b"info"])
    piece_size = cast(int, info[b"piece length"])
    stamps = stamps or {}
    wanted = None if read is None else frozenset(read)
    bad: list[str] = []
    for parts, leaf in _walk(info[b"file tree"]):
        rel = "/".join(parts)
        if only is not None and rel not in only:
            continue
        path = content_dir.joinpath(*parts)
        length = leaf[b"length"]
        try:
            now = stamp(path)
            if now[1] != length:
                bad.append(rel)
                continue
            if length == 0 or (wanted is not None and rel not in wanted
                               and stamps.get(rel, now) == now):
                continue
            hasher = FileHasher(piece_size)
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        except OSError:
            bad.append(rel)
            continue
        if hasher.finish().pieces_root != leaf.get(b"pieces root"):
            bad.append(rel)
    return bad
