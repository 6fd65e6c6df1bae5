"""The plan: a pure diff of what this node must hold against what its store holds.

Level-triggered: the plan is recomputed on every pass from the whole desired state and the
observed store, so re-running it after a crash or a missed event gives the right answer.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

from reconciler.model.desired import PRIORITY_RANK, Dataset, DesiredState
from reconciler.model.observed import ObservedDataset, ObservedVersion
from reconciler.core.placement import Assignment, datasets_for_node, place
from reconciler.core.split import node_files

ActionKind = Literal["fetch", "update", "activate", "evict", "unchanged", "suspended", "blocked"]

#: Kinds that change the node; `unchanged`, `suspended` and `blocked` do not.
CHANGING: frozenset[str] = frozenset({"fetch", "update", "activate", "evict"})


@dataclass(frozen=True)
class Target:
    """One dataset this node must hold, with its node-specific path resolved."""

    dataset: Dataset
    path: str  # absolute, normalised
    # `spec.split`: the lock's files this node holds (core/split.py); None: all of them.
    files: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def bytes_total(self) -> int:
        """What this node holds of the version: a split one's files only."""
        lock = self.dataset.lock
        if lock is None:
            return 0
        if self.files is None:
            return lock.total_bytes
        return sum(size for path, size in lock.files if path in self.files)

    def holds(self, version: ObservedVersion) -> bool:
        """Is a complete stored `version` what this target asks for, file set included?"""
        return version.complete and version.files == self.files

    @property
    def info_hash(self) -> str | None:
        return self.dataset.lock.info_hash if self.dataset.lock else None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    dataset: str
    version: str | None = None
    info_hash: str | None = None
    path: str | None = None
    bytes_total: int = 0
    from_version: str | None = None  # what `update` replaces
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"action": self.kind, "dataset": self.dataset, "version": self.version,
                "infoHash": self.info_hash, "path": self.path, "bytesTotal": self.bytes_total,
                "fromVersion": self.from_version, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    node: str
    revision: str
    actions: tuple[Action, ...]
    targets: Mapping[str, Target]

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind in CHANGING)

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind == kind)


def resolve_path(path: str, allowed_roots: Sequence[str]) -> str:
    """Absolute target path of `spec.path` on this node; ValueError if outside allowedRoots."""
    if not allowed_roots:
        raise ValueError("the node config has no allowedRoots")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(allowed_roots[0], path))
    for root in allowed_roots:
        r = posixpath.normpath(root)
        if full != r and full.startswith(r.rstrip("/") + "/"):
            return full
    raise ValueError(f"path {full} is not under the node's allowedRoots ({', '.join(allowed_roots)})")


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def targets_for_node(state: DesiredState, node: str, allowed_roots: Sequence[str],
                     assignments: Mapping[str, Assignment] | None = None
                     ) -> tuple[dict[str, Target], list[Action]]:
    """The datasets placed on `node` with resolved paths, and `blocked` actions for those
    that cannot be acted on here (path outside allowedRoots, overlapping paths)."""
    assignments = assignments if assignments is not None else place(state)
    targets: dict[str, Target] = {}
    blocked: list[Action] = []
    names = sorted(datasets_for_node(assignments, node),
                   key=lambda n: (PRIORITY_RANK[state.datasets[n].priority], n))
    for name in names:
        d = state.datasets[name]
        try:
            path = resolve_path(d.path, allowed_roots)
        except ValueError as e:
            blocked.append(Action("blocked", name, d.version, reason=f"spec.path: {e}"))
            continue
        clash = next((t for t in targets.values() if _nested(t.path, path)), None)
        if clash is not None:
            blocked.append(Action("blocked", name, d.version, path=path,
                                  reason=f"spec.path {path} overlaps dataset {clash.name} at {clash.path}"))
            continue
        a = assignments.get(name)
        targets[name] = Target(d, path, split_files_here(d, a.nodes if a else (), node))
    return targets, blocked


def split_files_here(d: Dataset, targets: Sequence[str], node: str) -> frozenset[str] | None:
    """`spec.split`: the files of `d`'s lock that `node` holds; None when not split (or no
    lock yet: its files are not known)."""
    if d.split is None or d.lock is None:
        return None
    return node_files(d.name, [p for p, _ in d.lock.files], list(targets), d.split, node)


