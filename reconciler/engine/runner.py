"""One pass of the reconciler, end to end:

desired-state files -> validated model -> placement -> plan -> executor -> store -> status.

This module is the seam the CLI (`--once`, `plan`) and the daemon loop share; it owns the rules
that must never break: a rejected revision touches nothing, and every pass ends with a status
file written atomically.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import structlog

from reconciler.adapters import lastgood
from reconciler.adapters.api import ApiServer
from reconciler.adapters.config import NodeConfig
from reconciler.model.desired import DesiredState, ValidationError
from reconciler.desired.revision import state_revision
from reconciler.desired.validate import load_desired_state
from reconciler.engine.executor import Executor
from reconciler.engine.pinning import POLL_MAX
from reconciler.core.pinning import MetadataCache, with_locks
from reconciler.core.placement import datasets_for_node, place
from reconciler.core.plan import Plan, make_plan
from reconciler.adapters.status_file import DatasetStatus, NodeReport, Rejected, now_rfc3339, pass_result, read_status, write_status
from reconciler.adapters.store import Store

log = structlog.get_logger("reconcile")

EXIT_READY, EXIT_NOT_READY, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
POLL = 0.2  # seconds between looks at libtorrent
DEFAULT_LINGER = 60.0  # --once: longest time to keep seeding for peers after converging
LINGER_GRACE = 3.0  # --once: how long to wait for target peers that never connected
ASKED_GRACE = POLL_MAX + 2.0  # --once: a peer that asked for a torrent this recently is coming


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
    state = with_locks(state, MetadataCache(cfg.state_dir).locks(state))
    return make_plan(state, cfg.node, cfg.allowed_roots, Store(cfg.state_dir).observe())


def peer_listen(cfg: NodeConfig, state: DesiredState) -> str:
    return cfg.listen_peer or state.nodes[cfg.node].peer


async def reconcile_once(cfg: NodeConfig, timeout: float | None = None,
                         on_progress: Callable[[Mapping[str, DatasetStatus]], None] | None = None,
                         linger: float = DEFAULT_LINGER) -> tuple[dict[str, object], int]:
    """Converge this node once; returns the status document written and the CLI exit code."""
    started = now_rfc3339()
    deadline = None if timeout is None else time.monotonic() + timeout
    previous = read_status(cfg.status_file) or {}
    last_applied = previous.get("lastAppliedRevision")
    loaded = load(cfg)
    log_ = log.bind(node=cfg.node, revision=loaded.revision)

    if loaded.state is None:
        for e in loaded.errors:
            log_.error("revision rejected", file=e.file, line=e.line, field=e.field, error=e.message)
        report = NodeReport(cfg.node, loaded.revision, last_applied,  # type: ignore[arg-type]
                            started, now_rfc3339(), "Rejected",
                            _previous_datasets(previous), Rejected(loaded.revision, loaded.errors))
        return write_status(cfg.status_file, cfg.metrics_file, report), EXIT_REJECTED

    state = loaded.state
    lastgood.save(cfg.state_dir, loaded.root, state)
    problem = node_problem(cfg, state)
    if problem:
        log_.error("node not in inventory", error=problem)
        report = NodeReport(cfg.node, loaded.revision, last_applied, started,  # type: ignore[arg-type]
                            now_rfc3339(), "Failed", _previous_datasets(previous))
        doc = write_status(cfg.status_file, cfg.metrics_file, report)
        return doc, EXIT_NOT_READY

    executor = Executor(cfg, peer_listen(cfg, state))
    publish = _throttled_status(cfg, loaded.revision, started, on_progress)
    await executor.start()
    api = await _metadata_api(cfg, state, executor)
    try:
        executor.apply(state, loaded.root)
        publish(executor.statuses)
        while executor.busy() and not _past(deadline):
            await asyncio.sleep(POLL)
            executor.tick()
            publish(executor.statuses)
        await _linger(executor, linger, deadline)
    finally:
        await executor.close()
        if api is not None:
            await api.stop()
    statuses = executor.statuses
    result = pass_result(statuses, rejected=False)
    report = NodeReport(cfg.node, loaded.revision, loaded.revision, started, now_rfc3339(),
                        result, statuses)
    doc = write_status(cfg.status_file, cfg.metrics_file, report)
    log_.info("pass finished", result=result,
              datasets={n: s.phase for n, s in sorted(statuses.items())})
    return doc, EXIT_READY if result == "Converged" else EXIT_NOT_READY


async def _metadata_api(cfg: NodeConfig, state: DesiredState, executor: Executor
                        ) -> ApiServer | None:
    """`--once` serves the API too when an unlocked dataset is placed here: the other target
    nodes fetch its torrent from the node that builds it (metadata.py). A port in use (a
    daemon runs) is not fatal: the peers then build it themselves."""
    placed = datasets_for_node(place(state), cfg.node)
    if not any(state.datasets[n].lock is None for n in placed):
        return None
    listen = cfg.listen_api or state.nodes[cfg.node].api
    api = ApiServer(listen, lambda: read_status(cfg.status_file),
                    metadata=executor.resolver.answer)
    try:
        await api.start()
    except (OSError, ValueError) as e:
        log.warning("cannot serve the API; peers cannot fetch torrents from this node",
                    node=cfg.node, listen=listen, error=str(e))
        return None
    return api


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def _linger(executor: Executor, linger: float, deadline: float | None) -> None:
    """Keep seeding after this node is done while inventory peers still download from it, so
    simultaneous `--once` runs share the origin's bytes instead of each fetching them. Bounded
    by `linger` seconds (and the run's deadline); target peers that never connected are waited
    for only LINGER_GRACE seconds, or while peers keep asking for an unlocked dataset's torrent
    here (they poll at least every POLL_MAX seconds, and download the bytes once they have it)."""
    done = time.monotonic()
    end = done + linger
    while time.monotonic() < end and not _past(deadline):
        executor.tick()
        if not executor.peers_still_need_us() and (
                executor.unseen_target_peers() == 0 or time.monotonic() - done >= LINGER_GRACE
        ) and not executor.resolver.asked_within(ASKED_GRACE):
            return
        await asyncio.sleep(POLL)


def _previous_datasets(previous: Mapping[str, object]) -> dict[str, DatasetStatus]:
    out = {}
    for name, d in (previous.get("datasets") or {}).items():  # type: ignore[union-attr]
        try:
            out[name] = DatasetStatus(**d)
        except TypeError:
            continue
    return out


def _throttled_status(cfg: NodeConfig, revision: str, started: str,
                      on_progress: Callable[[Mapping[str, DatasetStatus]], None] | None
                      ) -> Callable[[Mapping[str, DatasetStatus]], None]:
    """Publish progress to the caller and, every few seconds, to the status file."""
    last = [0.0]
    phases: list[dict[str, str]] = [{}]

    def publish(statuses: Mapping[str, DatasetStatus]) -> None:
        if on_progress:
            on_progress(statuses)
        now_phases = {n: s.phase for n, s in statuses.items()}
        if time.monotonic() - last[0] >= 2.0 or now_phases != phases[0]:
            last[0], phases[0] = time.monotonic(), now_phases
            report = NodeReport(cfg.node, revision, revision, started, None, "Progressing",
                                dict(statuses))
            write_status(cfg.status_file, cfg.metrics_file, report)

    return publish
