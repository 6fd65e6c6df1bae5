"""Which nodes must hold which dataset: pure, deterministic on every node of the cluster.

Replica choice is rendezvous (highest-random-weight) hashing, DESIGN §3: nodes are ranked by
`sha256("<dataset>/<node>")` read as a big-endian integer, highest first. Because each node's
weight depends only on the (dataset, node) pair, adding or removing a node moves only the
replicas that must move.

Placement reads only what is in git, so every node computes the same answer:
- a node is *eligible* for `replicas`/`all` when its labels satisfy the selector (equality
  labels and `matchExpressions`) and it is not `cordoned`; a cordoned node gets no replica of
  `replicas`/`all`, so its replicas go to the next-ranked eligible nodes (the node then drains
  them: it seeds what it holds during `gracePeriod`). An explicit `nodes:` list is a
  deliberate pin, like a pod's `nodeName` on a cordoned Kubernetes node: it still applies.
- a dataset's size against `capacity` is its lock's bytes when the lock is in git, else
  `spec.size` if declared, else 0. A torrent a node pinned itself for an unlocked dataset
  (`Dataset.pinned_lock`) never counts: the nodes that hold it and those that do not would
  disagree.
- a dataset published from a node (`source: {node: ...}`) is always held by that node too,
  first in its assignment, whatever the placement says: its snapshot is what the others fetch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence, overload

from reconciler.core.gcpause import gc_paused
from reconciler.model.desired import (PRIORITY_RANK, Dataset, DesiredState, Node, Placement,
                                      Requirement, publisher)


def rendezvous_weight(dataset: str, node: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{dataset}/{node}".encode()).digest(), "big")


def rank_nodes(dataset: str, nodes: Iterable[str]) -> list[str]:
    """Node names ordered by rendezvous weight for `dataset`, highest first."""
    names = list(nodes)
    return _rank(dataset, names, [n.encode() for n in names])


def _weights(dataset: str, encoded: Sequence[bytes]) -> list[bytes]:
    """The SHA-256 digests of `"<dataset>/<node>"`: the digest of `"<dataset>/"` is computed
    once and copied per node. Compared as bytes (big-endian, fixed length) they order like the
    integers of `rendezvous_weight`."""
    copy = hashlib.sha256(dataset.encode() + b"/").copy
    keys: list[bytes] = []
    append = keys.append
    for raw in encoded:
        h = copy()
        h.update(raw)
        append(h.digest())
    return keys


def _rank(dataset: str, names: Sequence[str], encoded: Sequence[bytes]) -> list[str]:
    """`rank_nodes` with the names already encoded. The sort is stable, so ties (never seen
    with SHA-256) keep the order given."""
    keys = _weights(dataset, encoded)
    order = sorted(range(len(names)), key=keys.__getitem__, reverse=True)
    return [names[i] for i in order]


# How many leading nodes a `Ranking` picks without sorting them all: a `replicas` placement
# reads its first few nodes only (more when nodes are full or share a storage group).
_TOP = 8


class Ranking(Sequence[str]):
    """`rank_nodes(dataset, names)`, sorted only as far as it is read.

    Iterating yields the same order as the full ranking; the first `_TOP` nodes come from a
    partial selection (heapq over the digests: ~6x cheaper than the full sort, which a
    `replicas: 3` dataset among 1,000 eligible nodes never needs). `compact()` drops the
    digests once a placement is done, keeping what was read: memory stays a few names per
    dataset, and reading further later hashes again. Ties cannot be told apart by bytes; the
    full sort keeps them in the given order, the selection too (first index of a digest).
    """

    __slots__ = ("_dataset", "_names", "_encoded", "_keys", "_top", "_order")

    def __init__(self, dataset: str, names: Sequence[str], encoded: Sequence[bytes]) -> None:
        self._dataset = dataset
        self._names = names
        self._encoded = encoded
        self._keys: list[bytes] | None = _weights(dataset, encoded)
        self._top: list[str] | None = None
        self._order: list[str] | None = None

    def __len__(self) -> int:
        return len(self._names)

    def _full(self) -> list[str]:
        if self._order is None:
            keys = self._keys if self._keys is not None else _weights(self._dataset,
                                                                      self._encoded)
            order = sorted(range(len(self._names)), key=keys.__getitem__, reverse=True)
            self._order = [self._names[i] for i in order]
            self._top = None
        return self._order

    def _leading(self) -> list[str]:
        if self._order is not None:
            return self._order
        if self._top is None:
            if self._keys is None or len(self._names) <= _TOP:
                return self._full()
            keys = self._keys
            self._top = [self._names[keys.index(k)] for k in heapq.nlargest(_TOP, keys)]
        return self._top

    def __iter__(self) -> Iterator[str]:
        top = self._leading()
        yield from top
        if len(top) < len(self._names):
            yield from self._full()[len(top):]

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self._full()[i]

    def compact(self) -> None:
        """Forget the digests (kept: the names read so far)."""
        self._keys = None


def eligible(node: Node, placement: Placement) -> bool:
    """Whether `node` may get a replica of a `replicas`/`all` placement."""
    return not node.cordoned and placement.selects(node.labels)


@dataclass(frozen=True)
class Assignment:
    """The nodes a dataset is placed on, and why it fell short when it did."""

    dataset: str
    nodes: tuple[str, ...]
    wanted: int  # replicas asked for (len(nodes) for `nodes`/`all`)
    shortfall_reason: str | None = None
    # `all: true`: storage groups with an eligible member but none chosen (none had room)
    unserved_groups: tuple[str, ...] = ()


# What placement reads of a revision, in the order it reads it: equal keys, equal placement.
_NodeKey = tuple[str, "int | None", "str | None", bool, Mapping[str, str]]
_DatasetKey = tuple[str, str, int, Placement, "str | None"]
_Key = tuple[tuple[_NodeKey, ...], tuple[_DatasetKey, ...]]
_SelectorKey = tuple[tuple[tuple[str, str], ...], tuple[Requirement, ...]]


def placement_size(d: Dataset) -> int:
    """The bytes `d` takes from a node's `capacity`: from git only (see the module doc)."""
    if d.lock is not None and not d.pinned_lock:
        return d.lock.total_bytes
    return d.size if d.size is not None else 0


