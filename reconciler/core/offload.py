"""Origin offload: which pieces this node fetches from the origin, and which it waits for.

The origin is the scarce resource. libtorrent on its own keeps pulling from a web seed even
while peers hold the same pieces (2.1-2.6x origin amplification for 3 nodes, see the research
notes), so the web seed is only enabled for pieces that this node *owns* and that no connected
peer has:

- every run of contiguous pieces (about 1 MiB, see `run_length`) has one owner among the live
  target nodes, chosen by rendezvous hashing of `sha256("<infohash>:<run>:<node>")`; every
  node computes the same owners from the same live set, so each byte leaves the origin about
  once per cluster;
- a piece some connected peer already has is never fetched from the origin;
- when a node dies, its pieces re-home to the survivors (the live set shrank), so no shard is
  left unfetched; a piece stuck with no source for `stuck_after` seconds is fetched anyway.

Everything here is pure: the executor feeds observations in and applies the decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence


RUN_BYTES = 1 << 20  # aim for origin requests of about this size
MIN_RUNS_PER_NODE = 16  # ...but enough runs per node that shares stay even


def run_length(num_pieces: int, piece_size: int, targets: int) -> int:
    """Pieces per ownership run. Owning contiguous runs instead of single pieces keeps the
    origin's requests large (scattered 32 KiB pieces cost a round trip each: measured in
    bench/), while enough runs per node keep the shares even. Depends only on the torrent and
    the placement, so every node computes the same."""
    by_size = max(1, RUN_BYTES // max(1, piece_size))
    by_count = max(1, num_pieces // (MIN_RUNS_PER_NODE * max(1, targets)))
    return max(1, min(by_size, by_count))


def piece_owner(info_hash: str, piece: int, live: Sequence[str], run: int = 1) -> str:
    """The owner of the run that holds `piece`: rendezvous hashing over the live nodes."""
    chunk = piece // run
    return max(live, key=lambda n: hashlib.sha256(f"{info_hash}:{chunk}:{n}".encode()).digest())


def owners(info_hash: str, num_pieces: int, live: Iterable[str], run: int = 1) -> list[str]:
    nodes = sorted(set(live))
    by_chunk: dict[int, str] = {}
    out = []
    for p in range(num_pieces):
        c = p // run
        if c not in by_chunk:
            by_chunk[c] = piece_owner(info_hash, p, nodes, run)
        out.append(by_chunk[c])
    return out


#: libtorrent piece priorities while this node's web seed is on. Its origin share goes first; a
#: piece a connected peer already has is wanted too, at the lowest priority, so the node keeps
#: taking from its peers while it fetches its share (with 0 there, each node fetched its whole
#: share and only then started on its peers: a 5.8-8.6 s tail after the origin's last byte,
#: 1.6-2.1x the fluid bound in bench/). A web seed asks for the highest priority first, so it
#: reaches a priority-1 piece only once every owned piece is already requested. Pieces nobody
#: has yet stay at 0: another node fetches them from the origin.
OWN, FROM_PEERS, NOT_NOW, DEFAULT = 7, 1, 0, 4


@dataclass(frozen=True)
class OffloadDecision:
    """What the executor should do for one torrent right now."""

    origin: frozenset[int]  # pieces to fetch from the origin (web seed on iff non-empty)
    priorities: tuple[int, ...]  # libtorrent piece priorities (see OWN, FROM_PEERS, NOT_NOW)


def decide_offload(me: str, info_hash: str, have: Sequence[bool], available: Sequence[int],
           live: Iterable[str], stuck: Iterable[int] = (),
           owner_of: Sequence[str] | None = None) -> OffloadDecision:
    """Pieces to take from the origin and the priorities that keep the web seed on them only.

    `available[p]` counts connected peers (not web seeds) that have piece p; `live` is this
    node plus the target peers currently connected; `stuck` are pieces without a source for too
    long. While the web seed is on, the origin share has priority OWN, pieces a peer has
    FROM_PEERS, and every other missing piece NOT_NOW, because libtorrent would otherwise fetch
    those from the web seed too; they come from peers once a peer has them.
    """
    live = sorted(set(live) | {me})
    own = owner_of if owner_of is not None else owners(info_hash, len(have), live)
    stuck_set = set(stuck)
    origin = frozenset(p for p, h in enumerate(have)
                       if not h and available[p] == 0 and (own[p] == me or p in stuck_set))
    if origin:
        prio = tuple(OWN if p in origin else DEFAULT if h else FROM_PEERS if available[p] else NOT_NOW
                     for p, h in enumerate(have))
    else:
        prio = tuple(DEFAULT for _ in have)
    return OffloadDecision(origin, prio)
