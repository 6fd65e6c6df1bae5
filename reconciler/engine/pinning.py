"""Getting the torrent of datasets without `spec.lock` (the rules are in ../metadata.py).

For every unlocked dataset this node must hold and has no torrent for, one task asks the other
target nodes' APIs for it, and builds it here when `metadata.decide` says this node is the one
to: the source is read once, its bytes written to the staging directory of the version while
they are hashed, so the download that follows finds them all and reads nothing more from the
origin. The same object answers the peers' questions (`answer`, served by the API).

A torrent from a peer is never trusted alone: before it is kept, the source is listed (a
metadata request: HTTP HEAD, S3 list/HEAD, HF tree API; no bytes) and `core.provenance`
compares the two. A refused torrent is remembered by its digest, so the peer that offers it
again counts as `failed` without listing the source again, and the usual rules take over (the
next holder, or a build here).

A dataset published from a node (`source: {node: ...}`) follows `engine/publishing.py`: the
publishing node builds at once from a snapshot of its path, the others ask it alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

import aiohttp
import structlog

from reconciler.model.desired import Dataset, DesiredState, publisher
from reconciler.adapters.published import PublishedVersions
from reconciler.engine import publishing
from reconciler.engine.locking import STREAMS, build_lock
from reconciler.adapters.pin_cache import PinCache
from reconciler.core.lockfile import lock_extra
from reconciler.core.pinning import PinDecision, PeerState, blocked, check, decide_pin, metadata_key
from reconciler.core.placement import Assignment, rank_nodes
from reconciler.core.provenance import cross_check
from reconciler.adapters.sources import OriginContext, OriginError, open_origin
from reconciler.adapters.store import Store

log = structlog.get_logger("metadata")

ASK_TIMEOUT = 3.0  # seconds for one peer to answer (1 s to connect)
ASK_BELOW = 16  # peers asked at once (above this node: 1, then 2, 4... up to this)
POLL_FIRST, POLL_MAX = 0.5, 5.0  # seconds between rounds of asking, growing
TAKEOVER_AFTER = 10.0  # no node ranked above has been heard from this long: build here
RETRY_AFTER = (10.0, 30.0, 60.0, 120.0, 300.0)  # after failed builds, in turn
MAX_TORRENT = 256 << 20  # a peer's answer larger than this is refused
MAX_REFUSED = 64  # digests of refused torrents kept per dataset (a peer may vary its answer)
LIST_TIMEOUT = 60.0  # seconds for the source's listing that vets a peer's torrent

Throttle = Callable[[str, int], Awaitable[None]]


@dataclass
class Work:
    """One unlocked dataset whose torrent this node is getting."""

    dataset: Dataset
    key: str
    ranked: tuple[str, ...]
    api_of: Mapping[str, str]  # target node -> host:port of its API
    ctx: OriginContext  # the executor's current one (it changes with the state repo's path)
    state: str = "waiting"  # waiting | building | failed
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    failures: int = 0
    said: str = ""  # the last decision logged, so a wait is logged once
    refused: set[str] = field(default_factory=set)  # sha256 of peers' torrents refused
    peer_errors: dict[str, str] = field(default_factory=dict)  # a failed peer's own error
    final: bool = False  # the failure is for good (a published version's bytes changed)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Pinner:
    def __init__(self, node: str, store: Store, throttle: Throttle,
                 slots: asyncio.Semaphore | None = None, streams: int = STREAMS) -> None:
        self.node = node
        self.store = store
        # A build's origin range requests hold the node's originConnections slots (the
        # gateway's), so building a torrent and downloading share that one cap.
        self.slots, self.streams = slots, streams
        self.cache = PinCache(store.state_dir)
        self.published = PublishedVersions(store.state_dir)  # versions this node published
        self.throttle = throttle
        self.work: dict[str, Work] = {}
        #: Versions this process built into staging (read from the source, hashed as written,
        #: the torrent made from those hashes): complete and verified by construction, so the
        #: executor seeds them without libtorrent's check (`take_built`).
        self.built: set[str] = set()
        self.changed = False  # a torrent arrived: the executor re-applies
        self.wake: Callable[[], None] = lambda: None  # set by the executor
        self.asked_at: float | None = None  # monotonic time a peer last asked for a torrent
        self._http: aiohttp.ClientSession | None = None
        self.log = log.bind(node=node)

    # -- what the executor calls -------------------------------------------------------------

    def ensure(self, state: DesiredState, assignments: Mapping[str, Assignment],
               ctx: OriginContext) -> None:
        """Level-triggered: one task for every unlocked dataset placed here that has no torrent
        (`state` has the cached ones as locks already); any other task is cancelled."""
        want: dict[str, tuple[Dataset, str, tuple[str, ...]]] = {}
        for name, a in assignments.items():
            d = state.datasets.get(name)
            if d is None or d.lock is not None or d.suspend or self.node not in a.nodes:
                continue
            want[name] = (d, metadata_key(d), tuple(rank_nodes(name, a.nodes)))
        for name, old in list(self.work.items()):
            if name not in want or want[name][1] != old.key:
                self._cancel(old)
                del self.work[name]
        for name, (d, key, ranked) in want.items():
            api_of = {n: state.nodes[n].api for n in ranked if n in state.nodes}
            w = self.work.get(name)
            if w is None:
                w = self.work[name] = Work(d, key, ranked, api_of, ctx)
                w.task = asyncio.ensure_future(self._run(w))
            else:
                w.dataset, w.ranked, w.api_of, w.ctx = d, ranked, api_of, ctx

    def pending(self) -> bool:
        """Is a torrent still being asked for or built (a failed build waits for its retry)?"""
        return any(w.state != "failed" for w in self.work.values())

    def answer(self, dataset: str, key: str) -> tuple[int, bytes | dict[str, object]]:
        """A peer asks for the torrent of `dataset` at `key`: (HTTP status, torrent or JSON)."""
        self.asked_at = time.monotonic()
        data = self.cache.get(dataset, key)
        if data is not None:
            return 200, data
        w = self.work.get(dataset)
        if w is not None and w.key == key:
            doc: dict[str, object] = {"state": w.state, "node": self.node}
            if w.state == "building":
                doc.update(bytesDone=w.bytes_done, bytesTotal=w.bytes_total)
            if w.state == "failed":
                return 404, {**doc, "error": w.error}
            return 202, doc
        return 404, {"state": "unknown", "node": self.node}

    def asked_within(self, seconds: float) -> bool:
        """Did a peer ask for a torrent here that recently? It is waiting for it, or got it and
        is about to download the bytes: a `--once` run should still seed."""
        return self.asked_at is not None and time.monotonic() - self.asked_at < seconds

    async def close(self) -> None:
        for w in self.work.values():
            self._cancel(w)
        tasks = [w.task for w in self.work.values() if w.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.work.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the task ----------------------------------------------------------------------------

    def _cancel(self, w: Work) -> None:
        if w.task is not None and not w.task.done():
            w.task.cancel()

    async def _run(self, w: Work) -> None:
        pub = publisher(w.dataset)
        if pub is not None:
            await (self._publish(w) if pub == self.node else publishing.follow(self, w))
            return
        name = w.dataset.name
        unblocked_since: float | None = None
        delay = POLL_FIRST
        while True:
            answers, found = await self._ask_peers(w)
            if found is not None:
                peer, data = found
                why = await self._vet(w, data)
                if why is None:
                    try:
                        lock = self.cache.put(w.dataset, data)
                    except (ValueError, OSError) as e:
                        why = str(e)
                if why is not None:
                    self.log.warning("metadata from peer refused", dataset=name,
                                     version=w.dataset.version, peer=peer,
                                     error=why)
                    answers[peer] = "failed"
                else:
                    self.log.info("metadata fetched", dataset=name, version=w.dataset.version,
                                  peer=peer, info_hash=lock.info_hash)
                    self._done(w)
                    return
            now = time.monotonic()
            if blocked(self.node, w.ranked, answers):
                unblocked_since = None
            elif unblocked_since is None:
                unblocked_since = now
            decision = decide_pin(self.node, w.ranked, answers,
                              0.0 if unblocked_since is None else now - unblocked_since,
                              TAKEOVER_AFTER)
            self._say(w, decision)
            if decision.kind == "build":
                if await self._build(w):
                    self._done(w)
                    return
                w.failures += 1
                retry = RETRY_AFTER[min(w.failures, len(RETRY_AFTER)) - 1]
                self.log.error("metadata build failed", dataset=name,
                               version=w.dataset.version, error=w.error,
                               retry_in=retry)
                await asyncio.sleep(retry)
                w.state, unblocked_since, delay = "waiting", None, POLL_FIRST
                continue
            if "building" in answers.values():
                delay = POLL_FIRST  # it is about to appear: pick it up while the builder seeds
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)

    async def _publish(self, w: Work) -> None:
        """This node publishes the dataset: build from its snapshot now, retrying as any build
        (a refusal too: the node's config or the files may change)."""
        while not await self._build(w):
            w.failures += 1
            retry = None if w.final else RETRY_AFTER[min(w.failures, len(RETRY_AFTER)) - 1]
            self.log.error("publishing failed", dataset=w.dataset.name,
                           version=w.dataset.version, error=w.error, retry_in=retry)
            if retry is None:  # stays Failed, answering peers with its error, until the key
                return         # (version or path) changes
            await asyncio.sleep(retry)
        self._done(w)

    def _say_wait(self, w: Work, peer: str, state: str) -> None:
        """Log what the publishing node answered, once per change."""
        said = f"{peer} {state}"
        if said != w.said:
            w.said = said
            self.log.info("metadata: publishing node answered", dataset=w.dataset.name,
                          version=w.dataset.version, peer=peer, state=state, error=w.error)

    def _done(self, w: Work) -> None:
        self.changed = True
        self.wake()  # the executor passes again now, not at its next look
        if self.work.get(w.dataset.name) is w:
            del self.work[w.dataset.name]

    def _say(self, w: Work, d: PinDecision) -> None:
        said = f"{d.kind} {d.node}"
        if said != w.said:
            w.said = said
            self.log.info(f"metadata: {d.kind}", dataset=w.dataset.name,
                          version=w.dataset.version, key=w.key,
                          peer=d.node, reason=d.reason)

    async def _ask_peers(self, w: Work) -> tuple[dict[str, PeerState], tuple[str, bytes] | None]:
        """Ask the nodes ranked above this one in rank order (1, then 2, 4... at once) until one
        has the torrent or is busy getting it; only if none is, ask the nodes below too (one
        may have it, or be building it). So a waiting node usually sends one request a round,
        to the first-ranked node, whatever the size of the cluster."""
        others = [n for n in w.ranked if n != self.node and n in w.api_of]
        me = w.ranked.index(self.node) if self.node in w.ranked else len(w.ranked)
        above = [n for n in others if w.ranked.index(n) < me]
        below = [n for n in others if w.ranked.index(n) > me]
        answers: dict[str, PeerState] = {}
        for group, engaged, first in ((above, ("has", "building", "waiting"), 1),
                                      (below, ("has", "building"), ASK_BELOW)):
            i, size = 0, first
            while i < len(group):
                window = group[i:i + size]
                i, size = i + size, min(size * 2, ASK_BELOW)
                results = await asyncio.gather(*(self._ask(w, n) for n in window))
                found = None
                for n, (state, data) in zip(window, results):
                    answers[n] = state
                    if data is not None and found is None:
                        found = (n, data)  # in rank order: the highest-ranked holder wins
                if found is not None:
                    return answers, found
                if any(answers[n] in engaged for n in window):
                    return answers, None
        return answers, None

    async def _vet(self, w: Work, data: bytes) -> str | None:
        """None when a peer's torrent may be used: it parses as the dataset's, and the source's
        listing, read now, agrees with it (`cross_check`); else why not. A torrent the source
        contradicts is remembered; one that cannot be checked (source down) is not, so the next
        round checks it again."""
        d = w.dataset
        try:
            lock = check(data, d, "peer's torrent")
            extra = lock_extra(data)
        except ValueError as e:
            _remember(w, data)
            return str(e)
        try:
            origin = open_origin(d.source, w.ctx)
            listing = await asyncio.wait_for(origin.list_files(), LIST_TIMEOUT)
        except OriginError as e:
            return f"cannot check it against the {d.source.type} source: {e}"
        except asyncio.TimeoutError:
            return (f"cannot check it against the {d.source.type} source: no listing within "
                    f"{LIST_TIMEOUT:.0f}s")
        why = cross_check(lock, extra, d.name, origin.describe(), listing)
        if why is not None:
            _remember(w, data)
            return f"it does not match the {d.source.type} source: {why}"
        return None

    async def _ask(self, w: Work, peer: str) -> tuple[PeerState, bytes | None]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT,
                                                                             sock_connect=1.0))
        url = f"http://{w.api_of[peer]}/v1/metadata/{w.dataset.name}/{w.key}"
        try:
            async with self._http.get(url) as r:
                if r.status == 200:
                    buf = bytearray()  # read(n) returns what has arrived: until EOF or the cap
                    while len(buf) <= MAX_TORRENT:
                        chunk = await r.content.read(MAX_TORRENT + 1 - len(buf))
                        if not chunk:
                            break
                        buf += chunk
                    body = bytes(buf)
                    if len(body) > MAX_TORRENT or hashlib.sha256(body).hexdigest() in w.refused:
                        return "failed", None
                    return "has", body
                if r.status in (202, 404):
                    doc = await r.json(content_type=None)
                    state = doc.get("state") if isinstance(doc, dict) else None
                    if state == "failed" and isinstance(doc.get("error"), str):
                        w.peer_errors[peer] = doc["error"][:2000]
                    if state in ("building", "waiting", "failed", "unknown"):
                        return state, None
                return "unknown", None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError):
            return "unreachable", None

    async def _build(self, w: Work) -> bool:
        """Read the source once into staging while hashing it; True when the torrent is kept."""
        d = w.dataset
        w.state, w.error, w.bytes_done = "building", None, 0
        tmp = self.store.staging / d.name / f".build-{w.key}"
        for stale in (self.store.staging / d.name).glob(".build-*"):  # left by a crash
            shutil.rmtree(stale, ignore_errors=True)
        self.log.info("metadata: building from the source", dataset=d.name, version=d.version,
                      key=w.key, source=d.source.type)

        def progress(done: int, total: int) -> None:
            w.bytes_done, w.bytes_total = done, total

        try:
            if publisher(d) is not None:  # a snapshot of this node's own disk: no origin
                torrent = await publishing.snapshot(self.node, d, w.ctx, progress, tmp / d.name)
                publishing.check_immutable(self.node, d, torrent, self.published)
            else:
                torrent = await build_lock(d, w.ctx, progress, write_to=tmp / d.name,
                                           throttle=lambda n: self.throttle(d.name, n),
                                           streams=self.streams, slots=self.slots)
            lock = check(torrent, d, "built torrent")
            ih = lock.info_hash
            have = self.store.observe_dataset(d.name).versions.get(ih)
            if have is None or not have.complete:
                dst = self.store.staging_dir(d.name, ih)
                shutil.rmtree(dst, ignore_errors=True)
                os.replace(tmp, dst)
                self.store.begin(d.name, ih, d.version)
                self.built.add(ih)
            if publisher(d) is not None:
                publishing.remember(d, torrent, self.published)
            self.cache.put(d, torrent)
        except publishing.PublishRefused as e:
            w.state, w.error, w.final = "failed", str(e), e.final
            return False
        except (OriginError, OSError, ValueError) as e:
            w.state, w.error = "failed", f"building the torrent from the {d.source.type} source: {e}"
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.log.info("metadata built", dataset=d.name, version=d.version, info_hash=ih,
                      bytes_total=lock.total_bytes, files=len(lock.files))
        return True

    def take_built(self, info_hash: str) -> bool:
        """Whether this process built `info_hash` into staging and nothing has used that yet
        (asked once: a later start, after a restart or an eviction, checks what is there)."""
        if info_hash in self.built:
            self.built.discard(info_hash)
            return True
        return False


def _remember(w: Work, torrent: bytes) -> None:
    """Keep the digest of a refused torrent, so the same answer is not checked again; bounded,
    as a hostile peer may send another one every round."""
    if len(w.refused) >= MAX_REFUSED:
        w.refused.clear()
    w.refused.add(hashlib.sha256(torrent).hexdigest())