_size = placement_size


def _key(state: DesiredState) -> _Key:
    return (tuple((n.name, n.capacity, n.storage_group, n.cordoned, n.labels)
                  for n in state.nodes.values()),
            tuple((d.name, d.priority, _size(d), d.placement, publisher(d))
                  for d in state.datasets.values()))


class Placer:
    """`place` with memory across passes, for a daemon that places the same fleet again and
    again. The answer is always the one `place` computes from scratch (tests compare them):

    - the whole result is reused when everything placement reads (node names, labels,
      capacities, storage groups, cordons; dataset names, priorities, sizes from git,
      placements with their selectors and match expressions) is equal to
      the previous call's, compared by value;
    - otherwise each dataset's ranking is reused when its name and its eligible nodes are
      equal to the previous call's, so one edited dataset costs one ranking, not all of them;
    - eligible nodes are computed once per distinct selector (equality labels and match
      expressions), not once per dataset.

    Memory: one result and one ranking per dataset of the last call. Safe to share between
    threads (state is swapped whole; a race costs only a recomputation).
    """

    def __init__(self) -> None:
        self._last: tuple[_Key, dict[str, Assignment]] | None = None
        self._rankings: dict[str, tuple[tuple[str, ...], Ranking]] = {}

    def place(self, state: DesiredState) -> dict[str, Assignment]:
        with gc_paused():  # millions of short-lived hash objects (see gcpause): ~1/3 faster
            return self._place(state)

    def _place(self, state: DesiredState) -> dict[str, Assignment]:
        key = _key(state)
        last = self._last
        if last is not None and last[0] == key:
            return dict(last[1])
        previous = self._rankings
        rankings: dict[str, tuple[tuple[str, ...], Ranking]] = {}
        eligible_of: dict[_SelectorKey, tuple[tuple[str, ...], list[bytes]]] = {}

        in_use: list[Ranking] = []  # the ranking being read: `_place` reads one at a time

        def ranked(d: Dataset) -> Sequence[str]:
            while in_use:  # its digests (~65 bytes per eligible node) are not needed again
                in_use.pop().compact()
            selector = (tuple(sorted(d.placement.selector.items())),
                        d.placement.match_expressions)
            found = eligible_of.get(selector)
            if found is None:
                names = tuple(n.name for n in state.nodes.values()
                              if eligible(n, d.placement))
                found = eligible_of[selector] = (names, [n.encode() for n in names])
            names, encoded = found
            old = previous.get(d.name)
            if old is not None and (old[0] is names or old[0] == names):
                rankings[d.name] = (names, old[1])
                return old[1]
            order = Ranking(d.name, names, encoded)
            rankings[d.name] = (names, order)
            in_use.append(order)
            return order

        result = _place(state, ranked)
        while in_use:
            in_use.pop().compact()
        self._rankings = rankings
        self._last = (key, result)
        return dict(result)


