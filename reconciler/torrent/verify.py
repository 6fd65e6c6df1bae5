"""Verify a downloaded version from disk against its lock, without touching the swarm.

libtorrent checks each piece as it arrives; this second look reads every file back from disk
and compares its BEP 52 `pieces root` (SHA-256 merkle root) with the lock, so what consumers
are switched to is exactly what the lock pinned. It runs in a worker thread while libtorrent
keeps seeding to peers (a libtorrent recheck would disconnect them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import libtorrent as lt

from reconciler.torrent.hybrid import FileHasher

CHUNK = 4 << 20


# A bdecoded dict as libtorrent returns it; its stubs type `lt.bdecode` as any bencodable value.
_Dict = dict[bytes, Any]


def _walk(tree: _Dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], _Dict]]:
    for name, node in tree.items():
        if name == b"":
            yield prefix, node
        else:
            yield from _walk(node, (*prefix, name.decode()))


def verify_content(torrent: bytes, content_dir: Path) -> list[str]:
    """Files under `content_dir` that are missing or differ from the lock (empty = verified)."""
    info = cast(_Dict, cast(_Dict, lt.bdecode(torrent))[b"info"])
    piece_size = cast(int, info[b"piece length"])
    bad: list[str] = []
    for parts, leaf in _walk(info[b"file tree"]):
        rel = "/".join(parts)
        path = content_dir.joinpath(*parts)
        length = leaf[b"length"]
        try:
            if path.stat().st_size != length:
                bad.append(rel)
                continue
            if length == 0:
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
