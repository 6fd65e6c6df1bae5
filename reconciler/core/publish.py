"""Datasets published from a node's disk (`source: {node: {name, path}}`): the decisions.

The publishing node reads only under its `publishRoots`, and a published version is
immutable: the same `version` with other bytes is refused, not published again. Pure: the
caller resolves paths (symlinks) and reads the record of what was published; see
`engine/publishing.py` for the shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Published:
    """One version this node published: the info-hash that pins its bytes, and from where."""

    version: str
    info_hash: str
    path: str


def inside_roots(real: str, roots: Sequence[str]) -> bool:
    """Is the absolute path `real` (symlinks resolved) one of `roots` (resolved too) or below
    one? Compared by whole segments: /data/ckpt2 is not under /data/ckpt."""
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def refusal(node: str, path: str, real: str, roots: Sequence[str]) -> str | None:
    """Why `node` does not publish `path` (resolved: `real`), or None if it may. The message
    names the node and the path: every target node shows it in its status."""
    if inside_roots(real, roots):
        return None
    where = "" if real == path else f" (it resolves to {real})"
    shown = ", ".join(roots) or "none"
    return (f"node {node} refuses to publish {path}{where}: outside its publishRoots "
            f"({shown})")


def conflict(node: str, dataset: str, version: str, info_hash: str,
             published: Mapping[str, Published]) -> str | None:
    """Why the torrent `info_hash` of `dataset` at `version` may not be published (the version
    was published before with other bytes), or None."""
    before = published.get(version)
    if before is None or before.info_hash == info_hash:
        return None
    return (f"version {version!r} of dataset {dataset} was already published by node {node} "
            f"from {before.path} with other bytes (info-hash {before.info_hash[:16]}..., now "
            f"{info_hash[:16]}...): a published version is immutable; publish the changed "
            f"files as a new version")


def offered_conflict(publisher: str, dataset: str, version: str, offered: str,
                     held: Mapping[str, str]) -> str | None:
    """Why a target node must refuse the torrent `offered` (info-hash) for `version`: it holds
    a complete copy of that version with other bytes (`held`: info-hash -> version label).
    The publisher catches this itself; this covers a publisher that lost its record (a new
    `stateDir`)."""
    other = sorted(ih for ih, v in held.items() if v == version and ih != offered)
    if not other:
        return None
    return (f"node {publisher} offers version {version!r} of dataset {dataset} with other bytes "
            f"than this node holds (info-hash {other[0][:16]}..., offered {offered[:16]}...): "
            f"a published version is immutable; publish the changed files as a new version")
