"""What a pass starts from: the state repo's revision, validated, and the plan against the
store. Light on purpose (no libtorrent, no aiohttp): `plan` and `status --cluster` use it
without starting a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from reconciler.adapters import lastgood
from reconciler.adapters.config import NodeConfig
from reconciler.adapters.pin_cache import PinCache
from reconciler.adapters.store import Store
from reconciler.core.pinning import with_locks
from reconciler.core.placement import Assignment, place
from reconciler.core.plan import Plan, make_plan
from reconciler.desired.revision import state_revision
from reconciler.desired.validate import load_desired_state
from reconciler.model.desired import DesiredState, ValidationError


@dataclass(frozen=True)
class Loaded:
    """A revision of the state repo: either a validated state or the reasons it was rejected."""

    root: Path  # the state repo, symlinks resolved once for the whole pass
    revision: str
    state: DesiredState | None
    errors: tuple[ValidationError, ...] = ()


def load(cfg: NodeConfig) -> Loaded:
    root = cfg.desired_state.resolve()  # once: a git-sync symlink swap must not mix revisions
    revision = state_revision(root)
    result = load_desired_state(root, revision)
    if isinstance(result, DesiredState):
        return Loaded(root, revision, result)
    return Loaded(root, revision, None, tuple(result))


def node_problem(cfg: NodeConfig, state: DesiredState) -> str | None:
    """Why this node must not act on `state` at all, if it must not."""
    if cfg.node not in state.nodes:
        known = ", ".join(sorted(state.nodes)) or "none"
        return (f"node {cfg.node!r} (from {cfg.source}) has no Node document in the state repo "
                f"(known nodes: {known}); refusing to act rather than evict everything")
    return None


def plan_for(cfg: NodeConfig, state: DesiredState) -> Plan:
    state = with_locks(state, PinCache(cfg.state_dir).locks(state))
    return make_plan(state, cfg.node, cfg.allowed_roots, Store(cfg.state_dir).observe())


def placed(cfg: NodeConfig, state: DesiredState) -> Mapping[str, Assignment]:
    """Placement of `state` as the executor will compute it (the torrents this node holds for
    unlocked datasets standing in for their locks). `place` remembers its last answer, so
    calling this first, in a worker thread, leaves the executor's call on the event loop only a
    comparison to do."""
    return place(with_locks(state, PinCache(cfg.state_dir).locks(state)))


@dataclass(frozen=True)
class Prepared:
    """The pure part of a pass, computed without libtorrent: the revision (validated or
    rejected), placement and this node's plan (None when the revision was rejected)."""

    loaded: Loaded
    assignments: Mapping[str, Assignment] | None
    plan: Plan | None


def prepare(cfg: NodeConfig) -> Prepared:
    """Revision, load, validate, place and plan, as a pass does (`bench/plan.py` times it)."""
    loaded = load(cfg)
    if loaded.state is None:
        return Prepared(loaded, None, None)
    state = with_locks(loaded.state, PinCache(cfg.state_dir).locks(loaded.state))
    assignments = place(state)
    plan = make_plan(state, cfg.node, cfg.allowed_roots, Store(cfg.state_dir).observe(),
                     assignments)
    return Prepared(loaded, assignments, plan)


def peer_listen(cfg: NodeConfig, state: DesiredState) -> str:
    return cfg.listen_peer or state.nodes[cfg.node].peer


def api_listen(cfg: NodeConfig, state: DesiredState) -> str:
    return cfg.listen_api or state.nodes[cfg.node].api


def effective_state(cfg: NodeConfig, loaded: Loaded) -> DesiredState | None:
    """What this node converges to: the newest revision if it is good, else the last good
    one it kept (None if there is none yet). Readers (`wait`, `status --cluster`) judge by
    this, so they stay useful while a broken commit is rejected."""
    if loaded.state is not None:
        return loaded.state
    snap = lastgood.load(cfg.state_dir)
    return snap[1] if snap is not None else None
