"""The executor shell: one long-lived libtorrent session, web-seed gateway and set of origins
that passes steer by handing it a validated revision.

It decides nothing itself. `apply(state)` observes the store once, makes the plan, and applies
what `core.transfer.decide_pass` returns; `tick()` observes each download once and applies what
`core.transfer.step_job` returns. Every task it starts is kept and cancelled in `close()`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Collection
from typing import Any, Coroutine

import structlog

from reconciler.adapters import atomic, disk, safepath
from reconciler.adapters.config import NodeConfig
from reconciler.adapters.crashpoint import crash_point
from reconciler.adapters.gateway import Gateway
from reconciler.adapters.objects import ObjectStore
from reconciler.adapters.ratelimit import TokenBucket
from reconciler.adapters.sources import Origin, OriginContext, OriginError, open_origin
from reconciler.adapters.store import Store
from reconciler.adapters.swarm import Swarm, TorrentState, split_hostport
from reconciler.core import capacity, cas, offload, scheduling, split, transfer
from reconciler.core.origin_pool import label as origin_label, piece_ranges
from reconciler.core.pinning import with_locks
from reconciler.core.placement import Assignment, place
from reconciler.core.plan import Plan, Target, make_plan
from reconciler.core.transfer import Effect, Job, Seen, Stage
from reconciler.engine.direct_read import DirectRead, read_version
from reconciler.engine.locking import STREAMS
from reconciler.engine.pinning import Pinner
from reconciler.model.desired import DesiredState, publisher
from reconciler.model.ids import DatasetName, InfoHash, NodeName
from reconciler.model.status import DatasetStatus
from reconciler.torrent.hybrid import lock_extra
from reconciler.torrent.verify import Stamp, stamp, verify_content

log = structlog.get_logger("executor")

CLEAN_STOP = "clean-stop"  # in stateDir/resume/: the resume data there is up to date
RESUME_EVERY = 30.0  # seconds between saves of resume data and byte counters while downloading


@dataclass
class _Download:
    """The shell's handles for one download; its rules' state is `job` (pure, replaced)."""

    target: Target
    torrent_bytes: bytes
    url: str | None  # the gateway's web seed; None: no origin (a dataset published by a node)
    torrent: TorrentState
    job: Job
    verify: asyncio.Task[list[str]] | None = None
    watch: frozenset[str] = frozenset()  # target peers whose death re-homes runs to us
    near: frozenset[str] = frozenset()  # its overlay neighbours (core/offload.py `overlay`)
    frozen: frozenset[int] = frozenset()  # pieces of files linked from objects/: never written
    linked: tuple[str, ...] = ()  # those files (paths in the torrent)
    waiting: str | None = None  # paused by the scheduler (core/scheduling.py): why
    base_origin: int = 0  # bytesFromOrigin/-Peers of earlier processes (staging metadata)
    base_peers: int = 0
    # The gateway counts per dataset: what it had counted before this version began belongs
    # to earlier versions (a rollout's v2 must not show v1's origin bytes, nor 0 from peers).
    served_base: int = 0
    relayed_base: int = 0  # the same for what the gateway relayed (Gateway.bytes_relayed)
    # Verification (core/transfer.py, torrent/verify.py): was the torrent added with resume
    # data libtorrent trusts (no hash check), and then which pieces it held once loaded
    # (None: not known yet); the stamps of the files linked from objects/ after the check.
    resumed: bool = False
    trusted: tuple[int, ...] | None = None
    stamps: dict[str, Stamp] = field(default_factory=dict)
    # spec.split (core/split.py): pieces of the files other nodes hold (never fetched), and
    # per piece the nodes holding its file (its origin owner is one of them).
    skipped: frozenset[int] = frozenset()
    holders: tuple[tuple[NodeName, ...], ...] = ()
    piece_bytes: tuple[int, ...] = ()  # per piece, its bytes of a file held here


class Executor:
    def __init__(self, cfg: NodeConfig, peer_listen: str) -> None:
        self.cfg = cfg
        self.node = NodeName(cfg.node)
        self.store = Store(cfg.state_dir)
        self.peer_listen = peer_listen
        self.gateway = Gateway(limit=TokenBucket(cfg.bandwidth.origin),
                               origin_connections=cfg.origin_connections)
        self.swarm: Swarm | None = None
        self.origins: OriginContext | None = None
        self.downloads: dict[InfoHash, _Download] = {}
        self.seeding: dict[InfoHash, DatasetName] = {}  # complete versions in the session
        self.statuses: dict[str, DatasetStatus] = {}
        self.peer_bytes: dict[DatasetName, int] = {}  # bytes from peers, this process
        # The gateway's count for a dataset when its last download ended: bytes after it (the
        # next version's, its torrent build included) belong to the next version.
        self._served_done: dict[str, int] = {}
        self._relayed_done: dict[str, int] = {}
        self.absent_peers: set[str] = set()  # peer IPs of dead peers (not running)
        # Liveness, per peer node (not per dataset): since when every probe failed (None: the
        # last one succeeded), and the one probe task per watched peer.
        self.failing_since: dict[NodeName, float | None] = {}
        self.refused: dict[NodeName, bool] = {}  # its last probe was refused (not a timeout)
        self._probes: dict[NodeName, asyncio.Task[Any]] = {}
        self.seen_peers: set[str] = set()  # peer IPs that have been connected at some point
        self.state: DesiredState | None = None
        self.root: Path | None = None
        self.assignments: dict[str, Assignment] = {}
        self.pinner = Pinner(cfg.node, self.store, self.gateway.read_elsewhere,
                             slots=self.gateway.slots,
                             streams=min(STREAMS, cfg.origin_connections))
        self.unpinned: dict[str, Target] = {}
        self.requeue_after = transfer.PASS_INTERVAL
        self.wants_pass = False  # a download finished or a torrent arrived: pass again now
        self.woken = asyncio.Event()  # a verification ended: look again now (`Runner.pause`)
        self.directs: dict[InfoHash, DirectRead] = {}  # engine/direct_read.py
        self._solo = False  # this pass starts one download and nothing else fetches
        self._file_done = False  # a direct read wrote a file whole: save its byte totals
        self.pinner.wake = self.woken.set  # ... or a torrent was built or arrived
        self._tasks: set[asyncio.Task[Any]] = set()
        self._saved_at = time.monotonic()
        self._saving: asyncio.Task[Any] | None = None
        self.log = log.bind(node=cfg.node)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.gateway.start()
        resume = self.cfg.state_dir / "resume"
        resume.mkdir(parents=True, exist_ok=True)
        removed = disk.clean_orphans(self.cfg.state_dir)
        if removed:
            self.log.info("removed what an earlier process left", paths=removed[:20],
                          count=len(removed))
        self.swarm = Swarm(self.peer_listen, self.cfg.bandwidth.download,
                           self.cfg.bandwidth.upload, resume_dir=resume)
        self.swarm.redact = self.gateway.redact  # web-seed URLs carry the gateway's secret
        clean = resume / CLEAN_STOP
        self.swarm.trust_resume = clean.exists()
        clean.unlink(missing_ok=True)

    async def close(self) -> None:
        await self.pinner.close()
        for dl in self.downloads.values():
            if dl.verify is not None:
                dl.verify.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._save_counters(fetching_only=True)  # a restart counts on from them
        if self.swarm is not None:
            saved = await self.swarm.save_resume_data()
            try:
                atomic.write_bytes(self.cfg.state_dir / "resume" / CLEAN_STOP, b"")
            except OSError as e:
                self.log.error("cannot mark a clean stop", error=str(e))
            self.log.info("session closed", resume_saved=saved)
            self.swarm.close()
            self.swarm = None
        await self.gateway.stop()
        if self.origins is not None:
            await self.origins.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def reconfigure(self, cfg: NodeConfig) -> None:
        """A reloaded node config (SIGHUP): rates and limits apply now, paths on next pass."""
        self.cfg = cfg
        self.store = Store(cfg.state_dir)
        if self.swarm is not None:
            self.swarm.set_rates(cfg.bandwidth.download, cfg.bandwidth.upload)
        self.gateway.limit = TokenBucket(cfg.bandwidth.origin)

    # -- one pass ------------------------------------------------------------------------------

    def apply(self, state: DesiredState, root: Path, source_root: Path | None = None) -> Plan:
        """Make the session and the store match `state`; returns the plan that was executed.

        `root` holds the revision's YAML and locks; `source_root` (default `root`) is what
        relative `file` source paths are relative to: the live state repo, also when `root` is
        the last good snapshot."""
        assert self.swarm is not None
        source_root = source_root or root
        if self.origins is None or self.origins.state_root != source_root \
                or self.origins.publish_roots != self.cfg.publish_roots:
            if self.origins is not None:
                self._spawn(self.origins.close())
            self.origins = OriginContext(source_root, self.cfg.publish_roots,
                                         self.cfg.origin_connections)
        # Unlocked datasets whose torrent is here already (built or fetched) are pinned by it.
        state = with_locks(state, self.pinner.cache.locks(state))
        self.state, self.root = state, root
        self.assignments = place(state)
        # The gateway's address too: libtorrent's ip_filter also applies to web seeds. It is a
        # private 127.128.0.0/9 address, not 127.0.0.1, so local clients are not admitted.
        self.swarm.set_allowed(self._inventory_ips(state) | {self.gateway.host})
        self.wants_pass = False

        observed = self.store.observe()
        plan = make_plan(state, self.node, self.cfg.allowed_roots, observed, self.assignments)
        decision = transfer.decide_pass(
            plan, observed, {**{ih: Stage.FETCHING for ih, r in self.directs.items()
                                if not r.dropped},
                             **{ih: dl.job.stage for ih, dl in self.downloads.items()}},
            self.cfg.grace_period, time.time(), max_active=self.cfg.max_active_downloads,
            paused=frozenset([*(ih for ih, dl in self.downloads.items() if dl.waiting),
                              *(ih for ih, r in self.directs.items() if r.pause)]))
        decision = self._admit(plan, observed, decision)
        self._solo = (sum(isinstance(e, transfer.StartJob) for e in decision.effects) == 1
                      and not self._fetching())
        old, self.statuses = self.statuses, {}
        for name, row in decision.rows.items():
            self.statuses[name] = self._status_of(name, row, old.get(name))
            dl = self.downloads.get(row.info_hash) if row.keep and row.info_hash else None
            if dl is not None and row.target is not None:
                dl.target = row.target  # e.g. a new spec.path: activation uses it
            r = self.directs.get(InfoHash(row.info_hash)) if row.keep and row.info_hash else None
            if r is not None and row.target is not None:
                r.target = row.target
        self.unpinned = {n: r.target for n, r in decision.rows.items()
                         if r.pinning and r.target is not None}
        log_ = self.log.bind(revision=state.revision)
        for eff in decision.effects:
            try:
                self._apply_pass_effect(eff, log_)
            except OSError as e:  # e.g. ENOSPC writing metadata: this dataset fails, not the node
                who: str | None = getattr(eff, "dataset", None) or getattr(
                    getattr(eff, "target", None), "name", None)
                failure = transfer.classify_torrent_error(str(e))
                log_.error("dataset failed", dataset=who, error=str(e),
                           reason=failure.reason.value, effect=type(eff).__name__)
                if who is not None and who in self.statuses:
                    self._update(who, phase="Failed", error=f"{type(eff).__name__}: {e}")
        self.pinner.ensure(state, self.assignments, self.origins)
        self.pinner.cache.prune(state)
        self._sync_torrents(dict(decision.wanted))
        self.requeue_after = decision.requeue_after
        return plan

    def _admit(self, plan: Plan, observed: dict[str, Any], decision: transfer.PassDecision
               ) -> transfer.PassDecision:
        """cache.limit and cache.minFree (core/capacity.py): evict for, or refuse, the
        downloads this pass starts."""
        starts = [e for e in decision.effects if isinstance(e, transfer.StartJob)]
        if not starts:
            return decision
        use = disk.usage(self.cfg.state_dir)
        free, size = disk.statvfs(self.cfg.state_dir)
        # Downloads already under way will still write what they lack: count it as taken.
        ahead = sum(max(0, t.bytes_total - use.present.get((t.name, ih), 0))
                    for ih, t in [*((ih, dl.target) for ih, dl in self.downloads.items()
                                    if dl.job.stage is Stage.FETCHING),
                                  *((ih, r.target) for ih, r in self.directs.items())])
        room = capacity.Room(use.used + ahead, free - ahead, self.cfg.cache_limit,
                             capacity.min_free_bytes(self.cfg.min_free, size))
        need = {}
        for e in starts:
            t = e.target
            if t.info_hash and t.dataset.lock:
                have = use.present.get((t.name, t.info_hash), 0)
                need[InfoHash(t.info_hash)] = max(0, t.bytes_total - have)
        pool = capacity.candidates(plan, observed, use.sizes, use.mtimes,
                                   frozenset([*self.downloads, *self.directs]), time.time(),
                                   self.cfg.grace_period)
        return capacity.admit(decision, room, pool, need)

    def _status_of(self, name: DatasetName, row: transfer.Row, old: DatasetStatus | None
                   ) -> DatasetStatus:
        if row.keep and old is not None and old.info_hash == row.info_hash:
            return old
        if row.pinning and row.target is not None:
            return self._unpinned_status(row.target)
        counted = row.target is not None
        # Totals of the version, earlier processes included (its metadata), when it has them.
        kept = self.store.counters(name, row.info_hash) if counted and row.info_hash else (0, 0)
        return DatasetStatus(
            row.phase, row.version, row.path, row.info_hash,
            bytes_total=row.bytes_total, bytes_done=row.bytes_total if row.complete else 0,
            bytes_from_origin=kept[0], bytes_from_peers=kept[1],
            error=row.error)

    def _update(self, name: str, **changes: Any) -> DatasetStatus:
        """Statuses are immutable: a change is a new value in `statuses`."""
        s = replace(self.statuses[name], **changes)
        self.statuses[name] = s
        return s

    def _apply_pass_effect(self, eff: Effect, log_: structlog.BoundLogger) -> None:
        if isinstance(eff, transfer.StartJob):
            self._start_download(eff.target, log_)
        elif isinstance(eff, transfer.DropJob):
            self._drop_torrent(eff.info_hash)
        elif isinstance(eff, transfer.Activate):
            self._activate(eff.target)
        elif isinstance(eff, transfer.MarkDraining):
            self.store.mark_draining(eff.dataset)
        elif isinstance(eff, transfer.ClearDraining):
            self.store.clear_draining(eff.dataset)
        elif isinstance(eff, scheduling.Pause):
            self._pause(eff, log_)
        elif isinstance(eff, scheduling.Resume):
            self._resume(eff, log_)
        elif isinstance(eff, transfer.Note):
            getattr(log_, eff.level)(eff.event, **dict(eff.fields))
        elif isinstance(eff, transfer.Evict):
            freed = self.store.evict(eff.dataset, eff.info_hash)
            log_.info("evicted", dataset=eff.dataset, version=eff.version, reason=eff.reason,
                      bytes_freed=freed)
        else:  # pragma: no cover - decide_pass returns only the kinds above
            raise TypeError(f"not a pass effect: {eff!r}")

    def _pause(self, eff: scheduling.Pause, log_: structlog.BoundLogger) -> None:
        r = self.directs.get(eff.info_hash)
        if r is not None:  # libtorrent goes on, paused, from what the read wrote
            r.pause = eff.reason
            r.halt()
            if r.target.name in self.statuses:
                self._update(r.target.name, phase="Pending", error=eff.reason, download_rate=0)
            log_.info("paused", dataset=r.target.name, info_hash=eff.info_hash,
                      reason=eff.reason, direct=True)
            return
        dl = self.downloads.get(eff.info_hash)
        if dl is None or self.swarm is None:
            return
        self.swarm.pause(eff.info_hash)
        dl.waiting = eff.reason
        if dl.target.name in self.statuses:
            self._update(dl.target.name, phase="Pending", error=eff.reason, download_rate=0)
        log_.info("paused", dataset=dl.target.name, info_hash=eff.info_hash, reason=eff.reason)

    def _resume(self, eff: scheduling.Resume, log_: structlog.BoundLogger) -> None:
        r = self.directs.get(eff.info_hash)
        if r is not None:  # still stopping: libtorrent's download starts unpaused
            r.pause = None
            return
        dl = self.downloads.get(eff.info_hash)
        if dl is None or self.swarm is None:
            return
        self.swarm.resume(eff.info_hash)
        dl.waiting = None
        # Waiting is not stalling: the stall and stuck clocks start again now.
        now, got = time.monotonic(), int(dl.torrent.handle.status().total_payload_download)
        dl.job = replace(dl.job, last_change=now, rx_mark=got, rx_mark_at=now)
        if dl.target.name in self.statuses:
            self._update(dl.target.name, phase="Fetching", error=None)
        log_.info("resumed", dataset=dl.target.name, info_hash=eff.info_hash)

    def _inventory_ips(self, state: DesiredState) -> set[str]:
        out = set()
        for n in state.nodes.values():
            try:
                out.add(split_hostport(n.peer)[0])
            except ValueError:
                continue
        return out

    def _unpinned_status(self, t: Target) -> DatasetStatus:
        """An unlocked dataset without its torrent yet: Fetching while this node reads the
        source to build it, Pending while it waits for the node that does, Failed with the
        build's error until its retry."""
        s = DatasetStatus("Pending", t.dataset.version, t.path,
                          bytes_from_origin=self.gateway.bytes_served.get(t.name, 0))
        w = self.pinner.work.get(t.name)
        if w is not None and w.state == "building":
            return replace(s, phase="Fetching", bytes_done=w.bytes_done, bytes_total=w.bytes_total)
        if w is not None and w.state == "failed":
            return replace(s, phase="Failed", error=w.error)
        return s

    def _activate(self, t: Target) -> None:
        assert t.info_hash is not None
        prev = self.store.observe_dataset(t.name).active
        if prev is not None and prev != t.info_hash:
            disk.mark_inactive(self.store.version_dir(t.name, prev))
        try:
            safepath.check_link(Path(t.path), self.cfg.allowed_roots, self.store.root)
            self.store.activate(t.name, t.info_hash, Path(t.path))
        except OSError as e:
            failure = transfer.Failure(transfer.FailureReason.ACTIVATION_REFUSED,
                                       f"cannot activate at {t.path}: {e}")
            self.log.error("activation failed", dataset=t.name, path=t.path, error=str(e),
                           reason=failure.reason.value)
            self.statuses[t.name] = DatasetStatus(
                "Failed", t.dataset.version, t.path, t.info_hash,
                bytes_total=t.bytes_total, error=failure.message)
            return
        self.log.info("activated", dataset=t.name, version=t.dataset.version, path=t.path,
                      info_hash=t.info_hash)
        s = self.statuses.get(t.name)
        if s is not None and s.info_hash == t.info_hash:
            self._update(t.name, phase="Ready", bytes_done=s.bytes_total, error=None)

    def _start_download(self, t: Target, log_: structlog.BoundLogger) -> None:
        assert self.swarm is not None and self.origins is not None and self.root is not None
        d = t.dataset
        lock = d.lock
        assert lock is not None
        try:
            torrent = (self.root / lock.path).read_bytes()
        except OSError as e:
            status = self._update(t.name, phase="Failed", error=f"cannot start: {e}")
            log_.error("dataset failed", dataset=t.name, error=status.error)
            return
        # The source (pinned to the revision the lock recorded), then the mirrors: the gateway
        # serves from all of them. One that cannot be opened is left out, unless all are.
        pinned = lock_extra(torrent).get("syncbit", {}).get("source")
        origins, labels, problems = [], [], []
        # Published from a node: no origin, no web seed; the bytes come from the swarm only.
        sources = () if publisher(d) is not None else (d.source, *d.mirrors)
        for i, src in enumerate(sources):
            try:
                o = open_origin(src, self.origins, pinned=(
                    pinned if i == 0 and isinstance(pinned, dict) else None))
            except OriginError as e:
                name = "source" if i == 0 else f"mirrors[{i - 1}]"
                problems.append(f"{name}: {e}")
                log_.warning("origin not usable", dataset=t.name, origin=name, error=str(e))
                continue
            origins.append(o)
            labels.append(origin_label(o.kind, o.describe(), i))
        if not origins and sources:
            failure = transfer.Failure(
                transfer.FailureReason.ALL_ORIGINS_FAILED,
                "cannot start: " + (problems[0] if len(problems) == 1 else
                                    "all origins failed: " + "; ".join(problems)))
            self._update(t.name, phase="Failed", error=failure.message)
            log_.error("dataset failed", dataset=t.name, error=failure.message,
                       reason=failure.reason.value)
            return
        ih = InfoHash(lock.info_hash)
        # A split version whose share changed (the target nodes did) is fetched in staging,
        # the files it keeps linked from objects/, so that the files it gains appear in the
        # active directory only whole and verified, when the move puts them there.
        resplit = t.files is not None and self.store.version_dir(t.name, ih).exists()
        save = self.store.begin(t.name, ih, d.version, staging=resplit)
        linked = self._link_objects(ih, save / lock.name, torrent, log_)
        r = self.directs.get(ih)
        if r is not None and r.task is not None and not r.task.done():
            r.dropped = False  # wanted again while it stops: libtorrent goes on after it
            self._update(t.name, phase="Fetching", bytes_done=r.done)
            return  # still reading the source, or stopping
        read_here, pause = False, None
        if r is not None:  # it ended: seeded as read, or libtorrent checks what it wrote
            del self.directs[ih]
            read_here, pause = r.matched(), r.pause
            error = None if r.task is None or r.task.cancelled() else r.task.exception()
            if error is not None:  # not an origin's or the disk's: say what it was
                log_.error("direct read failed; libtorrent checks what it wrote and fetches "
                           "the rest", dataset=t.name, version=d.version, error=repr(error))
        elif transfer.read_directly(
                alone=self._alone(t), split=t.files is not None, from_origin=bool(origins),
                fresh=not (resumed_file(self.swarm, ih) or linked or resplit
                           or (save / lock.name).exists()),
                limited=self.cfg.bandwidth.download > 0, solo=self._solo):
            self._read_directly(t, ih, save / lock.name, origins[0], log_)
            return
        url = self.gateway.register(t.name, ih, lock.name, lock.files, origins, labels,
                                    version=d.version) if origins else None
        # Resume data the swarm will trust (no hash check of what it lists); a superset is
        # fine (Swarm may still refuse it): it only means more is read back at the end.
        resumed = self.swarm.trust_resume and resumed_file(self.swarm, ih)
        if resplit and ih in self.swarm.torrents:
            self._drop_torrent(ih)  # seeding the files of an earlier split: fetch the new ones
        # Built here from the source just now (engine/pinning.py): every byte was hashed as it
        # was written and the torrent is made of those hashes, so libtorrent's check, a second
        # full read, is skipped (seed mode) and nothing is read back at the end.
        built = (read_here or self.pinner.take_built(ih)) and t.files is None and not linked
        resumed = resumed and not built
        st = self.swarm.add(ih, torrent, save, lock.total_bytes, seed=built)
        frozen = cas.frozen_pieces(lock.files, st.piece_size, linked)
        skipped, holders = self._split_pieces(t, st.piece_size)
        frozen |= skipped
        if frozen:  # before libtorrent's check ends: it must never fetch (write) these pieces
            self.swarm.prioritize(ih, cas.mask((4,) * st.num_pieces, frozen))
        dl = _Download(t, torrent, url, st, Job.new(ih, DatasetName(t.name), time.monotonic()),
                       frozen=frozen, linked=tuple(linked), resumed=resumed,
                       skipped=skipped, holders=holders, piece_bytes=split.piece_bytes(
                           lock.files, st.piece_size, t.files) if t.files is not None else ())
        origin, peers = self.store.counters(t.name, ih)
        dl.served_base = self._served_done.get(t.name, 0)
        dl.relayed_base = self._relayed_done.get(t.name, 0)
        # Saved totals may already hold what this process served this version (a restarted
        # download): count those bytes once.
        dl.base_origin = max(0, origin - self._served(t.name, dl.served_base))
        dl.base_peers = peers
        a = self.assignments.get(t.name)
        dl.watch = offload.watch_list(self.node, ih, st.num_pieces, st.piece_size,
                                      a.nodes if a else ())
        dl.near = offload.neighbours(ih, self.node, a.nodes if a else ())
        self.downloads[ih] = dl
        self._probe()
        self._update(t.name, phase="Fetching")
        if pause is not None:  # paused while it read directly: it waits for its slot
            self._pause(scheduling.Pause(ih, pause), log_)
        log_.info("fetching", dataset=t.name, version=d.version, info_hash=ih,
                  bytes_total=t.bytes_total, save_path=str(save),
                  **({} if t.files is None else {"split_files": len(t.files),
                                                 "files": len(lock.files)}),
                  **({"built_here": True} if built else {}))

    def _alone(self, t: Target) -> bool:
        a = self.assignments.get(t.name)
        return a is not None and list(a.nodes) == [self.node]

    def _fetching(self) -> int:
        """Downloads fetching now: libtorrent's not paused, and direct reads."""
        return (sum(dl.job.stage is Stage.FETCHING and dl.waiting is None
                    for dl in self.downloads.values())
                + sum(r.running for r in self.directs.values()))

    def _read_directly(self, t: Target, ih: InfoHash, dest: Path, origin: Origin,
                       log_: structlog.BoundLogger) -> None:
        """Read the version from `origin` into `dest` (staging); the tick after the read ends
        adds the torrent (`_start_download`), seeded or checked (engine/direct_read.py)."""
        assert self.origins is not None
        r = DirectRead(t, ih, base_origin=self.store.counters(t.name, ih)[0],
                       served_base=self._served_done.get(t.name, 0))

        async def arrived(n: int) -> None:
            r.done += n
            await self.gateway.read_elsewhere(t.name, n)

        def file_done(_: str) -> None:
            self._file_done = True  # its byte totals are saved at the next tick

        r.task = self._spawn(read_version(
            r, origin, self.origins, dest, throttle=arrived,
            streams=self.cfg.origin_connections, slots=self.gateway.slots,
            on_file=file_done, log_=log_))
        r.task.add_done_callback(lambda _: self.woken.set())  # the next tick adds the torrent
        self.directs[ih] = r
        self._update(t.name, phase="Fetching", bytes_done=0)
        log_.info("fetching", dataset=t.name, version=t.dataset.version, info_hash=ih,
                  bytes_total=t.bytes_total, save_path=str(dest.parent), direct=True)

    def _split_pieces(self, t: Target, piece_size: int
                      ) -> tuple[frozenset[int], tuple[tuple[NodeName, ...], ...]]:
        """spec.split: the pieces this node never fetches (file priority 0 too), and per
        piece the nodes holding its file; nothing for a dataset that is not split."""
        lock = t.dataset.lock
        if t.files is None or lock is None or self.swarm is None:
            return frozenset(), ()
        a = self.assignments.get(t.name)
        per_piece = split.piece_holders(t.name, lock.files, piece_size,
                                        list(a.nodes if a else ()), t.dataset.split or 1)
        return (self._skip_others(InfoHash(lock.info_hash), t.files),
                tuple(tuple(NodeName(n) for n in who) for who in per_piece))

    def _skip_others(self, ih: InfoHash, held: Collection[str]) -> frozenset[int]:
        """spec.split: the files other nodes hold at file priority 0; returns their pieces."""
        assert self.swarm is not None
        self.swarm.skip_files(ih, held)
        return split.skipped_pieces(self.swarm.lock_files(ih),
                                    self.swarm.torrents[ih].piece_size, held)

    def _link_objects(self, ih: InfoHash, top: Path, torrent: bytes,
                      log_: structlog.BoundLogger) -> list[str]:
        """Hard-link the files the object store holds already into the save path, so that
        libtorrent's check finds them instead of fetching them (adapters/objects.py)."""
        try:
            linked, new = ObjectStore(self.cfg.state_dir).place(top, cas.file_roots(torrent))
        except OSError as e:
            log_.warning("cannot link stored files", info_hash=ih, error=str(e))
            return []
        if new and self.swarm is not None and self.swarm.resume_dir is not None:
            # resume data would skip the check that finds the new links
            (self.swarm.resume_dir / f"{ih}.resume").unlink(missing_ok=True)
        if linked:
            log_.info("linked stored files", info_hash=ih, files=len(linked), new=len(new))
        return linked

    def _probe(self) -> None:
        """One liveness probe task per watched peer node, whatever the number of datasets: it
        connects to the peer's peer port every PROBE_EVERY seconds (every half second while it
        fails) and notes since when every attempt failed and whether the last was refused
        (transfer.peer_dead decides). The peer port, not the node API: `--once` serves the API
        only while it builds a torrent. A probe ends when no download in flight watches its
        peer any more."""
        assert self.state is not None
        state = self.state
        watching = self._watching()
        for name in watching:
            task = self._probes.get(name)
            if task is not None and not task.done():
                continue
            node = state.nodes.get(name)
            if node is None:
                continue
            try:
                host, port = split_hostport(node.peer)
            except ValueError:
                continue

            async def probe(name: NodeName, host: str, port: int) -> None:
                while name in self._watching():
                    try:
                        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                    except (OSError, asyncio.TimeoutError) as e:
                        now = time.monotonic()
                        if self.failing_since.get(name) is None:
                            self.failing_since[name] = now
                        self.refused[name] = isinstance(e, ConnectionRefusedError)
                        if transfer.peer_dead(self.failing_since[name], now, self.refused[name]) \
                                and host not in self.absent_peers:
                            self.absent_peers.add(host)
                            self.log.warning("peer dead", peer=name,
                                             refusing_for=round(now - (self.failing_since[name]
                                                                      or now), 1))
                        await asyncio.sleep(0.5)
                        continue
                    w.close()
                    if host in self.absent_peers:
                        self.log.info("peer alive again", peer=name)
                    self.failing_since[name] = None
                    self.absent_peers.discard(host)
                    await asyncio.sleep(transfer.PROBE_EVERY)
                self._probes.pop(name, None)
                self.failing_since.pop(name, None)  # unknown again: a new probe decides
                self.refused.pop(name, None)

            self._probes[name] = self._spawn(probe(NodeName(name), host, port))

    def _watching(self) -> set[NodeName]:
        return {NodeName(n) for dl in self.downloads.values()
                if dl.job.stage is Stage.FETCHING for n in dl.watch}

    def _dead(self) -> frozenset[NodeName]:
        now = time.monotonic()
        return frozenset(n for n, since in self.failing_since.items()
                         if transfer.peer_dead(since, now, self.refused.get(n, False)))

    def _sync_torrents(self, wanted: dict[InfoHash, DatasetName]) -> None:
        """Seed complete versions that must be held; drop torrents nothing wants any more."""
        assert self.swarm is not None and self.state is not None
        for ih in list(self.swarm.torrents):
            if ih not in wanted:
                self._drop_torrent(InfoHash(ih))
        for ih, r in self.directs.items():
            if ih not in wanted:
                r.dropped = True
                r.halt()
        observed = self.store.observe()  # again: this pass's effects changed the store
        for ih, dataset in wanted.items():
            if ih not in self.swarm.torrents:
                o = observed.get(dataset)
                meta_ok = o.versions.get(ih) if o else None
                if meta_ok is None or not meta_ok.complete:
                    continue
                torrent = self._torrent_for(dataset, ih)
                if torrent is None:
                    continue
                held = meta_ok.files
                self.swarm.add(ih, torrent, self.store.version_dir(dataset, ih),
                               meta_ok.bytes_total, seed=held is None)
                if held is not None:  # a split version: libtorrent checks only its files
                    self._seed_split(InfoHash(ih), held)
                self.seeding[ih] = dataset
            # A bounded, symmetric, connected overlay (core/offload.py `neighbours`), not
            # every target: at fleet scale that would be 999 connections per dataset.
            a = self.assignments.get(dataset)
            near = offload.neighbours(ih, self.node, a.nodes if a else ())
            peers = [self.state.nodes[n].peer for n in sorted(near) if n in self.state.nodes]
            self.swarm.set_peers(ih, peers)

    def _seed_split(self, ih: InfoHash, held: frozenset[str]) -> None:
        """Seed a split version: not in seed mode (it would offer every piece, and a peer's
        request for another node's file would fail the torrent), the others' files at
        priority 0, so libtorrent's check finds ours and it serves only those."""
        assert self.swarm is not None
        skip = self._skip_others(ih, held)
        self.swarm.prioritize(ih, cas.mask((4,) * self.swarm.torrents[ih].num_pieces, skip))

    def _torrent_for(self, dataset: str, ih: str) -> bytes | None:
        """The .torrent of a version in the store: the store's own copy (kept at completion),
        else the state repo's lock if it still pins this version."""
        copy = self.store.root / dataset / f"{ih}.torrent"
        if copy.exists():
            return copy.read_bytes()
        d = self.state.datasets.get(dataset) if self.state else None
        if d is not None and d.lock is not None and d.lock.info_hash == ih and self.root:
            return (self.root / d.lock.path).read_bytes()
        return None

    def _note_done(self, dataset: str) -> None:
        """A version of `dataset` ended: what the gateway counts from now on is the next's."""
        self._served_done[dataset] = self.gateway.bytes_served.get(dataset, 0)
        self._relayed_done[dataset] = self.gateway.bytes_relayed.get(dataset, 0)

    def _served(self, dataset: str, base: int) -> int:
        """Origin bytes read for `dataset` in this process since the gateway's count was
        `base` (a version's bytes: its download's or direct read's `served_base`)."""
        return max(0, self.gateway.bytes_served.get(dataset, 0) - base)

    def _drop_torrent(self, ih: InfoHash) -> None:
        r = self.directs.get(ih)
        if r is not None:  # kept until its task ends: what it received is written first
            r.dropped = True
            r.halt()
        dl = self.downloads.pop(ih, None)
        if dl is not None:
            self._note_done(dl.target.name)
            if dl.verify is not None:
                dl.verify.cancel()
            self.gateway.unregister(dl.target.name, ih)
        self.seeding.pop(ih, None)
        if self.swarm is not None and ih in self.swarm.torrents:
            self.swarm.remove(ih)

    # -- advancing -----------------------------------------------------------------------------

    def busy(self) -> bool:
        """Is a download, verification or move, or the making of a torrent, still under way?"""
        return (any(dl.job.stage not in (Stage.DONE, Stage.FAILED)
                    for dl in self.downloads.values())
                or bool(self.directs) or self.pinner.pending() or self.pinner.changed)

    def next_look(self) -> float:
        """Seconds until the next tick is due (core.transfer.next_look)."""
        looks = []
        now = time.monotonic()
        for ih, dl in self.downloads.items():
            s = self.statuses.get(dl.target.name)
            if s is not None and s.info_hash == ih:
                looks.append((dl.job.stage, max(0, s.bytes_total - s.bytes_done),
                              float(s.download_rate), now - dl.job.last_change))
        return transfer.next_look(looks)

    def tick(self) -> None:
        """Observe every download once, apply the rules' effects. Sets `wants_pass` when a
        version completed (what it replaces may now be evicted) or a torrent arrived."""
        assert self.swarm is not None
        self.swarm.pump()
        self.swarm.connect_peers()
        now = time.monotonic()
        self._check_room()
        self._save_progress_if_due(now)
        self._tick_directs()
        for ih, dl in list(self.downloads.items()):
            name = dl.target.name
            s = self.statuses.get(name)
            if s is None or s.info_hash != ih:
                continue
            if dl.linked and dl.torrent.checked and self._broken_links(dl):
                continue
            if dl.waiting is not None:  # paused by the scheduler: nothing moves
                self._update(name, phase="Pending", error=dl.waiting, download_rate=0)
                continue
            seen = self._observe(dl, s, now)
            was = dl.job.stage
            dl.job, effects = transfer.step_job(dl.job, seen, now)
            if was is Stage.FETCHING and dl.job.stage in (Stage.FAILED, Stage.VERIFYING) \
                    and self._queued():
                self.wants_pass = True  # its slot is free: a waiting download starts now
            changes: dict[str, Any] = {}
            if dl.job.stage in (Stage.FETCHING, Stage.FAILED):
                changes["error"] = dl.job.error
            if dl.job.stage is not Stage.DONE:
                changes["phase"] = dl.job.stage.phase
            if dl.job.stage is Stage.MOVING:
                changes["bytes_done"] = self.statuses[name].bytes_total
            self._update(name, **changes)
            for eff in effects:
                self._apply_job_effect(dl, eff)
            if dl.job.stage is Stage.DONE:
                del self.downloads[ih]
                self.seeding[ih] = dl.target.name  # type: ignore[assignment]
                self.gateway.unregister(dl.target.name, ih)
                self.wants_pass = True
        self._share_bandwidth()
        if self.pinner.changed:
            self.pinner.changed = False
            self.wants_pass = True  # an unlocked dataset's torrent arrived: start its download
        for name, t in self.unpinned.items():
            if name in self.statuses and self.statuses[name].info_hash is None:
                self.statuses[name] = self._unpinned_status(t)
        for ih, dataset in self.seeding.items():
            s = self.statuses.get(dataset)
            if s is None or s.info_hash != ih or ih not in self.swarm.torrents:
                continue
            ts = self.swarm.torrents[ih].handle.status()
            self._update(dataset, upload_rate=ts.upload_payload_rate, download_rate=0,
                         peers=ts.num_peers)

    def _tick_directs(self) -> None:
        """Direct reads: add the torrent of each one that ended (not of one no longer wanted),
        hand over to libtorrent those that must stop (core.transfer.hand_over_direct), and
        show the others' progress."""
        for ih, r in list(self.directs.items()):
            name = r.target.name
            if r.task is None or r.task.done():
                if r.dropped:
                    del self.directs[ih]
                    continue
                try:
                    self._start_download(r.target, self.log)
                except OSError as e:  # e.g. ENOSPC writing metadata: this dataset fails
                    self.directs.pop(ih, None)
                    self.log.error("dataset failed", dataset=name, error=str(e))
                    self._update(name, phase="Failed", error=f"StartJob: {e}")
                continue
            if r.running and transfer.hand_over_direct(self._fetching() - 1, r.pause is not None):
                r.halt()
                self.log.info("direct read handed over to libtorrent", dataset=name,
                              info_hash=ih, bytes_done=r.done)
            s = self.statuses.get(name)
            if s is not None and s.info_hash == ih and s.phase == "Fetching":
                self._update(name, bytes_done=r.done,
                             bytes_from_origin=r.base_origin + self._served(name, r.served_base))

    def _broken_links(self, dl: _Download) -> bool:
        """Once libtorrent's check is done: a linked file it did not find whole is a bad
        object. Its pieces are frozen (never written), so the download could not finish: drop
        the torrent (libtorrent closes the file), remove the link and the object, and start
        again at the next pass, which fetches that file."""
        assert self.swarm is not None and dl.target.dataset.lock is not None
        lock = dl.target.dataset.lock
        have = tuple(bool(h) for h in dl.torrent.handle.status().pieces)
        broken = cas.broken_links(lock.files, dl.torrent.piece_size, dl.linked, have)
        linked, dl.linked = dl.linked, ()
        top = Path(dl.torrent.handle.status().save_path) / lock.name
        if not broken:
            # Found whole, and never written again: verification reads one back only if
            # its stamp changes before the version completes (torrent/verify.py).
            for path in linked:
                try:
                    dl.stamps[path] = stamp(top / path)
                except OSError:
                    dl.stamps[path] = (0, -1, 0)  # gone: read back, and so refused
            return False
        ih, name = dl.torrent.info_hash, dl.target.name
        self._drop_torrent(InfoHash(ih))
        roots = {f.path: f.root for f in cas.file_roots(dl.torrent_bytes)}
        objects = ObjectStore(self.cfg.state_dir)
        for path in broken:
            (top / path).unlink(missing_ok=True)
            if roots.get(path):
                objects.path(roots[path]).unlink(missing_ok=True)
        self.log.error("stored file does not match its pieces root; unlinked, fetching it",
                       dataset=name, info_hash=ih, files=broken)
        self.wants_pass = True
        return True

    def _queued(self) -> bool:
        """Is a download waiting for a slot (not started, or paused)?"""
        return any(dl.waiting for dl in self.downloads.values()) or any(
            st.phase == "Pending" and (st.error or "").startswith("queued:")
            for st in self.statuses.values())

    def _share_bandwidth(self) -> None:
        """Per-torrent download caps by priority weight (core/scheduling.py `rate_caps`)."""
        assert self.swarm is not None
        running = [scheduling.Running(ih, dl.target.dataset.priority,
                                      self.statuses[dl.target.name].download_rate)
                   for ih, dl in self.downloads.items()
                   if dl.waiting is None and dl.job.stage is Stage.FETCHING
                   and dl.target.name in self.statuses and ih in self.swarm.torrents]
        for ih, cap in scheduling.rate_caps(running, self.cfg.bandwidth.download).items():
            self.swarm.set_download_limit(ih, cap)

    def _check_room(self) -> None:
        """cache.minFree while downloads run: under it (someone else filled the disk), they
        stop as Failed (NoRoom); the next pass starts them again once there is room."""
        fetching = [dl for dl in self.downloads.values() if dl.job.stage is Stage.FETCHING]
        if not fetching:
            return
        try:
            free, size = disk.statvfs(self.cfg.state_dir)
        except OSError:
            return
        short = capacity.running_short(free, capacity.min_free_bytes(self.cfg.min_free, size))
        if short is None:
            return
        for dl in fetching:
            dl.job, effects = transfer.fail(dl.job, short)
            self._update(dl.target.name, phase="Failed", error=short.message, download_rate=0)
            try:
                dl.torrent.handle.pause()
            except RuntimeError:
                pass
            for eff in effects:
                self._apply_job_effect(dl, eff)

    def _save_progress_if_due(self, now: float) -> None:
        """Resume data and byte counters every RESUME_EVERY seconds and when a file completes,
        so a kill -9 costs at most that much re-download (and no counted bytes)."""
        assert self.swarm is not None
        due = (self.swarm.resume_due or self._file_done
               or now - self._saved_at >= RESUME_EVERY)
        if not due or (self._saving is not None and not self._saving.done()):
            return
        if not any(dl.job.stage is Stage.FETCHING for dl in self.downloads.values()) \
                and not self.directs:
            self._saved_at = now
            return
        self.swarm.resume_due = self._file_done = False
        self._saved_at = now
        self._saving = self._spawn(self.save_progress())

    async def save_progress(self) -> None:
        """Write resume data (atomically) and each download's byte totals into its staging
        metadata."""
        assert self.swarm is not None
        try:
            await self.swarm.save_resume_data(timeout=5.0)
        except OSError as e:
            self.log.error("cannot save resume data", error=str(e))
        self._save_counters()

    def _save_counters(self, fetching_only: bool = False) -> None:
        """Each download's and direct read's byte totals, into its staging metadata."""
        for ih, t in [*((ih, dl.target) for ih, dl in self.downloads.items()
                        if not fetching_only or dl.job.stage is Stage.FETCHING),
                      *((ih, r.target) for ih, r in self.directs.items())]:
            s = self.statuses.get(t.name)
            if s is None or s.info_hash != ih:
                continue
            try:
                self.store.save_counters(t.name, ih, s.bytes_from_origin, s.bytes_from_peers)
            except OSError as e:
                self.log.error("cannot save byte counters", dataset=t.name, error=str(e))

    def _observe(self, dl: _Download, s: DatasetStatus, now: float) -> Seen:
        """One look at libtorrent, the gateway and the verifier; also refreshes the counters
        of the status (the rules decide phase and error)."""
        assert self.swarm is not None and self.state is not None
        st, t = dl.torrent, dl.target
        ts = st.handle.status()
        served = self._served(dl.target.name, dl.served_base)
        origin = dl.base_origin + served
        done = s.bytes_done
        if dl.job.stage is Stage.FETCHING:
            done = min(_have_bytes(ts, st) if not dl.skipped
                       else _split_done(ts, dl.piece_bytes), s.bytes_total)
        elif dl.job.stage is Stage.MOVING:
            done = s.bytes_total
        # libtorrent's payload minus what the web seed gave it (not what the origin sent: the
        # gateway also relays bytes it kept, and reads ahead bytes it never relays).
        relayed = max(0, self.gateway.bytes_relayed.get(t.name, 0) - dl.relayed_base)
        self.peer_bytes[DatasetName(t.name)] = dl.base_peers + max(
            0, ts.total_payload_download - relayed)
        s = self._update(t.name, bytes_done=done, bytes_from_origin=origin,
                         bytes_from_peers=self.peer_bytes[DatasetName(t.name)],
                         download_rate=ts.download_payload_rate,
                         upload_rate=ts.upload_payload_rate, peers=ts.num_peers)
        a = self.assignments.get(t.name)
        targets = tuple(NodeName(n) for n in (a.nodes if a else ()) if n in self.state.nodes)
        # The overlay neighbours only: per tick, the cost must not grow with the targets.
        peer_ip = {NodeName(n): split_hostport(self.state.nodes[n].peer)[0]
                   for n in dl.near if n in self.state.nodes}
        view = self.swarm.peer_view(st.info_hash) if st.checked else None
        if view is not None:
            self.seen_peers.update(view.connected)
        failed, st.failed_pieces = tuple(st.failed_pieces), []
        verify_result: tuple[str, ...] | None = None
        if dl.verify is not None and dl.verify.done():
            if dl.verify.cancelled():
                verify_result = ("(cancelled)",)
            elif dl.verify.exception() is not None:
                verify_result = (f"(cannot read the files back: {dl.verify.exception()})",)
            else:
                verify_result = tuple(dl.verify.result())
            dl.verify = None
        if dl.trusted is None and st.checked:
            dl.trusted = tuple(i for i, h in enumerate(ts.pieces) if h) if dl.resumed else ()
        trusted = dl.trusted if dl.trusted is not None else (
            tuple(range(st.num_pieces)) if dl.resumed else ())
        lock = t.dataset.lock
        have = tuple(bool(h) for h in ts.pieces)
        if dl.skipped:  # spec.split: the others' files count as held (never wanted here)
            have = split.as_wanted(have, dl.skipped)
        whole = bool(ts.is_seeding) or bool(dl.skipped and st.checked and all(have))
        stranded = self.swarm.stranded(st.info_hash) if (
            not whole and st.checked and transfer.look_for_stranded(dl.job, now)) else ()
        return Seen(
            me=self.node, targets=targets, peer_ip=peer_ip,
            absent=self._dead() & frozenset(targets),
            bytes_done=s.bytes_done, bytes_total=s.bytes_total,
            complete=whole and ts.state not in (ts.checking_files, ts.checking_resume_data),
            checked=st.checked,
            have=have if view is not None else (),
            available=tuple(view.available) if view is not None else (),
            connected=frozenset(view.connected) if view is not None else frozenset(),
            piece_size=st.piece_size, files=lock.files if lock else (),
            failed_pieces=failed, torrent_error=st.error,
            origin_error=self.gateway.errors.get(t.name) or (
                f"web seed: {st.url_seed_error}" if st.url_seed_error and st.url else None),
            verify_result=verify_result, trusted_pieces=trusted, stranded=stranded,
            moved=st.moved is True, web_seed_on=st.url is not None,
            bytes_received=int(ts.total_payload_download), holders=dl.holders,
            peer_have={n: view.have[ip] for n, ip in peer_ip.items() if ip in view.have}
            if view is not None else {})

    def _apply_job_effect(self, dl: _Download, eff: Effect) -> None:
        assert self.swarm is not None
        t, ih = dl.target, dl.torrent.info_hash
        if isinstance(eff, transfer.WebSeed):
            lock = t.dataset.lock
            if eff.on and lock is not None:  # before libtorrent can ask for anything
                self.gateway.allow(t.name, ih, piece_ranges(lock.files, dl.torrent.piece_size,
                                                            eff.pieces))
            self.swarm.web_seed(ih, dl.url if eff.on else None)
        elif isinstance(eff, transfer.SetPriorities):
            self.swarm.prioritize(ih, cas.mask(eff.priorities, dl.frozen))
        elif isinstance(eff, transfer.StartVerify):
            save = Path(dl.torrent.handle.status().save_path)
            assert t.dataset.lock is not None
            self.log.info("verifying", dataset=t.name, info_hash=ih, read_back=len(eff.read),
                          files=list(eff.read[:5]))
            dl.verify = self._spawn(asyncio.to_thread(
                verify_content, dl.torrent_bytes, save / t.dataset.lock.name, eff.read,
                dict(dl.stamps), t.files))
            dl.verify.add_done_callback(lambda _: self.woken.set())
            crash_point("verifying")
        elif isinstance(eff, transfer.Recheck):
            self.swarm.force_recheck(ih)
            dl.resumed, dl.trusted = False, ()  # libtorrent hashes every piece again
            # ... linked files included: once it has, look for broken links again.
            dl.linked, dl.stamps = tuple(dl.stamps), {}
        elif isinstance(eff, transfer.Move):
            self.swarm.move(ih, self.store.version_dir(t.name, ih))
            crash_point("moving")
        elif isinstance(eff, transfer.Complete):
            lock = t.dataset.lock
            assert lock is not None
            atomic.write_bytes(self.store.root / t.name / f"{ih}.torrent", dl.torrent_bytes)
            self.store.seal(t.name, ih, self.cfg.data_mode, self.cfg.data_group)
            roots = tuple(r for r in cas.file_roots(dl.torrent_bytes)
                          if t.files is None or r.path in t.files)  # a split: its files only
            try:  # read-only, one inode per pieces root; a failure costs only the sharing
                ObjectStore(self.cfg.state_dir).adopt(
                    self.store.version_dir(t.name, ih) / lock.name, roots)
            except OSError as e:
                self.log.warning("cannot share stored files", dataset=t.name, error=str(e))
            # A new split (the target nodes changed): the files no longer held here go, and
            # libtorrent hashes what is left, so it never offers a removed file to a peer.
            if t.files is not None and self.store.prune_split(
                    t.name, ih, lock.name, lock.files, t.files):
                self.swarm.force_recheck(ih)
            self.store.mark_complete(t.name, ih, t.dataset.version, lock.name, t.bytes_total,
                                     t.files)
            crash_point("completing")
            s = self.statuses[t.name]
            self._note_done(t.name)
            try:  # the version's byte totals outlive this process
                self.store.save_counters(t.name, ih, s.bytes_from_origin, s.bytes_from_peers)
            except OSError as e:
                self.log.error("cannot save byte counters", dataset=t.name, error=str(e))
            self.log.info("verified", dataset=t.name, version=t.dataset.version, info_hash=ih,
                          bytes_from_origin=s.bytes_from_origin,
                          bytes_from_peers=s.bytes_from_peers)
            self._activate(t)
        elif isinstance(eff, transfer.MarkOriginBad):
            blamed = self.gateway.mark_bad(t.name, ih, eff.path, eff.first, eff.last)
            self.log.warning("piece failed its hash check", dataset=t.name, piece=eff.piece,
                             file=eff.path, first=eff.first, last=eff.last,
                             origins_marked_bad=blamed)
        elif isinstance(eff, transfer.Note):
            getattr(self.log, eff.level)(eff.event, dataset=t.name,
                                         version=t.dataset.version, info_hash=ih,
                                         **dict(eff.fields))
        else:  # pragma: no cover - step_job returns only the kinds above
            raise TypeError(f"not a job effect: {eff!r}")

    def give_up(self, why: str) -> None:
        """`--once` ran out of time: what has not converged is Failed, with how far it got
        and the last error, so the status never shows a download that nobody runs."""
        for name, s in list(self.statuses.items()):
            if s.phase not in ("Pending", "Fetching", "Verifying"):
                continue
            got = f"{s.phase}, {s.bytes_done} of {s.bytes_total} bytes" if s.bytes_total \
                else s.phase
            self._update(name, phase="Failed", download_rate=0,
                         error=f"{why} ({got})" + (f"; last error: {s.error}" if s.error else ""))
            self.log.error("dataset failed", dataset=name,
                           reason=transfer.FailureReason.TIMED_OUT.value,
                           error=self.statuses[name].error)

    # -- --once lingering ----------------------------------------------------------------------

    def peers_still_need_us(self) -> bool:
        """Does a connected inventory peer still lack pieces of a version we seed?"""
        assert self.swarm is not None
        need = False
        for ih in self.seeding:
            if ih in self.swarm.torrents:
                view = self.swarm.peer_view(ih)
                self.seen_peers.update(view.connected)
                d = self.state.datasets.get(self.seeding[ih]) if self.state else None
                if d is not None and d.split is not None:  # no peer is ever a seed
                    need = need or bool(view.interested)
                else:
                    need = need or any(not seed for seed in view.connected.values())
        return need

    def unseen_target_peers(self) -> int:
        """How many target peers of our versions have never connected in this process."""
        assert self.swarm is not None
        missing = 0
        for ih in self.seeding:
            st = self.swarm.torrents.get(ih)
            if st is None:
                continue
            self.seen_peers.update(self.swarm.peer_view(ih).connected)
            missing += sum(1 for ip in st.peers
                           if ip not in self.seen_peers and ip not in self.absent_peers)
        return missing


def resumed_file(swarm: Swarm | None, ih: str) -> bool:
    """Whether resume data of `ih` is on disk (a download under way in an earlier process)."""
    return bool(swarm is not None and swarm.resume_dir is not None
                and (swarm.resume_dir / f"{ih}.resume").exists())


def _split_done(ts: Any, sizes: tuple[int, ...]) -> int:
    """Verified bytes of a split download: the bytes of its pieces held (`sizes`: per piece,
    its bytes of a file this node holds; 0 for the skipped ones and pads)."""
    return sum(n for h, n in zip(ts.pieces, sizes) if h)


def _have_bytes(ts: Any, st: TorrentState) -> int:
    """Verified bytes (pads excluded): total_wanted_done drops when priorities go to 0."""
    total_with_pads = ts.total
    pads = total_with_pads - st.total_bytes
    if pads <= 0 or total_with_pads == 0:
        return int(ts.total_done)
    return int(ts.total_done) - int(pads * ts.total_done / total_with_pads)