def make_plan(state: DesiredState, node: str, allowed_roots: Sequence[str],
              observed: Mapping[str, ObservedDataset],
              assignments: Mapping[str, Assignment] | None = None) -> Plan:
    """`assignments`: placement, when the caller has it already (default: computed here)."""
    targets, actions = targets_for_node(state, node, allowed_roots, assignments)
    for t in targets.values():
        actions.extend(_plan_target(t, observed.get(t.name)))
    for name in sorted(set(observed) - set(targets)):
        d = state.datasets.get(name)
        if d is not None and d.suspend:
            continue  # suspended: evict nothing
        if any(a.dataset == name and a.kind == "blocked" for a in actions):
            continue  # still placed here but blocked: keep what is there
        for v in _by_age(observed[name].versions.values()):
            actions.append(Action("evict", name, v.version, v.info_hash, observed[name].link,
                                  v.bytes_total, reason="no longer placed on this node"))
    return Plan(node, state.revision, tuple(actions), targets)


def _unpinned(t: Target, obs: ObservedDataset | None) -> Action:
    """An unlocked dataset whose torrent this node does not have yet (see metadata.py): its
    content is unknown, so nothing of it is activated or evicted until the torrent is here."""
    d = t.dataset
    if d.suspend:
        return Action("suspended", d.name, d.version, None, t.path,
                      reason="spec.suspend is true: left exactly as it is")
    if obs is not None and obs.active is not None and obs.active in obs.versions:
        return Action("update", d.name, d.version, None, t.path,
                      from_version=obs.versions[obs.active].version, reason=NO_METADATA)
    return Action("fetch", d.name, d.version, None, t.path, reason=NO_METADATA)


def _by_age(versions: Iterable[ObservedVersion]) -> list[ObservedVersion]:
    """Newest first; incomplete versions (no completion time) count as oldest."""
    return sorted(versions, key=lambda v: (v.completed_at or 0.0, v.info_hash), reverse=True)


NO_METADATA = ("no spec.lock and no torrent for this version yet: the first-ranked target node "
               "builds it from the source, the others fetch it from that node's API")


def _resplit(t: Target, have: ObservedVersion | None) -> str:
    """Why a complete version is fetched again: the split moved files to or from this node."""
    if have is None or not have.complete:
        return ""
    held = have.files if have.files is not None else frozenset(p for p, _ in (
        t.dataset.lock.files if t.dataset.lock else ()))
    want = t.files if t.files is not None else frozenset(p for p, _ in (
        t.dataset.lock.files if t.dataset.lock else ()))
    return (f"spec.split: the target nodes changed; {len(want - held)} file(s) to fetch, "
            f"{len(held - want)} no longer held here")


def _plan_target(t: Target, obs: ObservedDataset | None) -> list[Action]:
    d = t.dataset
    lock = d.lock
    if lock is None:
        return [_unpinned(t, obs)]
    ih = lock.info_hash
    if d.suspend:
        return [Action("suspended", d.name, d.version, ih, t.path, t.bytes_total,
                       reason="spec.suspend is true: left exactly as it is")]
    versions = obs.versions if obs else {}
    have = versions.get(ih)
    active_ih = obs.active if obs else None
    linked_here = obs is not None and obs.link == t.path
    out: list[Action] = []
    if have is not None and t.holds(have):
        if active_ih == ih and linked_here:
            out.append(Action("unchanged", d.name, d.version, ih, t.path, t.bytes_total))
        else:
            out.append(Action("activate", d.name, d.version, ih, t.path, t.bytes_total,
                              reason="in the store, not active at spec.path"))
    elif active_ih is not None and active_ih in versions:
        out.append(Action("update", d.name, d.version, ih, t.path, t.bytes_total,
                          from_version=versions[active_ih].version,
                          reason=_resplit(t, have)))
    else:
        out.append(Action("fetch", d.name, d.version, ih, t.path, t.bytes_total))

    # keepVersions: the desired version plus that many previous complete ones stay.
    old = [v for v in _by_age(versions.values()) if v.info_hash != ih]
    keep = {v.info_hash for v in old if v.complete and v.info_hash == active_ih}
    for v in old:
        if v.complete and len(keep) < d.keep_versions:
            keep.add(v.info_hash)
    for v in old:
        if v.info_hash in keep:
            continue
        if not v.complete and v.info_hash != ih:
            reason = "partial download of a version no longer desired"
        else:
            reason = f"older than the {d.keep_versions} kept previous version(s)"
        out.append(Action("evict", d.name, v.version, v.info_hash, None, v.bytes_total, reason=reason))
    return out
