"""The executor: one long-lived libtorrent session, web-seed gateway and set of origins that
passes steer by handing it a validated revision.

`apply(state)` is level-triggered and idempotent: from the revision and what is on disk it
decides which torrents the session must hold (versions to fetch, complete versions to seed,
draining versions still seeded during `gracePeriod`), activates what is ready, evicts what is
no longer wanted, and drops everything else. `tick()` advances downloads: piece sharding of the
origin (shard.py), verification, the move into the store and activation. `--once` calls them
until nothing is in flight; the daemon calls them forever.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from reconciler.adapters import atomic
from reconciler.adapters.config import NodeConfig
from reconciler.model.desired import DesiredState
from reconciler.core.pinning import with_locks
from reconciler.core.placement import Assignment, place
from reconciler.core.plan import Plan, Target, make_plan
from reconciler.adapters.sources import OriginContext, OriginError, open_origin
from reconciler.adapters.status_file import DatasetStatus
from reconciler.adapters.store import Store
from reconciler.torrent.hybrid import lock_extra
from reconciler.core import offload
from reconciler.adapters.gateway import Gateway
from reconciler.core.origin_pool import label as origin_label
from reconciler.core.origin_pool import piece_range
from reconciler.adapters.ratelimit import TokenBucket
from reconciler.adapters.swarm import Swarm, TorrentState, split_hostport
from reconciler.engine.pinning import Resolver
from reconciler.torrent.verify import verify_content

log = structlog.get_logger("executor")

PROBE = 3.0  # seconds to wait for target peers before deciding who fetches what from the origin
PEER_DEAD_AFTER = 3.0  # a target peer unseen this long no longer owns origin pieces
STUCK_AFTER = 20.0  # no progress this long: fetch pieces with no source from the origin anyway
STALL_AFTER = 120.0  # no progress this long while the origin reports errors: Failed
MAX_VERIFY_ROUNDS = 3


@dataclass
class _Job:
    """A dataset version on its way into the store."""

    target: Target
    torrent_bytes: bytes
    url: str
    torrent: TorrentState
    stage: str = "fetching"  # fetching -> verifying -> moving -> done | failed
    verify_rounds: int = 0
    verify_task: asyncio.Task[list[str]] | None = None
    started: float = field(default_factory=time.monotonic)
    checked_at: float | None = None
    last_done: int = -1
    last_change: float = field(default_factory=time.monotonic)
    owners_for: tuple[str, ...] = ()
    owner_of: list[str] = field(default_factory=list)
    last_seen: dict[str, float] = field(default_factory=dict)  # target node -> monotonic
    absent: set[str] = field(default_factory=set)  # target nodes whose peer port refused us


class Executor:
    def __init__(self, cfg: NodeConfig, peer_listen: str) -> None:
        self.cfg = cfg
        self.node = cfg.node
        self.store = Store(cfg.state_dir)
        self.peer_listen = peer_listen
        self.gateway = Gateway(limit=TokenBucket(cfg.bandwidth.origin))
        self.swarm: Swarm | None = None
        self.origins: OriginContext | None = None
        self.jobs: dict[str, _Job] = {}  # info-hash -> download in progress
        self.seeding: dict[str, str] = {}  # info-hash -> dataset, complete versions in session
        self.statuses: dict[str, DatasetStatus] = {}
        self.peer_bytes: dict[str, int] = {}  # dataset -> bytes from peers, this process
        self.absent_peers: set[str] = set()  # peer IPs that refused connections (not running)
        self.seen_peers: set[str] = set()  # peer IPs that have been connected at some point
        self.state: DesiredState | None = None
        self.root: Path | None = None
        self.source_root: Path | None = None
        self.assignments: dict[str, Assignment] = {}
        self.resolver = Resolver(cfg.node, self.store, self.gateway.read_elsewhere)
        self.unpinned: dict[str, Target] = {}
        self.log = log.bind(node=cfg.node)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.gateway.start()
        resume = self.cfg.state_dir / "resume"
        resume.mkdir(parents=True, exist_ok=True)
        self.swarm = Swarm(self.peer_listen, self.cfg.bandwidth.download,
                           self.cfg.bandwidth.upload, resume_dir=resume)

    async def close(self) -> None:
        await self.resolver.close()
        for job in self.jobs.values():
            if job.verify_task is not None:
                job.verify_task.cancel()
        if self.swarm is not None:
            saved = await self.swarm.save_resume_data()
            self.log.info("session closed", resume_saved=saved)
            self.swarm.close()
            self.swarm = None
        await self.gateway.stop()
        if self.origins is not None:
            await self.origins.close()

    def reconfigure(self, cfg: NodeConfig) -> None:
        """A reloaded node config (SIGHUP): rates and limits apply now, paths on next pass."""
        self.cfg = cfg
        self.store = Store(cfg.state_dir)
        if self.swarm is not None:
            self.swarm.set_rates(cfg.bandwidth.download, cfg.bandwidth.upload)
        self.gateway.limit = TokenBucket(cfg.bandwidth.origin)

    # -- applying a revision -------------------------------------------------------------------

    def apply(self, state: DesiredState, root: Path, source_root: Path | None = None) -> Plan:
        """Make the session and the store match `state`; returns the plan that was executed.

        `root` holds the revision's YAML and locks; `source_root` (default `root`) is what
        relative `file` source paths are relative to: the live state repo, also when `root` is
        the last good snapshot."""
        assert self.swarm is not None
        source_root = source_root or root
        if self.origins is None or self.origins.state_root != source_root:
            if self.origins is not None:
                asyncio.ensure_future(self.origins.close())
            self.origins = OriginContext(source_root)
        # Unlocked datasets whose torrent is here already (built or fetched) are pinned by it.
        state = with_locks(state, self.resolver.cache.locks(state))
        self.state, self.root, self.source_root = state, root, source_root
        self.assignments = place(state)
        self.swarm.set_allowed(self._inventory_ips(state) | {self.gateway.host})
        log_ = self.log.bind(revision=state.revision)

        plan = make_plan(state, self.node, self.cfg.allowed_roots, self.store.observe())
        statuses: dict[str, DatasetStatus] = {}
        wanted: dict[str, str] = {}  # info-hash -> dataset, every torrent the session must hold
        unpinned: dict[str, Target] = {}  # unlocked datasets whose torrent is not here yet
        for a in plan.actions:
            t = plan.targets.get(a.dataset)
            if a.kind == "blocked":
                statuses[a.dataset] = DatasetStatus("Failed", a.version, a.path, error=a.reason)
            elif a.kind == "suspended":
                assert t is not None
                statuses[a.dataset] = self._status(t, "Suspended")
                if self._complete(t):
                    wanted[t.info_hash] = t.name  # type: ignore[index]
            elif a.kind in ("unchanged", "activate"):
                assert t is not None and t.info_hash is not None
                if a.kind == "activate":
                    self._activate(t, statuses)
                else:
                    statuses[t.name] = self._status(t, "Ready")
                wanted[t.info_hash] = t.name
            elif a.kind in ("fetch", "update") and t is not None and t.info_hash is None:
                unpinned[t.name] = t
                statuses[t.name] = self._unpinned_status(t)
            elif a.kind in ("fetch", "update"):
                assert t is not None and t.info_hash is not None
                wanted[t.info_hash] = t.name
                old = self.statuses.get(t.name)
                keep = old is not None and old.infoHash == t.info_hash and t.info_hash in self.jobs
                statuses[t.name] = old if keep else self._status(t, "Pending")  # type: ignore[assignment]
                failed = self.jobs.get(t.info_hash)
                if failed is not None and failed.stage == "failed":
                    self._drop_torrent(t.info_hash)  # level-triggered retry on the next pass
                    statuses[t.name] = self._status(t, "Pending")
                if t.info_hash not in self.jobs:
                    self._start_job(t, statuses[t.name], log_)
                else:
                    self.jobs[t.info_hash].target = t
        self.statuses, self.unpinned = statuses, unpinned
        self.resolver.ensure(state, self.assignments, self.origins)
        self.resolver.cache.prune(state)

        self._drain_and_evict(plan, wanted, log_)
        self._sync_torrents(wanted)
        return plan

    def _inventory_ips(self, state: DesiredState) -> set[str]:
        out = set()
        for n in state.nodes.values():
            try:
                out.add(split_hostport(n.peer)[0])
            except ValueError:
                continue
        return out

    def _status(self, t: Target, phase: str) -> DatasetStatus:
        lock = t.dataset.lock
        if lock is None:  # unlocked, torrent not here yet
            return DatasetStatus(phase, t.dataset.version, t.path)  # type: ignore[arg-type]
        s = DatasetStatus(phase, t.dataset.version, t.path, lock.info_hash,  # type: ignore[arg-type]
                          bytesTotal=lock.total_bytes)
        if phase == "Ready" or (phase == "Suspended" and self._complete(t)):
            s.bytesDone = lock.total_bytes
        s.bytesFromOrigin = self.gateway.bytes_served.get(t.name, 0)
        s.bytesFromPeers = self.peer_bytes.get(t.name, 0)
        return s

    def _unpinned_status(self, t: Target) -> DatasetStatus:
        """An unlocked dataset without its torrent yet: Fetching while this node reads the
        source to build it, Pending while it waits for the node that does, Failed with the
        build's error until its retry."""
        s = self._status(t, "Pending")
        s.bytesFromOrigin = self.gateway.bytes_served.get(t.name, 0)
        w = self.resolver.work.get(t.name)
        if w is not None and w.state == "building":
            s.phase, s.bytesDone, s.bytesTotal = "Fetching", w.bytes_done, w.bytes_total
        elif w is not None and w.state == "failed":
            s.phase, s.error = "Failed", w.error
        return s

    def _complete(self, t: Target) -> bool:
        v = self.store.observe_dataset(t.name).versions.get(t.info_hash or "")
        return v is not None and v.complete

    def _activate(self, t: Target, statuses: dict[str, DatasetStatus]) -> None:
        assert t.info_hash is not None
        try:
            self.store.activate(t.name, t.info_hash, Path(t.path))
        except OSError as e:
            self.log.error("activation failed", dataset=t.name, path=t.path, error=str(e))
            statuses[t.name] = DatasetStatus("Failed", t.dataset.version, t.path, t.info_hash,
                                             bytesTotal=t.dataset.lock.total_bytes if t.dataset.lock else 0,
                                             error=f"cannot activate at {t.path}: {e}")
            return
        self.log.info("activated", dataset=t.name, version=t.dataset.version, path=t.path,
                      info_hash=t.info_hash)
        statuses[t.name] = self._status(t, "Ready")

    def _start_job(self, t: Target, status: DatasetStatus, log_: structlog.BoundLogger) -> None:
        assert self.swarm is not None and self.origins is not None and self.root is not None
        d = t.dataset
        lock = d.lock
        assert lock is not None
        try:
            torrent = (self.root / lock.path).read_bytes()
        except OSError as e:
            status.phase, status.error = "Failed", f"cannot start: {e}"
            log_.error("dataset failed", dataset=t.name, error=status.error)
            return
        # The source (pinned to the revision the lock recorded), then the mirrors: the gateway
        # serves from all of them. One that cannot be opened is left out, unless all are.
        pinned = lock_extra(torrent).get("syncbit", {}).get("source")
        origins, labels, problems = [], [], []
        for i, src in enumerate((d.source, *d.mirrors)):
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
        if not origins:
            status.phase = "Failed"
            status.error = "cannot start: " + (problems[0] if len(problems) == 1 else
                                               "all origins failed: " + "; ".join(problems))
            log_.error("dataset failed", dataset=t.name, error=status.error)
            return
        save = self.store.begin(t.name, lock.info_hash, d.version)
        url = self.gateway.register(t.name, lock.info_hash, lock.name, lock.files, origins,
                                    labels)
        st = self.swarm.add(lock.info_hash, torrent, save, lock.total_bytes)
        job = _Job(t, torrent, url, st)
        self.jobs[lock.info_hash] = job
        self._probe(job)
        status.phase = "Fetching"
        log_.info("fetching", dataset=t.name, version=d.version, info_hash=lock.info_hash,
                  bytes_total=lock.total_bytes, save_path=str(save))

    def _probe(self, job: _Job) -> None:
        """Find target peers that are not running at all (connection refused), so nobody
        waits for them to take their share of the origin."""
        assert self.state is not None
        a = self.assignments.get(job.target.name)
        peers = {n: self.state.nodes[n].peer for n in (a.nodes if a else ())
                 if n != self.node and n in self.state.nodes}

        async def probe(name: str, addr: str) -> None:
            # A peer started at the same moment may not listen yet: it is absent only if it
            # still refuses connections after most of the probe window.
            host, port = split_hostport(addr)
            deadline = time.monotonic() + PROBE * 0.6
            while True:
                try:
                    _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
                except (OSError, asyncio.TimeoutError):
                    if time.monotonic() >= deadline:
                        job.absent.add(name)
                        self.absent_peers.add(host)
                        return
                    await asyncio.sleep(0.3)
                    continue
                w.close()
                return

        for name, addr in peers.items():
            asyncio.ensure_future(probe(name, addr))

    def _drain_and_evict(self, plan: Plan, wanted: dict[str, str],
                         log_: structlog.BoundLogger) -> None:
        for a in plan.actions:
            if a.kind == "evict" and a.dataset not in plan.targets:
                self.store.mark_draining(a.dataset)
        for name in plan.targets:
            self.store.clear_draining(name)
        for a in plan.actions:
            if a.kind != "evict" or a.info_hash is None or a.info_hash in self.jobs and \
                    a.info_hash in wanted:
                continue
            if a.dataset not in plan.targets:
                left = self.cfg.grace_period - (time.time() - self.store.draining_since(a.dataset))
                obs = self.store.observe_dataset(a.dataset)
                v = obs.versions.get(a.info_hash)
                if left > 0 and v is not None and v.complete:
                    wanted[a.info_hash] = a.dataset  # keep seeding it to the new holders
                    self.statuses[a.dataset] = DatasetStatus(
                        "Draining", a.version, obs.link, a.info_hash, bytesTotal=a.bytes_total,
                        bytesDone=a.bytes_total)
                    continue
            self._drop_torrent(a.info_hash)
            freed = self.store.evict(a.dataset, a.info_hash)
            log_.info("evicted", dataset=a.dataset, version=a.version, reason=a.reason,
                      bytes_freed=freed)

    def _sync_torrents(self, wanted: dict[str, str]) -> None:
        """Seed complete versions that must be held; drop torrents nothing wants any more."""
        assert self.swarm is not None and self.state is not None
        for ih in list(self.swarm.torrents):
            if ih not in wanted:
                self._drop_torrent(ih)
        for ih, dataset in wanted.items():
            if ih not in self.swarm.torrents:
                meta_ok = self.store.observe_dataset(dataset).versions.get(ih)
                if meta_ok is None or not meta_ok.complete:
                    continue
                torrent = self._torrent_for(dataset, ih)
                if torrent is None:
                    continue
                self.swarm.add(ih, torrent, self.store.version_dir(dataset, ih),
                               meta_ok.bytes_total, seed=True)
                self.seeding[ih] = dataset
            a = self.assignments.get(dataset)
            peers = [self.state.nodes[n].peer for n in (a.nodes if a else ())
                     if n != self.node and n in self.state.nodes]
            self.swarm.set_peers(ih, peers)

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

    def _drop_torrent(self, ih: str) -> None:
        job = self.jobs.pop(ih, None)
        if job is not None:
            if job.verify_task is not None:
                job.verify_task.cancel()
            self.gateway.unregister(job.target.name, ih)
        self.seeding.pop(ih, None)
        if self.swarm is not None and ih in self.swarm.torrents:
            self.swarm.remove(ih)

    # -- advancing -----------------------------------------------------------------------------

    def busy(self) -> bool:
        """Is a download, verification or move, or the making of a torrent, still under way?"""
        return (any(j.stage not in ("done", "failed") for j in self.jobs.values())
                or self.resolver.pending() or self.resolver.changed)

    def tick(self) -> None:
        assert self.swarm is not None
        self.swarm.pump()
        self.swarm.connect_peers()
        finished = False
        for ih, job in list(self.jobs.items()):
            self._step(job)
            if job.stage == "done":
                del self.jobs[ih]
                self.seeding[ih] = job.target.name
                self.gateway.unregister(job.target.name, ih)
                finished = True
        if self.resolver.changed:
            self.resolver.changed = False
            finished = True  # an unlocked dataset's torrent arrived: start its download
        if finished and self.state is not None and self.root is not None:
            self.apply(self.state, self.root, self.source_root)  # activated: evict what it frees
        for name, t in self.unpinned.items():
            if name in self.statuses and self.statuses[name].infoHash is None:
                self.statuses[name] = self._unpinned_status(t)
        for ih, dataset in self.seeding.items():
            s = self.statuses.get(dataset)
            if s is None or s.infoHash != ih or ih not in self.swarm.torrents:
                continue
            ts = self.swarm.torrents[ih].handle.status()
            s.uploadRate, s.downloadRate, s.peers = ts.upload_payload_rate, 0, ts.num_peers

    def peers_still_need_us(self) -> bool:
        """Does a connected inventory peer still lack pieces of a version we seed?"""
        assert self.swarm is not None
        need = False
        for ih in self.seeding:
            if ih in self.swarm.torrents:
                view = self.swarm.peer_view(ih)
                self.seen_peers.update(view.connected)
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

    def _step(self, job: _Job) -> None:
        assert self.swarm is not None
        t = job.target
        ih = t.info_hash
        assert ih is not None
        st = job.torrent
        s = self.statuses.get(t.name)
        if s is None or s.infoHash != ih:
            return
        if job.stage in ("done", "failed"):
            return
        ts = st.handle.status()
        origin = self.gateway.bytes_served.get(t.name, 0)
        if job.stage == "fetching":
            s.bytesDone = min(_have_bytes(ts, st), s.bytesTotal)
        s.bytesFromOrigin = origin
        s.bytesFromPeers = self.peer_bytes[t.name] = max(0, ts.total_payload_download - origin)
        s.downloadRate, s.uploadRate = ts.download_payload_rate, ts.upload_payload_rate
        s.peers = ts.num_peers
        if st.error:
            self._fail(job, st.error)
            return
        self._blame_failed_pieces(job)
        now = time.monotonic()
        if s.bytesDone != job.last_done:
            job.last_done, job.last_change = s.bytesDone, now

        if job.stage == "fetching":
            origin_error = self.gateway.errors.get(t.name) or (
                f"web seed: {st.url_seed_error}" if st.url_seed_error and st.url else None)
            s.error = origin_error
            if ts.is_seeding and ts.state not in (ts.checking_files, ts.checking_resume_data):
                self.swarm.web_seed(ih, None)
                job.stage, s.phase = "verifying", "Verifying"
                job.verify_rounds += 1
                job.verify_task = asyncio.ensure_future(asyncio.to_thread(
                    verify_content, job.torrent_bytes, Path(ts.save_path) / t.dataset.lock.name))  # type: ignore[union-attr]
                return
            if origin_error and now - job.last_change > STALL_AFTER:
                self._fail(job, f"no progress for {STALL_AFTER:.0f}s; {origin_error}")
                return
            self._share_origin(job, now)
        elif job.stage == "verifying":
            task = job.verify_task
            if task is None or not task.done():
                return
            bad = task.result() if not task.cancelled() else ["(cancelled)"]
            job.verify_task = None
            if bad:
                if job.verify_rounds >= MAX_VERIFY_ROUNDS:
                    self._fail(job, f"verification failed {job.verify_rounds} times: "
                                    f"{', '.join(bad[:5])}")
                else:
                    self.log.warning("verification found bad files; fetching them again",
                                     dataset=t.name, files=bad[:5], round=job.verify_rounds)
                    self.swarm.force_recheck(ih)
                    job.stage, s.phase = "fetching", "Fetching"
                return
            s.bytesDone = s.bytesTotal
            job.stage = "moving"
            self.swarm.move(ih, self.store.version_dir(t.name, ih))
        elif job.stage == "moving":
            if st.moved is None:
                return
            lock = t.dataset.lock
            assert lock is not None
            atomic.write_bytes(self.store.root / t.name / f"{ih}.torrent", job.torrent_bytes)
            self.store.mark_complete(t.name, ih, t.dataset.version, lock.name, lock.total_bytes)
            job.stage = "done"
            self.log.info("verified", dataset=t.name, version=t.dataset.version, info_hash=ih,
                          bytes_from_origin=s.bytesFromOrigin, bytes_from_peers=s.bytesFromPeers)
            self._activate(t, self.statuses)

    def _blame_failed_pieces(self, job: _Job) -> None:
        """Pieces that failed their hash check: the gateway stops using the origins that
        served those bytes (pieces never span files in a hybrid torrent), so libtorrent's
        retry of the piece is served by another origin."""
        st = job.torrent
        lock = job.target.dataset.lock
        if not st.failed_pieces or lock is None:
            return
        failed, st.failed_pieces = st.failed_pieces, []
        for piece in sorted(set(failed)):
            where = piece_range(lock.files, st.piece_size, piece)
            if where is None:
                continue
            path, first, last = where
            blamed = self.gateway.mark_bad(job.target.name, st.info_hash, path, first, last)
            self.log.warning("piece failed its hash check", dataset=job.target.name,
                             piece=piece, file=path, first=first, last=last,
                             origins_marked_bad=blamed)

    def _fail(self, job: _Job, error: str) -> None:
        job.stage = "failed"
        if self.swarm is not None:
            self.swarm.web_seed(job.target.info_hash or "", None)
        s = self.statuses[job.target.name]
        s.phase, s.error = "Failed", error
        self.log.error("dataset failed", dataset=job.target.name, error=error)

    def _share_origin(self, job: _Job, now: float) -> None:
        """Decide which missing pieces this node takes from the origin (see shard.py)."""
        assert self.swarm is not None and self.state is not None
        st = job.torrent
        ih = st.info_hash
        if not st.checked:
            return
        if job.checked_at is None:
            job.checked_at = now
        a = self.assignments.get(job.target.name)
        targets = [n for n in (a.nodes if a else ()) if n in self.state.nodes]
        ip_of = {n: split_hostport(self.state.nodes[n].peer)[0] for n in targets if n != self.node}
        view = self.swarm.peer_view(ih)
        self.seen_peers.update(view.connected)
        for n, ip in ip_of.items():
            if ip in view.connected:
                job.last_seen[n] = now
        live = tuple(sorted({self.node} | {n for n, seen in job.last_seen.items()
                                          if now - seen <= PEER_DEAD_AFTER}))
        waiting_for = set(ip_of) - set(live) - job.absent
        if waiting_for and now - job.checked_at < PROBE:
            return  # give the other targets a moment to connect before sharing out the origin
        if live != job.owners_for:
            self.log.info("origin shares", dataset=job.target.name, info_hash=ih, live=list(live),
                          absent=sorted(job.absent), waited=round(now - job.checked_at, 2))
            job.owners_for = live
            run = offload.run_length(st.num_pieces, st.piece_size, len(targets))
            job.owner_of = offload.owners(ih, st.num_pieces, live, run)
        have = st.handle.status().pieces
        stuck: list[int] = []
        if now - job.last_change > STUCK_AFTER:
            stuck = [p for p, h in enumerate(have) if not h and view.available[p] == 0]
        decision = offload.decide_offload(self.node, ih, have, view.available, live, stuck, job.owner_of)
        # Order matters: the web seed must never see raised priorities of pieces other nodes
        # take from the origin, or libtorrent sends it one more range request for them, which
        # the origin starts serving before the hang-up (measured: up to 1.25x origin bytes).
        if decision.origin:
            self.swarm.prioritize(ih, decision.priorities)
            self.swarm.web_seed(ih, job.url)
        else:
            self.swarm.web_seed(ih, None)
            self.swarm.prioritize(ih, decision.priorities)


def _have_bytes(ts, st: TorrentState) -> int:  # type: ignore[no-untyped-def]
    """Verified bytes (pads excluded): total_wanted_done drops when priorities go to 0."""
    return ts.total_done - _pad_bytes_done(ts, st)


def _pad_bytes_done(ts, st: TorrentState) -> int:  # type: ignore[no-untyped-def]
    total_with_pads = ts.total
    pads = total_with_pads - st.total_bytes
    if pads <= 0 or total_with_pads == 0:
        return 0
    return int(pads * ts.total_done / total_with_pads)
