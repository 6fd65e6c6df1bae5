"""`spec.split: {copies: K}` (issue 14, item 2): which target nodes hold which file. Pure.

Each file is held by the K target nodes ranked highest by `sha256("<dataset>/<file>/<node>")`
read as a big-endian integer (rendezvous hashing per file, DESIGN §3). A file's holders depend
only on the file and the target nodes, so adding a target node moves only the files for which
it ranks among the top K, each onto the new node only; removing one moves only its files.

The executor uses the rest of this module to download, count, verify and seed only this
node's files of a split version: the pieces of the other files (`skipped_pieces`) stay at
priority 0 and count as "not wanted" (`as_wanted`), and the origin share of a piece goes to
one of the nodes that hold its file (`piece_owners`), never to a node that will not keep it.
"""

from __future__ import annotations

import hashlib
from typing import Collection, Iterable, Mapping, Sequence

from reconciler.core.cas import file_pieces
from reconciler.core.offload import Rendezvous


def file_weight(dataset: str, file: str, node: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{dataset}/{file}/{node}".encode()).digest(), "big")


def holders(dataset: str, file: str, targets: Iterable[str], copies: int) -> tuple[str, ...]:
    """The `copies` target nodes holding `file`, highest weight first (all of them when there
    are fewer targets than copies). Digests compared as bytes: the same order as
    `file_weight` (big-endian, fixed length), one prefix hash copied per node."""
    prefix = hashlib.sha256(f"{dataset}/{file}/".encode())
    keyed = []
    for node in set(targets):
        h = prefix.copy()
        h.update(node.encode())
        keyed.append((h.digest(), node))
    keyed.sort(reverse=True)
    return tuple(node for _, node in keyed[:max(copies, 0)])


def split_files(dataset: str, files: Sequence[str], targets: Sequence[str],
                copies: int) -> dict[str, tuple[str, ...]]:
    """file -> the nodes holding it."""
    return {f: holders(dataset, f, targets, copies) for f in files}


def files_of(assignment: Mapping[str, tuple[str, ...]], node: str) -> list[str]:
    """The files `node` holds, sorted."""
    return sorted(f for f, nodes in assignment.items() if node in nodes)


def node_files(dataset: str, files: Sequence[str], targets: Sequence[str], copies: int,
               node: str) -> frozenset[str]:
    """The files of `dataset` that `node` holds (none if it is not a target)."""
    if node not in targets:
        return frozenset()
    return frozenset(f for f in files if node in holders(dataset, f, targets, copies))


def short_files(assignment: Mapping[str, tuple[str, ...]], ready: Iterable[str],
                copies: int) -> list[str]:
    """The files with fewer than `copies` copies on nodes that have them `ready` (what
    `status --cluster` shows per dataset), sorted."""
    have = set(ready)
    return sorted(f for f, nodes in assignment.items()
                  if sum(1 for n in nodes if n in have) < copies)


def skipped_pieces(files: Sequence[tuple[str, int]], piece_size: int,
                   mine: Collection[str]) -> frozenset[int]:
    """The pieces of the files this node does not hold (pieces never span files in a hybrid
    torrent, so none of them holds a byte of ours): priority 0, never downloaded."""
    spans = file_pieces(files, piece_size)
    return frozenset(p for path, _ in files if path not in mine for p in spans[path])


def as_wanted(have: Sequence[bool], skipped: Collection[int]) -> tuple[bool, ...]:
    """`have` with the skipped pieces counted as held: what the download rules look at, so
    that no origin run, stuck fallback or completion ever waits for another node's file."""
    return tuple(h or i in skipped for i, h in enumerate(have))


def piece_holders(dataset: str, files: Sequence[tuple[str, int]], piece_size: int,
                  targets: Sequence[str], copies: int) -> tuple[tuple[str, ...], ...]:
    """Per piece, the (sorted) target nodes holding its file."""
    spans = file_pieces(files, piece_size)
    out: list[tuple[str, ...]] = []
    for path, _ in files:
        who = tuple(sorted(holders(dataset, path, targets, copies)))
        out.extend(who for _ in spans[path])
    return tuple(out)


def piece_owners(info_hash: str, per_piece: Sequence[Sequence[str]], run: int = 1,
                 dead: Collection[str] = ()) -> list[str]:
    """The origin owner of every piece of a split version: per run, the first node of the
    run's rendezvous order (core/offload.py) over the holders of the piece's file that is
    not dead. Over all targets instead, a run could go to a node that skips the file: it
    would never fetch it, and its holders would wait for the stuck fallback."""
    run = max(run, 1)
    orders: dict[tuple[str, ...], Rendezvous] = {}
    dead_set = frozenset(dead)
    out: list[str] = []
    for p, who in enumerate(per_piece):
        key = tuple(who)
        rv = orders.get(key)
        if rv is None:
            rv = orders[key] = Rendezvous(info_hash, key)
        out.append(rv.owner(p // run, dead_set) if key else "")
    return out


def piece_bytes(files: Sequence[tuple[str, int]], piece_size: int,
                mine: Collection[str]) -> tuple[int, ...]:
    """Per piece, how many bytes of a file this node holds it carries (0 for the others'
    files and for pad bytes): what `bytesDone` adds up as pieces arrive."""
    out: list[int] = []
    for path, size in files:
        n = -(-size // piece_size) if size > 0 else 0
        for i in range(n):
            out.append(min(piece_size, size - i * piece_size) if path in mine else 0)
    return tuple(out)
