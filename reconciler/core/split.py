"""`spec.split: {copies: K}` (issue 14, item 2), the pure part: which target nodes hold which
file. NOT WIRED YET: the schema does not accept `split`, and nothing calls this module; the
executor part (libtorrent file priorities, a version complete with a subset of its files,
re-splitting a stored version when the targets change) is left for a later session.

Each file is held by the K target nodes ranked highest by `sha256("<dataset>/<file>/<node>")`
read as a big-endian integer (rendezvous hashing per file, DESIGN §3). A file's holders depend
only on the file and the target nodes, so adding a target node moves only the files for which
it ranks among the top K, each onto the new node only; removing one moves only its files.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence


def file_weight(dataset: str, file: str, node: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{dataset}/{file}/{node}".encode()).digest(), "big")


def holders(dataset: str, file: str, targets: Iterable[str], copies: int) -> tuple[str, ...]:
    """The `copies` target nodes holding `file`, highest weight first (all of them when there
    are fewer targets than copies)."""
    prefix = hashlib.sha256(f"{dataset}/{file}/".encode())
    keyed = []
    for node in targets:
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


def short_files(assignment: Mapping[str, tuple[str, ...]], ready: Iterable[str],
                copies: int) -> list[str]:
    """The files with fewer than `copies` copies on nodes that have them `ready` (what
    `status --cluster` would show per dataset), sorted."""
    have = set(ready)
    return sorted(f for f, nodes in assignment.items()
                  if sum(1 for n in nodes if n in have) < copies)
