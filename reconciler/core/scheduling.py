"""Which downloads run, and how the download bandwidth is shared among them (pure).

`choose_active` decides, over the downloads a pass wants and whether each is running now,
which may fetch: at most `max_active`, by `priority` (critical first), running ones before
waiting ones of the same priority (no churn between equals), then by name; downloads whose
last attempt failed come after all others (a failing origin does not hold a slot that a
download never tried could use). A download of a
higher priority than a running one takes its place at once: the lower one is paused (it
stays in the libtorrent session with every verified piece) and resumes when a slot frees.

`rate_caps` shares the download bandwidth by weight (critical 8, high 4, normal 2, low 1):
the highest priority among the running downloads is never capped (it takes what the others
leave: work-conserving), every lower one is capped at its weight's share of the budget. The
budget is the node's `bandwidth.download` when set, else the total rate measured over the
running downloads (a lower download then converges to its weight relative to the higher
ones: a low next to a critical gets about 1/8 of what the critical gets). Nothing is capped
while the highest priority receives less than MIN_RATE (it is waiting for peers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from reconciler.model.desired import PRIORITY_RANK
from reconciler.model.ids import DatasetName, InfoHash

WEIGHT: Mapping[str, int] = {"critical": 8, "high": 4, "normal": 2, "low": 1}
MIN_RATE = 64 * 1024  # bytes/s: a capped download never gets less (it keeps its peers alive)


@dataclass(frozen=True)
class Candidate:
    """A download a pass wants: started or not, running or paused."""

    info_hash: InfoHash
    dataset: DatasetName
    priority: str  # low|normal|high|critical
    running: bool  # in the session and fetching now (not paused)
    failed: bool = False  # its last attempt failed: retried after those never tried


@dataclass(frozen=True)
class Schedule:
    active: tuple[InfoHash, ...]  # may fetch, highest priority first
    waiting: Mapping[InfoHash, str]  # must wait (not started, or paused), with the reason


@dataclass(frozen=True)
class Pause:
    """Stop fetching (a higher-priority download takes the slot); verified pieces are kept."""

    info_hash: InfoHash
    reason: str


@dataclass(frozen=True)
class Resume:
    """Fetch again a download paused earlier."""

    info_hash: InfoHash


def _key(c: Candidate) -> tuple[bool, int, bool, str]:
    return (c.failed, PRIORITY_RANK.get(c.priority, PRIORITY_RANK["normal"]), not c.running,
            c.dataset)


def choose_active(cands: Sequence[Candidate], max_active: int) -> Schedule:
    """`max_active` <= 0: no cap."""
    order = sorted(cands, key=_key)
    cap = len(order) if max_active <= 0 else max_active
    active, rest = order[:cap], order[cap:]
    waiting: dict[InfoHash, str] = {}
    for c in rest:
        if c.running:
            waiting[c.info_hash] = (f"paused: {cap} downloads of higher or equal priority "
                                    f"active (maxActiveDownloads {cap})")
        else:
            waiting[c.info_hash] = f"queued: {cap} downloads active (maxActiveDownloads {cap})"
    return Schedule(tuple(c.info_hash for c in active), waiting)


@dataclass(frozen=True)
class Running:
    """One running download as a tick sees it."""

    info_hash: InfoHash
    priority: str
    rate: int  # measured download payload rate, bytes/s


def rate_caps(running: Sequence[Running], limit: int) -> dict[InfoHash, int]:
    """Per-torrent download limits (0 = none) for the running downloads. `limit`: the node's
    download limit in bytes/s, 0 = none."""
    if not running:
        return {}
    top = min(PRIORITY_RANK.get(r.priority, 2) for r in running)
    total_weight = sum(WEIGHT.get(r.priority, 2) for r in running)
    budget = limit if limit > 0 else sum(max(0, r.rate) for r in running)
    top_rate = sum(r.rate for r in running if PRIORITY_RANK.get(r.priority, 2) == top)
    if top_rate < MIN_RATE:
        # The highest priority is not receiving (waiting for peers, checking): capping the
        # others would only waste bandwidth (and, without a limit, shrink the budget).
        return {r.info_hash: 0 for r in running}
    out: dict[InfoHash, int] = {}
    for r in running:
        if PRIORITY_RANK.get(r.priority, 2) == top:
            out[r.info_hash] = 0
        else:
            share = budget * WEIGHT.get(r.priority, 2) // total_weight
            out[r.info_hash] = max(MIN_RATE, share)
    return out
