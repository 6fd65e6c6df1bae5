"""Content addressing: every file of a lock is named by its BitTorrent v2 `pieces root`.

The `pieces root` (BEP 52) is the SHA-256 merkle root of the file's 16 KiB blocks: it depends
on the file's bytes only, not on the torrent's piece size, name or other files. Two files with
the same root are the same bytes, so the store keeps one inode per root (`objects/`, see
adapters/objects.py) and links it into every version that holds the file.

Pure: the rules here read lock bytes and piece layouts; the shell does the linking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from reconciler.core.bencode import BencodeError, Value, bdecode


@dataclass(frozen=True)
class FileRoot:
    path: str  # relative to the torrent's top directory
    size: int
    root: str  # pieces root, 64 hex digits; "" for an empty file (it has none)


def file_roots(torrent: bytes) -> tuple[FileRoot, ...]:
    """Each file of a v2/hybrid torrent in `file tree` order, with its pieces root.
    Empty when the bytes are not a v2 torrent (nothing is content-addressed then)."""
    try:
        top = bdecode(torrent)
    except BencodeError:
        return ()
    info = top.get(b"info") if isinstance(top, dict) else None
    tree = info.get(b"file tree") if isinstance(info, dict) else None
    out: list[FileRoot] = []
    if isinstance(tree, dict):
        _walk(tree, (), out)
    return tuple(out)


def _walk(node: dict[bytes, Value], prefix: tuple[str, ...], out: list[FileRoot]) -> None:
    for raw, child in node.items():
        if not isinstance(child, dict):
            continue
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        leaf = child.get(b"")
        if isinstance(leaf, dict):
            size = leaf.get(b"length")
            root = leaf.get(b"pieces root")
            if isinstance(size, int) and size >= 0:
                hexroot = root.hex() if isinstance(root, bytes) and len(root) == 32 else ""
                out.append(FileRoot("/".join((*prefix, name)), size, hexroot if size else ""))
        else:
            _walk(child, (*prefix, name), out)


def object_rel(root: str) -> str:
    """Where the object of `root` lives under `objects/`: two levels, git-style."""
    if len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise ValueError(f"not a pieces root: {root!r}")
    return f"{root[:2]}/{root}"


def file_pieces(files: Iterable[tuple[str, int]], piece_size: int) -> dict[str, range]:
    """The pieces each file covers in a hybrid/v2 torrent: files in torrent order, each
    non-empty one starting on a piece boundary (pad files fill its last piece), empty ones
    covering none. A piece therefore never holds bytes of two files."""
    out: dict[str, range] = {}
    first = 0
    for path, size in files:
        n = -(-size // piece_size) if size > 0 else 0
        out[path] = range(first, first + n)
        first += n
    return out


def frozen_pieces(files: Iterable[tuple[str, int]], piece_size: int,
                  linked: Iterable[str]) -> frozenset[int]:
    """Pieces that belong only to files linked from the object store: libtorrent must never
    download (and so never write) them, as the inode is shared with other versions."""
    spans = file_pieces(files, piece_size)
    return frozenset(p for path in linked for p in spans.get(path, range(0)))


def mask(priorities: Sequence[int], frozen: frozenset[int]) -> tuple[int, ...]:
    """Piece priorities with every frozen piece at 0 ("do not download")."""
    return tuple(0 if i in frozen else p for i, p in enumerate(priorities))


def broken_links(files: Iterable[tuple[str, int]], piece_size: int, linked: Iterable[str],
                 have: Sequence[bool]) -> list[str]:
    """Linked files that libtorrent's check did not find whole: their object is not the bytes
    its root names (changed behind the store's back). They must be unlinked before anything
    may download them, or libtorrent would write into the shared inode."""
    spans = file_pieces(files, piece_size)
    return [p for p in linked
            if any(i >= len(have) or not have[i] for i in spans.get(p, range(0)))]
