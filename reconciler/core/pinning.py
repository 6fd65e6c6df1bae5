"""Metadata for datasets without `spec.lock`: which torrent pins them, and who makes it.

A dataset without a lock is pinned the first time it is read: the target node ranked first by
rendezvous hashing reads the source once (writing the bytes to its staging area as it hashes
them) and builds the same hybrid torrent `syncbit-reconcile lock` would; the other target nodes
fetch that torrent from a target node's API (`GET /v1/metadata/<dataset>/<key>`) and download the
bytes from the swarm. From then on the torrent is the dataset's lock on every node that holds it,
so the guarantees are those of a locked dataset: every byte verified against it, atomic
activation, resume.

The *key* names what is pinned: the dataset's name, `version` and `source`. A changed version
or source is a new key, hence a new build; nothing else (mirrors, placement, path) is.

Pure; `adapters/pin_cache.py` keeps the torrents in `<stateDir>/metadata/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from reconciler.model.desired import Dataset, DesiredState, LockFile
from reconciler.core.lockfile import read_lock



def metadata_key(d: Dataset) -> str:
    """What pins an unlocked dataset: sha256 of its name, version and source (hex, 32 chars)."""
    doc = {"dataset": d.name, "version": d.version, "source": dataclasses.asdict(d.source)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def with_locks(state: DesiredState, locks: Mapping[str, LockFile]) -> DesiredState:
    """`state` with the torrents found for unlocked datasets standing in for `spec.lock`."""
    if not locks:
        return state
    datasets = dict(state.datasets)
    for name, lock in locks.items():
        d = datasets.get(name)
        if d is not None and d.lock is None:
            datasets[name] = dataclasses.replace(d, lock=lock, pinned_lock=True)
    return dataclasses.replace(state, datasets=datasets)


# -- who builds -----------------------------------------------------------------------------

#: What a target node said when asked for a dataset's torrent.
#: has: here it is; building: reading the source now; waiting: wants it too, not building;
#: failed: its build failed; unknown: does not want this key (another revision, not a target);
#: unreachable: no answer.
PeerState = Literal["has", "building", "waiting", "failed", "unknown", "unreachable"]


@dataclass(frozen=True)
class PinDecision:
    kind: Literal["take", "wait", "build"]
    node: str | None = None  # `take`: from whom; `wait`: for whom
    reason: str = ""


def blocked(me: str, ranked: Sequence[str], answers: Mapping[str, PeerState]) -> bool:
    """Does another node's answer mean this one must not build (it has, builds, or is ranked
    above us and wants it too)?"""
    above = set(ranked[:ranked.index(me)] if me in ranked else ranked)
    return any(s in ("has", "building") or (s == "waiting" and n in above)
               for n, s in answers.items() if n != me)


def decide_pin(me: str, ranked: Sequence[str], answers: Mapping[str, PeerState],
           unblocked_for: float, takeover_after: float, settle: float = 3.0) -> PinDecision:
    """What this node does next about an unlocked dataset's torrent.

    `ranked`: the dataset's target nodes, highest rendezvous weight first. Take it from whoever
    has it; wait while anyone builds, or while a node ranked above us wants it too (it builds,
    or waits for one above it); the first-ranked node builds once every other node has
    answered or `settle` seconds have passed (a node starting at the same moment may have the
    torrent already), the others only once no node above them has been heard from for
    `takeover_after` seconds (`unblocked_for`).
    """
    others = [n for n in ranked if n != me]
    for n in others:
        if answers.get(n) == "has":
            return PinDecision("take", n, f"{n} has it")
    for n in others:
        if answers.get(n) == "building":
            return PinDecision("wait", n, f"{n} is building it")
    above = ranked[:ranked.index(me)] if me in ranked else list(ranked)
    for n in above:
        if answers.get(n) == "waiting":
            return PinDecision("wait", n, f"{n} is ranked above this node and gets it first")
    if not above:
        silent = [n for n in others if answers.get(n, "unreachable") == "unreachable"]
        if silent and unblocked_for < settle:
            return PinDecision("wait", silent[0], f"ranked first; giving {', '.join(silent)} "
                                               f"{settle - unblocked_for:.0f}s to answer")
        return PinDecision("build", reason="ranked first among the target nodes")
    if unblocked_for >= takeover_after:
        quiet = ", ".join(f"{n}: {answers.get(n, 'unreachable')}" for n in above)
        return PinDecision("build", reason=f"no node ranked above builds it ({quiet})")
    return PinDecision("wait", above[0], f"{above[0]} is ranked first; taking over in "
                                      f"{takeover_after - unblocked_for:.0f}s unless it answers")


def check(torrent: bytes, d: Dataset, where: str) -> LockFile:
    """Parse `torrent` as the metadata of `d`: a valid lock whose top directory is the dataset's
    name, as `lock` writes it. ValueError otherwise."""
    lock = read_lock(torrent, where)
    if lock.name != d.name:
        raise ValueError(f"torrent of {lock.name!r}, not of dataset {d.name!r}")
    return lock
