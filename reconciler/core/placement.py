"""Which nodes must hold which dataset: pure, deterministic on every node of the cluster.

Replica choice is rendezvous (highest-random-weight) hashing, DESIGN §3: nodes are ranked by
`sha256("<dataset>/<node>")` read as a big-endian integer, highest first. Because each node's
weight depends only on the (dataset, node) pair, adding or removing a node moves only the
replicas that must move.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from reconciler.model.desired import PRIORITY_RANK, Dataset, DesiredState, Node


def rendezvous_weight(dataset: str, node: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{dataset}/{node}".encode()).digest(), "big")


def rank_nodes(dataset: str, nodes: Iterable[str]) -> list[str]:
    """Node names ordered by rendezvous weight for `dataset`, highest first."""
    return sorted(nodes, key=lambda n: rendezvous_weight(dataset, n), reverse=True)


def _matches(node: Node, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Assignment:
    """The nodes a dataset is placed on, and why it fell short when it did."""

    dataset: str
    nodes: tuple[str, ...]
    wanted: int  # replicas asked for (len(nodes) for `nodes`/`all`)
    shortfall_reason: str | None = None


def place(state: DesiredState) -> dict[str, Assignment]:
    """Place every dataset of a revision.

    Datasets are handled in a fixed order (priority, then name) and consume node `capacity`
    as they are placed, so a full node is skipped for later, lower-priority datasets. Sizes come
    from the lock; a dataset without a lock counts as zero bytes until it is locked.
    Suspended datasets are placed like any other: suspension freezes the node's copy, it does
    not move replicas elsewhere.
    """
    free: dict[str, int | None] = {n.name: n.capacity for n in state.nodes.values()}
    order = sorted(state.datasets.values(), key=lambda d: (PRIORITY_RANK[d.priority], d.name))
    return {d.name: _place_one(d, state.nodes, free) for d in order}


def _fits(free: Mapping[str, int | None], node: str, size: int) -> bool:
    room = free.get(node)
    return room is None or room >= size


def _take(free: dict[str, int | None], node: str, size: int) -> None:
    room = free.get(node)
    if room is not None:
        free[node] = room - size


def _place_one(d: Dataset, nodes: Mapping[str, Node], free: dict[str, int | None]) -> Assignment:
    size = d.lock.total_bytes if d.lock else 0
    p = d.placement
    if p.nodes is not None:
        # Explicit placement is the user's call: honour it, but still account the space.
        explicit = tuple(n for n in p.nodes if n in nodes)
        for n in explicit:
            _take(free, n, size)
        return Assignment(d.name, explicit, len(p.nodes))

    eligible = [n for n in nodes.values() if _matches(n, p.selector)]
    ranked = rank_nodes(d.name, (n.name for n in eligible))
    wanted = len(ranked) if p.all else (p.replicas or 0)
    chosen: list[str] = []
    groups: set[str] = set()
    no_room = 0
    for name in ranked:
        if len(chosen) >= wanted:
            break
        group = nodes[name].storage_group
        if group is not None and group in groups:
            continue  # one copy per shared filesystem is enough
        if not _fits(free, name, size):
            no_room += 1
            continue
        chosen.append(name)
        _take(free, name, size)
        if group is not None:
            groups.add(group)

    reason = None
    if not p.all and len(chosen) < wanted:
        reason = (f"{len(chosen)} of {wanted} replicas placed: {len(eligible)} eligible nodes"
                  + (f", {no_room} without room" if no_room else ""))
    if p.all:
        wanted = len(chosen) + no_room
        if no_room:
            reason = f"{no_room} eligible nodes without room"
    return Assignment(d.name, tuple(chosen), wanted, reason)


def datasets_for_node(assignments: Mapping[str, Assignment], node: str) -> list[str]:
    """Names of the datasets placed on `node`, sorted."""
    return sorted(name for name, a in assignments.items() if node in a.nodes)
