"""Limits on what the store may hold: `cache.limit` and `cache.minFree`, as pure rules.

The shell measures the store (bytes per version, each inode counted once) and the filesystem
(statvfs), and hands them here with the pass's decision. `admit` lets a download start only
if it fits under both limits, evicting least-recently-active first among data that may go
(kept previous versions, and versions of datasets no longer placed here); a download that
cannot fit even then is refused (`Failed`, NoRoom) and nothing is evicted for it. A desired
version, the active version of a dataset still placed here, and anything being downloaded
are never candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from reconciler.core import transfer
from reconciler.core.plan import Plan
from reconciler.core.transfer import Evict, Failure, FailureReason, PassDecision, Row, StartJob
from reconciler.core.units import format_bytes
from reconciler.model.ids import DatasetName, InfoHash
from reconciler.model.observed import ObservedDataset

VersionKey = tuple[str, str]  # (dataset, info-hash)


@dataclass(frozen=True)
class Room:
    """One look at the store and its filesystem."""

    used: int  # bytes the store holds, each inode once
    free: int  # bytes available on the filesystem (statvfs f_bavail * f_frsize)
    limit: int | None  # cache.limit; None or 0: no limit
    min_free: int  # cache.minFree, in bytes


@dataclass(frozen=True)
class Candidate:
    dataset: DatasetName
    info_hash: InfoHash
    version: str | None
    size: int  # bytes evicting it frees (inodes linked only from it)
    last_active: float  # epoch seconds it last served at a symlink (or completed)
    reason: str


def shortfall(room: Room, need: int) -> int:
    """Bytes to free before `need` more bytes fit under cache.limit and above minFree."""
    over_limit = room.used + need - room.limit if room.limit else 0
    under_free = room.min_free - (room.free - need)
    return max(0, over_limit, under_free)


def choose(room: Room, need: int, candidates: list[Candidate]
           ) -> tuple[list[Candidate], Failure | None]:
    """What to evict, least recently active first, so that `need` fits; or a NoRoom failure
    naming the bytes needed and the bytes that could be freed (then nothing is evicted)."""
    short = shortfall(room, need)
    if short == 0:
        return [], None
    picked: list[Candidate] = []
    freed = 0
    for c in sorted(candidates, key=lambda c: (c.last_active, c.dataset, c.info_hash)):
        if freed >= short:
            break
        picked.append(c)
        freed += c.size
    if freed >= short:
        return picked, None
    freeable = sum(c.size for c in candidates)
    limits = []
    if room.limit:
        limits.append(f"cache.limit {format_bytes(room.limit)}, store holds {format_bytes(room.used)}")
    limits.append(f"{format_bytes(room.free)} free on the filesystem, cache.minFree "
                  f"{format_bytes(room.min_free)}")
    return [], Failure(FailureReason.NO_ROOM, (
        f"no room: needs {need} bytes ({format_bytes(need)}), {short} bytes more than there is "
        f"room for ({'; '.join(limits)}); evicting kept and unwanted versions can free "
        f"{freeable} bytes ({format_bytes(freeable)})"))


def candidates(plan: Plan, observed: Mapping[str, ObservedDataset],
               sizes: Mapping[VersionKey, int], mtimes: Mapping[VersionKey, float],
               busy: frozenset[str], now: float, grace_period: float = 0.0) -> list[Candidate]:
    """Complete versions that may go under pressure: kept previous versions of datasets placed
    here (not their active one, not the desired one) and the versions of a dataset no longer
    placed here once its `gracePeriod` is over (DESIGN §4: eviction respects it; a download
    that cannot fit meanwhile is Failed and retried when the grace period ends). `mtimes`: when a version stopped being active (the shell keeps it on the
    version's directory); a draining dataset's active version last served when it started
    draining."""
    out: list[Candidate] = []
    for name, obs in observed.items():
        t = plan.targets.get(name)
        if t is None and any(a.dataset == name and a.kind in ("blocked", "suspended")
                             for a in plan.actions):
            continue
        if t is not None and t.dataset.suspend:
            continue
        for ih, v in obs.versions.items():
            if not v.complete or ih in busy:
                continue
            if t is not None and (ih == t.info_hash or ih == obs.active):
                continue
            since = obs.draining_since if obs.draining_since is not None else now
            if t is None and now - since < grace_period:
                continue  # still seeded to its new holders
            if t is None and ih == obs.active:
                last = since
                reason = "no longer placed on this node"
            else:
                last = mtimes.get((name, ih), v.completed_at or 0.0)
                reason = ("no longer placed on this node" if t is None
                          else "kept previous version")
            out.append(Candidate(DatasetName(name), InfoHash(ih), v.version,
                                 sizes.get((name, ih), v.bytes_total), last, reason))
    return out


def admit(decision: PassDecision, room: Room, pool: list[Candidate],
          need: Mapping[InfoHash, int]) -> PassDecision:
    """Let each download this pass starts through if it fits (evicting for it first), else
    turn it into a `Failed` row. `need[ih]`: bytes still to be written for that version."""
    evicted = {(e.dataset, e.info_hash) for e in decision.effects if isinstance(e, Evict)}
    freed = sum(c.size for c in pool if (c.dataset, c.info_hash) in evicted)
    pool = [c for c in pool if (c.dataset, c.info_hash) not in evicted]
    room = replace(room, used=room.used - freed, free=room.free + freed)
    rows = dict(decision.rows)
    wanted = dict(decision.wanted)
    effects: list[transfer.Effect] = []
    for eff in decision.effects:
        if not isinstance(eff, StartJob) or eff.target.info_hash is None:
            effects.append(eff)
            continue
        ih = InfoHash(eff.target.info_hash)
        n = max(0, need.get(ih, 0))
        picked, failure = choose(room, n, pool)
        if failure is not None:
            name = DatasetName(eff.target.name)
            row = rows.get(name)
            rows[name] = Row("Failed", eff.target, eff.target.dataset.version, eff.target.path,
                             ih, row.bytes_total if row else 0, error=failure.message)
            wanted.pop(ih, None)
            effects.append(transfer.Note("dataset failed", "error", (
                ("dataset", name), ("reason", failure.reason.value),
                ("error", failure.message))))
            continue
        for c in picked:
            effects += [transfer.DropJob(c.info_hash),
                        Evict(c.dataset, c.info_hash, c.version,
                              f"{c.reason}; evicted to make room for {eff.target.name}")]
            wanted.pop(c.info_hash, None)
            pool.remove(c)
        gain = sum(c.size for c in picked)
        room = replace(room, used=room.used - gain + n, free=room.free + gain - n)
        effects.append(eff)
    return replace(decision, rows=rows, wanted=wanted, effects=tuple(effects))


def running_short(free: int, min_free: int) -> Failure | None:
    """While downloads run: the filesystem fell under minFree (someone else wrote to it)."""
    if free >= min_free:
        return None
    return Failure(FailureReason.NO_ROOM, (
        f"no room: {free} bytes ({format_bytes(free)}) free on the filesystem, under "
        f"cache.minFree {min_free} bytes ({format_bytes(min_free)}); resumes when space returns"))


def min_free_bytes(setting: int | float, fs_size: int) -> int:
    """cache.minFree: bytes (int) or a fraction of the filesystem (float, 0.05 for 5%)."""
    if isinstance(setting, float):
        return int(fs_size * setting)
    return int(setting)
