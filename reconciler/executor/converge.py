"""One reconciliation pass: execute a plan against the store through the swarm.

The pass is level-triggered: it observes the store, plans, acts, and observes again before
evicting, so it can be interrupted at any point and the next pass picks up from what is on
disk. Progress is published through `on_progress` so the CLI can draw bars and the status file
can be refreshed while data moves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from ..config import NodeConfig
from ..desired.model import DesiredState
from ..plan import Action, Plan, Target, make_plan
from ..sources import OriginContext, OriginError, open_origin
from ..status import DatasetStatus
from ..store import Store
from .gateway import Gateway
from .swarm import Swarm, TorrentState

log = structlog.get_logger("converge")

POLL = 0.2  # seconds between looks at libtorrent's alerts
STALL_AFTER = 120.0  # seconds without progress while the origin reports errors -> Failed
MAX_VERIFY_ROUNDS = 3


@dataclass
class _Job:
    """A dataset version on its way into the store."""

    target: Target
    action: Action
    torrent: TorrentState | None = None
    stage: str = "fetching"  # fetching -> verifying -> moving -> done | failed
    verify_rounds: int = 0
    last_done: int = -1
    last_change: float = field(default_factory=time.monotonic)


class Converger:
    def __init__(self, cfg: NodeConfig, state: DesiredState, state_root: Path, peer_listen: str,
                 on_progress: Callable[[dict[str, DatasetStatus]], None] | None = None) -> None:
        self.cfg = cfg
        self.state = state
        self.state_root = state_root
        self.store = Store(cfg.state_dir)
        self.peer_listen = peer_listen
        self.on_progress = on_progress or (lambda _s: None)
        self.statuses: dict[str, DatasetStatus] = {}
        self.log = log.bind(node=cfg.node, revision=state.revision)

    def plan(self) -> Plan:
        return make_plan(self.state, self.cfg.node, self.cfg.allowed_roots, self.store.observe())

    async def run(self, deadline: float | None = None) -> dict[str, DatasetStatus]:
        """Converge as far as possible before `deadline` (monotonic); returns dataset statuses."""
        plan = self.plan()
        jobs: list[_Job] = []
        for a in plan.actions:
            t = plan.targets.get(a.dataset)
            if a.kind == "evict":
                continue  # evictions are planned again after the fetches, below
            if a.kind == "blocked":
                self.statuses[a.dataset] = DatasetStatus("Failed", a.version, a.path, error=a.reason)
            elif a.kind == "suspended":
                self.statuses[a.dataset] = self._ready_status(t, "Suspended")  # type: ignore[arg-type]
            elif a.kind == "unchanged":
                self.statuses[a.dataset] = self._ready_status(t)  # type: ignore[arg-type]
            elif a.kind == "activate":
                assert t is not None
                self._activate(t)
            elif a.kind in ("fetch", "update"):
                assert t is not None
                self.statuses[a.dataset] = self._base_status(t, "Pending")
                jobs.append(_Job(t, a))
        self._mark_draining(plan)
        self.on_progress(self.statuses)

        if jobs:
            await self._fetch(jobs, deadline)
        self._evict()
        self.on_progress(self.statuses)
        return self.statuses

    # -- statuses ---------------------------------------------------------------------------

    def _base_status(self, t: Target, phase: str) -> DatasetStatus:
        lock = t.dataset.lock
        assert lock is not None
        return DatasetStatus(phase, t.dataset.version, t.path, lock.info_hash,  # type: ignore[arg-type]
                             bytesTotal=lock.total_bytes)

    def _ready_status(self, t: Target, phase: str = "Ready") -> DatasetStatus:
        s = self._base_status(t, phase)
        if phase == "Ready" or t.info_hash in self.store.observe_dataset(t.name).versions:
            s.bytesDone = s.bytesTotal if phase == "Ready" else 0
        return s

    # -- activation -------------------------------------------------------------------------

    def _activate(self, t: Target) -> None:
        assert t.info_hash is not None
        try:
            self.store.activate(t.name, t.info_hash, Path(t.path))
        except OSError as e:
            self.log.error("activation failed", dataset=t.name, path=t.path, error=str(e))
            self.statuses[t.name] = DatasetStatus("Failed", t.dataset.version, t.path, t.info_hash,
                                                  error=f"cannot activate at {t.path}: {e}")
            return
        self.log.info("activated", dataset=t.name, version=t.dataset.version, path=t.path)
        self.statuses[t.name] = self._ready_status(t)

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch(self, jobs: list[_Job], deadline: float | None) -> None:
        gateway = Gateway()
        await gateway.start()
        swarm = Swarm(self.peer_listen, self.cfg.bandwidth.download, self.cfg.bandwidth.upload)
        async with OriginContext(self.state_root) as origins:
            try:
                for job in jobs:
                    self._start(job, swarm, gateway, origins)
                last_report = 0.0
                while any(j.stage not in ("done", "failed") for j in jobs):
                    if deadline is not None and time.monotonic() >= deadline:
                        self.log.warning("deadline reached", pending=[j.target.name for j in jobs
                                                                      if j.stage not in ("done", "failed")])
                        break
                    await asyncio.sleep(POLL)
                    swarm.pump()
                    for job in jobs:
                        self._step(job, swarm, gateway)
                    if time.monotonic() - last_report >= 1.0:
                        last_report = time.monotonic()
                        self.on_progress(self.statuses)
            finally:
                swarm.close()
                await gateway.stop()

    def _start(self, job: _Job, swarm: Swarm, gateway: Gateway, origins: OriginContext) -> None:
        t = job.target
        d = t.dataset
        lock = d.lock
        assert lock is not None
        log_ = self.log.bind(dataset=t.name, version=d.version, info_hash=lock.info_hash)
        try:
            torrent = (self.state_root / lock.path).read_bytes()
            origin = open_origin(d.source, origins)
        except (OSError, OriginError) as e:
            self._fail(job, f"cannot start: {e}")
            return
        save = self.store.begin(t.name, lock.info_hash, d.version)
        url = gateway.register(t.name, lock.info_hash, lock.name, lock.files, origin)
        job.torrent = swarm.add(lock.info_hash, torrent, save, [url], lock.total_bytes)
        self.statuses[t.name].phase = "Fetching"
        log_.info("fetching", action=job.action.kind, bytes_total=lock.total_bytes,
                  save_path=str(save))

    def _fail(self, job: _Job, error: str) -> None:
        job.stage = "failed"
        s = self.statuses[job.target.name]
        s.phase, s.error = "Failed", error
        self.log.error("dataset failed", dataset=job.target.name, error=error)

    def _step(self, job: _Job, swarm: Swarm, gateway: Gateway) -> None:
        if job.stage in ("done", "failed") or job.torrent is None:
            return
        t = job.target
        ih = t.info_hash
        assert ih is not None
        st = job.torrent
        s = self.statuses[t.name]
        ts = st.handle.status()
        origin = gateway.bytes_served.get(t.name, 0)
        s.bytesDone = min(ts.total_wanted_done, s.bytesTotal)
        s.bytesFromOrigin = origin
        s.bytesFromPeers = max(0, ts.total_payload_download - origin)
        s.downloadRate, s.uploadRate = ts.download_payload_rate, ts.upload_payload_rate
        s.peers = ts.num_peers
        if st.error:
            self._fail(job, st.error)
            return

        now = time.monotonic()
        if s.bytesDone != job.last_done:
            job.last_done, job.last_change = s.bytesDone, now

        if job.stage == "fetching":
            origin_error = gateway.errors.get(t.name) or (
                f"web seed: {st.url_seed_error}" if st.url_seed_error else None)
            s.error = origin_error
            if ts.is_seeding and ts.state not in (ts.checking_files, ts.checking_resume_data):
                job.stage, s.phase = "verifying", "Verifying"
                job.verify_rounds += 1
                swarm.recheck(ih)
            elif origin_error and now - job.last_change > STALL_AFTER:
                self._fail(job, f"no progress for {STALL_AFTER:.0f}s; {origin_error}")
        elif job.stage == "verifying":
            ok = swarm.verified(ih)
            if ok is None:
                return
            if not ok:
                if job.verify_rounds >= MAX_VERIFY_ROUNDS:
                    self._fail(job, f"verification failed {job.verify_rounds} times")
                else:
                    self.log.warning("verification found bad pieces; fetching them again",
                                     dataset=t.name, round=job.verify_rounds)
                    job.stage, s.phase = "fetching", "Fetching"
                return
            s.bytesDone = s.bytesTotal
            job.stage = "moving"
            swarm.move(ih, self.store.version_dir(t.name, ih))
        elif job.stage == "moving":
            if st.moved is None:
                return
            lock = t.dataset.lock
            assert lock is not None
            self.store.mark_complete(t.name, ih, t.dataset.version, lock.name, lock.total_bytes)
            job.stage = "done"
            gateway.unregister(t.name, ih)
            self.log.info("verified", dataset=t.name, version=t.dataset.version,
                          bytes_from_origin=s.bytesFromOrigin, bytes_from_peers=s.bytesFromPeers)
            counters = (s.bytesFromOrigin, s.bytesFromPeers)
            self._activate(t)
            self.statuses[t.name].bytesFromOrigin, self.statuses[t.name].bytesFromPeers = counters

    # -- leaving ----------------------------------------------------------------------------

    def _mark_draining(self, plan: Plan) -> None:
        """Datasets no longer placed here start their grace period; placed ones end it."""
        for a in plan.actions:
            if a.kind == "evict" and a.dataset not in plan.targets:
                self.store.mark_draining(a.dataset)
        for name in plan.targets:
            self.store.clear_draining(name)

    def _evict(self) -> None:
        plan = self.plan()
        for a in plan.actions:
            if a.kind != "evict" or a.info_hash is None:
                continue
            if a.dataset not in plan.targets:
                left = self.cfg.grace_period - (time.time() - self.store.draining_since(a.dataset))
                if left > 0:
                    obs = self.store.observe_dataset(a.dataset)
                    v = obs.versions.get(a.info_hash)
                    self.statuses[a.dataset] = DatasetStatus(
                        "Draining", a.version, obs.link, a.info_hash, bytesTotal=a.bytes_total,
                        bytesDone=a.bytes_total if v and v.complete else 0)
                    continue
            freed = self.store.evict(a.dataset, a.info_hash)
            self.log.info("evicted", dataset=a.dataset, version=a.version, reason=a.reason,
                          bytes_freed=freed)
        for name in list(self.statuses):
            if self.statuses[name].phase == "Draining" and not self.store.observe_dataset(name).versions:
                del self.statuses[name]

