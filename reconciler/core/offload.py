"""Origin offload: which pieces this node fetches from the origin, and which it waits for.

The origin is the scarce resource. libtorrent on its own keeps pulling from a web seed even
while peers hold the same pieces (2.1-2.6x origin amplification for 3 nodes, see the research
notes), so the web seed is only enabled for pieces that this node *owns* and that no connected
peer has:

- every run of contiguous pieces (about 1 MiB, see `run_length`) has one owner among the
  dataset's *target* nodes (the placement, from git and the lock: the same on every node),
  chosen by rendezvous hashing of `sha256("<infohash>:<run>:<node>")`. Who happens to be
  connected does not matter, so every node computes the same owners at any fleet size and each
  byte leaves the origin about once per cluster;
- liveness only re-homes: a target with an explicit death signal (`dead`: its peer port refuses
  connections, or its API stopped answering; engine/executor.py) loses its runs to the next
  node in that run's own rendezvous order, which every node computes the same too;
- a piece some connected peer already has is never fetched from the origin; a piece stuck with
  no source for `stuck_after` seconds is fetched anyway (core/transfer.py);
- shares follow progress: a node far behind its peers (`lagging`) stops fetching its share,
  and the nodes done with their own take its runs over (`takeover`), as they take the runs a
  stalled owner has not started.

Connectivity is bounded (`neighbours`): a node connects to a few target nodes per dataset, a
symmetric, connected overlay chosen from the info-hash alone, and pieces travel over it.

Everything here is pure: the executor feeds observations in and applies the decision.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, Mapping, Sequence


RUN_BYTES = 1 << 20  # aim for origin requests of about this size
MIN_RUNS_PER_NODE = 16  # ...but enough runs per node that shares stay even

#: Overlay degree: the target peers a node connects to per dataset (`neighbours`). A dataset
#: with at most DEGREE + 1 target nodes is a full mesh. 8 = four random rings of 2 each: an
#: expander, diameter 5-6 at 1,000 nodes (bench/offload_sim.py); 30 datasets cost at most 240
#: connections a node.
DEGREE = 8


def run_length(num_pieces: int, piece_size: int, targets: int) -> int:
    """Pieces per ownership run. Owning contiguous runs instead of single pieces keeps the
    origin's requests large (scattered 32 KiB pieces cost a round trip each: measured in
    bench/), while enough runs per node keep the shares even. Depends only on the torrent and
    the placement, so every node computes the same."""
    by_size = max(1, RUN_BYTES // max(1, piece_size))
    by_count = max(1, num_pieces // (MIN_RUNS_PER_NODE * max(1, targets)))
    return max(1, min(by_size, by_count))


#: Plain rendezvous hashing scores every run at every target: runs x targets hashes, at
#: least 16 n^2 (MIN_RUNS_PER_NODE runs a node), 16 M sha256 and tens of seconds per dataset
#: at 1,000 targets. Beyond WINDOW targets, a run is ranked among the WINDOW targets that follow
#: its point on a hash ring of the targets, then among the next WINDOW, and so on: runs x
#: WINDOW hashes. Up to WINDOW targets it is plain rendezvous hashing over all of them.
WINDOW = 16


def _score(info_hash: str, chunk: int, node: str) -> bytes:
    return hashlib.sha256(f"{info_hash}:{chunk}:{node}".encode()).digest()


def _point(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class Rendezvous:
    """The rendezvous order of every run of one torrent over its target nodes: the run's owner
    first, then who takes it over when the owner dies, and so on. Built once per torrent and
    target set (one hash a target); the same on every node."""

    def __init__(self, info_hash: str, targets: Iterable[str]) -> None:
        self.info_hash = info_hash
        self.nodes = sorted(set(targets))
        self.ring: list[str] = []
        self.points: list[int] = []
        if len(self.nodes) > WINDOW:
            pts = sorted((_point(f"{info_hash}:node:{n}"), n) for n in self.nodes)
            self.points = [p for p, _ in pts]
            self.ring = [n for _, n in pts]

    def order(self, chunk: int) -> Iterator[str]:
        """Run `chunk`'s nodes, best first (lazily: window by window)."""
        key = lambda n: _score(self.info_hash, chunk, n)  # noqa: E731
        if not self.ring:
            yield from sorted(self.nodes, key=key, reverse=True)
            return
        n = len(self.ring)
        start = bisect.bisect(self.points, _point(f"{self.info_hash}:run:{chunk}"))
        for w in range(0, n, WINDOW):
            window = [self.ring[(start + w + i) % n] for i in range(min(WINDOW, n - w))]
            yield from sorted(window, key=key, reverse=True)

    def owner(self, chunk: int, dead: Collection[str] = ()) -> str:
        """The first node of the run's order that is not dead (all dead: the first target)."""
        for x in self.order(chunk):
            if x not in dead:
                return x
        return self.nodes[0]

    def top(self, chunk: int, depth: int) -> list[str]:
        return list(itertools.islice(self.order(chunk), depth))