_PLACER = Placer()


def place(state: DesiredState) -> dict[str, Assignment]:
    """Place every dataset of a revision.

    Datasets are handled in a fixed order (priority, then name) and consume node `capacity`
    as they are placed, so a full node is skipped for later, lower-priority datasets. Sizes come
    from git (`placement_size`): the committed lock, else `spec.size`, else zero. Cordoned
    nodes get no replica of `replicas`/`all`; an explicit `nodes:` list still applies.
    Suspended datasets are placed like any other: suspension freezes the node's copy, it does
    not move replicas elsewhere.

    Remembers the last answer and the rankings (see `Placer`): the same revision placed again,
    by the runner and then by the executor or in the next pass, costs a comparison.
    """
    return _PLACER.place(state)


def place_uncached(state: DesiredState) -> dict[str, Assignment]:
    """`place` computed from scratch, remembering nothing (the reference the tests use)."""
    def ranked(d: Dataset) -> Sequence[str]:
        names = [n.name for n in state.nodes.values() if eligible(n, d.placement)]
        return rank_nodes(d.name, names)
    return _place(state, ranked)


def _place(state: DesiredState, ranked: Callable[[Dataset], Sequence[str]]
           ) -> dict[str, Assignment]:
    free: dict[str, int | None] = {n.name: n.capacity for n in state.nodes.values()}
    order = sorted(state.datasets.values(), key=lambda d: (PRIORITY_RANK[d.priority], d.name))
    return {d.name: _with_publisher(d, _place_one(d, state.nodes, free, ranked), state.nodes,
                                    free) for d in order}


def _with_publisher(d: Dataset, a: Assignment, nodes: Mapping[str, Node],
                    free: dict[str, int | None]) -> Assignment:
    """The publishing node of a `node:` source first among the dataset's nodes (it seeds)."""
    pub = publisher(d)
    if pub is None or pub not in nodes:
        return a
    if pub not in a.nodes:
        _take(free, pub, _size(d))
    return dataclasses.replace(a, nodes=(pub, *(n for n in a.nodes if n != pub)))


def _fits(free: Mapping[str, int | None], node: str, size: int) -> bool:
    room = free.get(node)
    return room is None or room >= size


def _take(free: dict[str, int | None], node: str, size: int) -> None:
    room = free.get(node)
    if room is not None:
        free[node] = room - size


def _place_one(d: Dataset, nodes: Mapping[str, Node], free: dict[str, int | None],
               ranked_of: Callable[[Dataset], Sequence[str]]) -> Assignment:
    size = _size(d)
    p = d.placement
    if p.nodes is not None:
        # Explicit placement is the user's call: honour it, but still account the space.
        explicit = tuple(n for n in p.nodes if n in nodes)
        for n in explicit:
            _take(free, n, size)
        return Assignment(d.name, explicit, len(p.nodes))

    ranked = ranked_of(d)
    n_eligible = len(ranked)
    wanted = len(ranked) if p.all else (p.replicas or 0)
    chosen: list[str] = []
    groups: set[str] = set()
    no_room = same_group = 0
    for name in ranked:
        if len(chosen) >= wanted:
            break
        group = nodes[name].storage_group
        if group is not None and group in groups:
            same_group += 1
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
        reason = (f"{len(chosen)} of {wanted} replicas placed: {n_eligible} eligible nodes"
                  + (f", {no_room} without room" if no_room else "")
                  + (f", {same_group} sharing a storage group with a chosen node"
                     if same_group else ""))
    unserved: tuple[str, ...] = ()
    if p.all:
        wanted = len(chosen) + no_room
        if no_room:
            reason = f"{no_room} eligible nodes without room"
        unserved = tuple(sorted({g for n in ranked
                                 if (g := nodes[n].storage_group) is not None} - groups))
    return Assignment(d.name, tuple(chosen), wanted, reason, unserved)


def datasets_for_node(assignments: Mapping[str, Assignment], node: str) -> list[str]:
    """Names of the datasets placed on `node`, sorted."""
    return sorted(name for name, a in assignments.items() if node in a.nodes)