def piece_owner(info_hash: str, piece: int, live: Sequence[str], run: int = 1) -> str:
    """The owner of the run that holds `piece`: rendezvous hashing over `live`."""
    return Rendezvous(info_hash, live).owner(piece // run)


def ranking(info_hash: str, chunk: int, targets: Iterable[str], depth: int | None = None
            ) -> list[str]:
    """The rendezvous order of run `chunk` (`depth` first entries only, if given)."""
    rv = Rendezvous(info_hash, targets)
    return rv.top(chunk, depth if depth is not None else len(rv.nodes))


def owners(info_hash: str, num_pieces: int, targets: Iterable[str], run: int = 1,
           dead: Collection[str] = ()) -> list[str]:
    """The owner of every piece: per run, the first node of its rendezvous order over
    `targets` that is not `dead`, so a death moves only the dead node's runs, each to its own
    next-ranked node (up to WINDOW targets: rendezvous hashing over the survivors). If every
    target is dead, the first of them is named (nobody fetches: the stuck fallback does)."""
    rv = Rendezvous(info_hash, targets)
    dead_set = frozenset(dead)
    by_chunk: dict[int, str] = {}
    out = []
    for p in range(num_pieces):
        c = p // run
        if c not in by_chunk:
            by_chunk[c] = rv.owner(c, dead_set)
        out.append(by_chunk[c])
    return out


def watched(me: str, info_hash: str, num_runs: int, targets: Iterable[str], depth: int = 3
            ) -> frozenset[str]:
    """The target nodes whose death `me` must learn of: per run, those ranked above `me` when
    `me` is among the first `depth` of its rendezvous order (it takes the run over if they all
    die). At 1,000 targets and 16 runs a node, that is about 2 x 16 x depth nodes, not 999; a
    run whose first `depth` nodes all die is left to the stuck fallback."""
    out: set[str] = set()
    rv = Rendezvous(info_hash, set(targets) | {me})
    for c in range(num_runs):
        top = rv.top(c, depth)
        if me in top:
            out.update(top[:top.index(me)])
    return frozenset(out)


#: Up to this many target nodes, a node watches all of them (`watch_list`).
WATCH_ALL = 32
#: ...beyond, the nodes ranked above it in the runs where it is among the first WATCH_DEPTH.
WATCH_DEPTH = 3


def watch_list(me: str, info_hash: str, num_pieces: int, piece_size: int,
               targets: Iterable[str]) -> frozenset[str]:
    """The target peers whose liveness this node probes for one download (see `watched`)."""
    nodes = sorted(set(targets) | {me})
    if len(nodes) <= WATCH_ALL:
        return frozenset(n for n in nodes if n != me)
    run = run_length(num_pieces, piece_size, len(nodes))
    return watched(me, info_hash, -(-num_pieces // run), nodes, WATCH_DEPTH)


def _ring(info_hash: str, targets: Iterable[str], k: int = 0) -> list[str]:
    return sorted(set(targets),
                  key=lambda n: hashlib.sha256(f"{info_hash}:ring:{k}:{n}".encode()).digest())


def overlay(info_hash: str, targets: Iterable[str], degree: int = DEGREE
            ) -> dict[str, frozenset[str]]:
    """Every target's peers for this torrent: all the others when there are at most
    `degree + 1` targets; else the union of degree/2 rings, each the targets in their own hash
    order of the info-hash, every node linked to its two ring neighbours. Symmetric (b is a
    peer of a iff a is one of b), at most `degree` peers a node, connected (any one ring is),
    the same on every node that has the same targets, and, being a union of random
    Hamiltonian cycles, an expander: diameter about log n (bench/offload_sim.py). degree/2
    sorts: O(degree n log n)."""
    nodes = sorted(set(targets))
    n = len(nodes)
    if n - 1 <= degree:
        return {me: frozenset(x for x in nodes if x != me) for me in nodes}
    out: dict[str, set[str]] = {me: set() for me in nodes}
    for k in range(max(1, degree // 2)):
        ring = _ring(info_hash, nodes, k)
        for i, me in enumerate(ring):
            out[me].add(ring[i - 1])
            out[me].add(ring[(i + 1) % n])
    return {me: frozenset(v - {me}) for me, v in out.items()}


def neighbours(info_hash: str, me: str, targets: Iterable[str], degree: int = DEGREE
               ) -> frozenset[str]:
    """The target peers `me` connects to for this torrent (see `overlay`)."""
    return overlay(info_hash, set(targets) | {me}, degree)[me]


#: libtorrent piece priorities while this node's web seed is on. Its origin share goes first; a
#: piece a connected peer already has is wanted too, at the lowest priority, so the node keeps
#: taking from its peers while it fetches its share (with 0 there, each node fetched its whole
#: share and only then started on its peers: a 5.8-8.6 s tail after the origin's last byte,
#: 1.6-2.1x the fluid bound in bench/). A web seed asks for the highest priority first, so it
#: reaches a priority-1 piece only once every owned piece is already requested. Pieces nobody
#: has yet stay at 0: another node fetches them from the origin.
OWN, FROM_PEERS, NOT_NOW, DEFAULT = 7, 1, 0, 4


#: Priority bands of an origin share: the web seed fetches the share front to back in this
#: many bands (OWN down to OWN - BANDS + 1, all above FROM_PEERS), so the runs at its far end
#: stay untouched longest and a node whose own share is done can take them (`takeover`). Within
#: a band libtorrent picks as it likes.
BANDS = 6


@dataclass(frozen=True)
class OffloadDecision:
    """What the executor should do for one torrent right now."""

    origin: frozenset[int]  # pieces to fetch from the origin (web seed on iff non-empty)
    priorities: tuple[int, ...]  # libtorrent piece priorities (see OWN, FROM_PEERS, NOT_NOW)


def _banded(runs: Sequence[int]) -> dict[int, int]:
    """Priority per run, `runs` in fetch order: the first 1/BANDS at OWN, the next one lower."""
    n = len(runs)
    return {c: OWN - (i * BANDS // n) for i, c in enumerate(runs)}


def decide_offload(me: str, info_hash: str, have: Sequence[bool], available: Sequence[int],
           live: Iterable[str], stuck: Iterable[int] = (),
           owner_of: Sequence[str] | None = None, run: int | None = None,
           taken: Collection[int] = (), lag: bool = False,
           slow: Collection[int] = ()) -> OffloadDecision:
    """Pieces to take from the origin and the priorities that keep the web seed on them only.

    `available[p]` counts connected peers (not web seeds) that have piece p; `live` is the
    target nodes without a death signal (this node included); `owner_of` (default: `owners`
    over `live`) names each piece's owner; `stuck` are pieces without a source for too long;
    `taken` are runs of other owners this node took over (`takeover`).
    While the web seed is on, the origin share has priority OWN, pieces a peer has FROM_PEERS,
    and every other missing piece NOT_NOW, because libtorrent would otherwise fetch those from
    the web seed too; they come from peers once a peer has them. With `run` (pieces per run)
    the share is banded (BANDS): own runs front to back, taken runs from the far end, so that
    the untouched runs are at the far end of every share. With `lag` (`lagging`), none of its
    own: the nodes done with their shares take them (`takeover`). `slow` are pieces a peer
    has that come from the origin all the same (`slow_held`), at OWN.
    """
    live = sorted(set(live) | {me})
    own = owner_of if owner_of is not None else owners(info_hash, len(have), live)
    stuck_set = set(stuck)
    r = run or 1
    taken_set = set(taken)
    origin = frozenset(p for p, h in enumerate(have)
                       if not h and available[p] == 0
                       and (own[p] == me or p in stuck_set or p // r in taken_set))
    if lag:
        origin = frozenset(p for p in origin if own[p] != me or p in stuck_set)
    origin |= {p for p in slow if not have[p]}
    if not origin:
        return OffloadDecision(origin, tuple(DEFAULT for _ in have))
    band: dict[int, int] = {}
    if run:
        runs = sorted({p // r for p in origin})
        mine = [c for c in runs if own[c * r] == me]
        band = _banded(mine + [c for c in reversed(runs) if own[c * r] != me])
    prio = tuple(band.get(p // r, OWN) if p in origin else DEFAULT if h
                 else FROM_PEERS if available[p] else NOT_NOW
                 for p, h in enumerate(have))
    return OffloadDecision(origin, prio)


#: A node lags when it holds fewer than LAG_RATIO x the median number of own pieces its peers
#: hold, once that median is at least 1/LAG_MIN_PART of an even share (`lagging`), or fewer
#: than LAG_RATIO x the median number of pieces they hold in all.
LAG_RATIO = 0.3
LAG_MIN_PART = 4


def share_count(node: str, owner_of: Sequence[str], bits: Sequence[bool]) -> int:
    """How many of its own pieces `node` holds."""
    return sum(1 for p, o in enumerate(owner_of) if o == node and p < len(bits) and bits[p])


@dataclass(frozen=True)
class Held:
    """How many pieces each node seen holds, of its own share and in all: counted once per
    tick (one pass over each bitfield) for every lag judgement of that tick, which compare
    every node with every other (at 65,536 pieces and 9 nodes, counting per judgement was
    about 240 passes over the pieces a tick)."""

    own: Mapping[str, int]
    total: Mapping[str, int]
    even: float  # an even share: the pieces over the nodes that own some or are seen
    pieces: int

    @staticmethod
    def count(owner_of: Sequence[str], bits: Mapping[str, Sequence[bool]]) -> "Held":
        """From `owner_of` (per piece, its owner; empty before owners are known: no own
        counts) and `bits` (the bitfields of this node and of the peers seen)."""
        nodes = len(set(owner_of) | set(bits))
        return Held(own={n: share_count(n, owner_of, b) for n, b in bits.items()},
                    total={n: sum(map(bool, b)) for n, b in bits.items()},
                    even=len(owner_of) / nodes if nodes else 0.0,
                    pieces=max((len(b) for b in bits.values()), default=0))


def _behind(node: str, counts: Mapping[str, int], floor: float) -> bool:
    """`node`'s count under LAG_RATIO x the median of the others', once that median is at
    least `floor`."""
    ranked = sorted(c for n, c in counts.items() if n != node)
    median = ranked[(len(ranked) - 1) // 2]
    return median >= floor and counts[node] < LAG_RATIO * median


def lagging(node: str, held: Held) -> bool:
    """`node` fetches its share at under about a third of its peers' pace, or receives at
    under a third of theirs (`held`: the counts of `node` and of the peers seen). A
    lagging owner stops fetching its share and leaves it to the nodes that finish their own
    shares (`takeover`): what a slow node fetches it must also upload at its slow rate, and
    the others would wait for that (bench.swarm --slow-node 10: x2.27 without this rule).
    The executor keeps a node judged lagging so for the rest of the download.

    Two counts, each against the median of the peers': own pieces held (not fractions:
    shares differ in size, and a node with a small share is done first without being
    faster), which shows a web seed that falls behind; and pieces held in all, which shows
    a slow link. A node whose link is slow fetches its share at nearly its peers' pace while
    the origin is what every node waits for (0.8 MiB/s against a quarter of a 4 MiB/s
    origin); what it cannot do is take the other shares at their pace: its peers' bitfields
    fill from the origin and from each other several times faster than its own."""
    if node not in held.total or len(held.total) < 2:
        return False
    floor = held.even / LAG_MIN_PART
    return _behind(node, held.own, floor) or _behind(node, held.total, floor)


#: Peers holding this fraction of the pieces (median) or more are far ahead of a node that
#: holds under LAG_RATIO x as many: it joined late, which no start-up delay explains
#: (`joined_late`).
LATE_FRACTION = 0.5


def joined_late(node: str, held: Held) -> bool:
    """`node` arrived at a swarm that already holds much of the data: its peers' median count
    of pieces held is at least LATE_FRACTION of them and it holds under LAG_RATIO x that. It
    lags at once, not only after `transfer.LAG_AFTER`: that delay keeps nodes that start
    together from judging each other in their first moments, and in those 3 s a late joiner
    fetched runs of its share that the node done first then took back and fetched again
    (bench.swarm --stagger 10, origin trace: 0.5-2.5 MiB of 64 each way)."""
    if node not in held.total or len(held.total) < 2:
        return False
    return _behind(node, held.total, max(1.0, LATE_FRACTION * held.pieces))


def share_done(node: str, owner_of: Sequence[str], have: Sequence[bool]) -> bool:
    """`node` holds every piece it owns (`have`: its bitfield, as its peers see it)."""
    return all(h for o, h in zip(owner_of, have) if o == node)


def takeover(me: str, rv: Rendezvous, owner_of: Sequence[str], run: int,
             have: Sequence[bool], available: Sequence[int],
             peer_have: Mapping[str, Sequence[bool]], dead: Collection[str] = (),
             stalled: Collection[str] = (), laggards: Collection[str] = (),
             done_at: Mapping[str, float] | None = None, now: float = 0.0
             ) -> frozenset[int]:
    """The runs of slower owners that `me` takes from the origin now (progress-based share
    takeover; call it once `me`'s own share is done).

    Only the runs of two kinds of alive owners (connected peers whose bitfield `peer_have`
    shows) are taken, so nothing is fetched twice while an owner keeps pace:
    - `laggards` (`lagging`: behind the peers' pace; a laggard fetches none of its share any
      more): every run with a piece nobody `me` sees has;
    - `stalled` owners (their bitfield gained none of their own pieces for a while: a node
      whose downlink is full of peer traffic starves its own web seed): the runs nobody has
      started.
    Among nodes keeping pace, taking runs only moved the work around and added overlap
    (bench.swarm --nodes 8: origin 1.08-1.20x when any owner's untouched runs could be
    taken). Taken runs are fetched from the far end (`decide_offload`). A run's taker is the
    first node of its rendezvous order after the owner that is itself done, as far as `me`
    sees (itself, or a peer whose bitfield holds its own share): two idle nodes that see each
    other do not take the same run. Pure: the executor feeds bitfields in.

    With `done_at` (when each node was first seen done, `me` included, on `me`'s clock), a
    node done earlier goes first (`ahead_of`): it took every run it was first done for while
    `me` was busy, and a web seed's request runs whole ranges in parallel, so its runs show
    no piece until near their end; taking them again when `me` is done fetched them twice
    (bench.swarm --slow-node 10, origin trace: 1-6.4 MiB of 64 per run). For `PRECEDENCE`
    seconds after its own share is done, `me` takes no run that a peer done strictly
    earlier could be fetching; then (that peer may not see the owner) as without `done_at`.
    """
    dead_set = frozenset(dead)
    ahead = ahead_of(me, done_at, now, dead_set, peer_have) if done_at is not None else set()
    done: dict[str, bool] = {me: True}
    out: set[int] = set()
    n = len(have)
    runs = -(-n // run)
    for c in range(runs):
        o = owner_of[c * run]
        if o == me or o not in peer_have or o in dead_set:
            continue
        if o not in laggards and o not in stalled:
            continue  # an owner keeping pace keeps its runs: a taker would meet it mid-share
        if ahead - {o}:
            continue  # a node done before `me` took this owner's runs first
        pieces = range(c * run, min(n, (c + 1) * run))
        if o in laggards:
            if all(have[p] or available[p] for p in pieces):
                continue  # nothing left to fetch; what is left of a started run is taken
        elif any(have[p] or available[p] for p in pieces):
            continue  # a stalled owner keeps the runs it has started
        for x in rv.order(c):
            if x == o or x in dead_set or (x != me and x not in peer_have):
                continue
            if x not in done:
                done[x] = share_done(x, owner_of, peer_have[x])
            if done[x]:
                if x == me:
                    out.add(c)
                break
    return frozenset(out)


#: Seconds after its own share is done that a node leaves the runs of slower owners to a node
#: done before it (`takeover` with `done_at`). Longer than the earlier node needs to fetch a
#: 4-node cluster's laggard share from a saturated origin (about 4 s at 4 MiB/s); shorter
#: than `transfer.STUCK_AFTER`, so that a run nobody fetches (the earlier node does not see
#: its owner: a partial overlay) is late by this much at most, not stuck.
PRECEDENCE = 8.0


def ahead_of(me: str, done_at: Mapping[str, float], now: float, dead: Collection[str],
             peer_have: Mapping[str, Sequence[bool]]) -> set[str]:
    """The connected peers seen done with their own shares strictly before `me` was, while
    `me` has been done for under `PRECEDENCE` seconds. Strictly: each node sees its own share
    done at once and a peer's a little late, so two nodes never both defer to each other
    (at worst, done in the same moment, both take: the rule without `done_at`)."""
    mine = done_at.get(me)
    if mine is None or now - mine >= PRECEDENCE:
        return set()
    return {n for n, t in done_at.items()
            if n != me and t < mine and n in peer_have and n not in dead}


#: Seconds a piece may be missing here while a peer has it, with this node's downlink idle,
#: before a node done with its own share fetches it from the origin (`slow_held`). A peer with
#: a normal uplink sends a piece within a second of being asked; one that has not in this
#: long serves slower than the origin would.
SLOW_HELD_AFTER = 4.0


def slow_held(me: str, rv: Rendezvous, run: int, have: Sequence[bool],
              peer_have: Mapping[str, Sequence[bool]], done: Collection[str],
              waiting_since: Sequence[float], now: float, dead: Collection[str] = (),
              laggards: Collection[str] = ()) -> frozenset[int]:
    """Pieces `me` fetches from the origin though a peer has them (call it while `me` is done
    with its own share and its downlink is idle: waiting on slow peers, not busy): missing
    here for `SLOW_HELD_AFTER` seconds while a peer had them (`waiting_since`, per piece), and
    `me` first, in the run's rendezvous order, of the nodes done with their own shares (`done`:
    peers seen, `me` counts as done) that lack it, laggards excluded. A slow node uploads each
    piece it fetched to every peer that asks, at its slow rate: with `--slow-node 10`, when it
    was not judged lagging, the others waited until 30-89 s for its 5.7-13 MiB (bench.swarm:
    x 1.6-4.8 their time without it). Origin bytes for time, each such piece by one node,
    from which the other done nodes take it."""
    dead_set, lag_set, done_set = frozenset(dead), frozenset(laggards), frozenset(done)
    orders: dict[int, list[str]] = {}
    out: set[int] = set()
    for p, h in enumerate(have):
        if h or now - waiting_since[p] < SLOW_HELD_AFTER:
            continue
        c = p // run
        if c not in orders:
            orders[c] = [x for x in rv.order(c) if x == me or (
                x in done_set and x in peer_have and x not in dead_set and x not in lag_set)]
        first = next((x for x in orders[c]
                      if x == me or not (p < len(peer_have[x]) and peer_have[x][p])), None)
        if first == me:
            out.add(p)
    return frozenset(out)
