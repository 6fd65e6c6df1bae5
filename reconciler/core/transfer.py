"""The executor's rules, as pure functions of (what was observed, `now`).

The executor shell observes libtorrent, the gateway and the store once per tick, calls
`step_job` for every download in flight and `decide_pass` once per pass, and applies the
effects they return, in order. Nothing here does I/O, starts a task or reads a clock, so each
rule is tested in microseconds (tests/core/test_transfer.py) instead of through a swarm.

A download moves through `Stage`s: FETCHING -> VERIFYING -> MOVING -> DONE, or FAILED with a
typed `Failure`. A failed download is dropped and started again by the next pass
(level-triggered retry).

What VERIFYING reads: libtorrent hashes every piece of a hybrid torrent against the lock's v1
(SHA-1) and v2 (SHA-256 merkle) hashes, both when it arrives and when a check finds it on disk
(a restart after a crash, objects linked in, a recheck). The one way a piece becomes "had"
without libtorrent hashing it in this process is resume data, which libtorrent trusts after a
clean stop (`Seen.trusted_pieces`). So a finished download's verification reads back only the
files holding such pieces (`unhashed_files`), and checks every other file's size and that
what it linked from the object store is unchanged since the check (the shell's part); reading
every file back again, as before, cost a second full read of the data (19% of the CPU of a
download from a fast origin).
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence, Union

from reconciler.core import offload, split
from reconciler.core.scheduling import Candidate, Pause, Resume, choose_active
from reconciler.core.origin_pool import piece_range
from reconciler.core.plan import Plan, Target
from reconciler.model.desired import LockFile
from reconciler.model.ids import DatasetName, InfoHash, NodeName
from reconciler.model.observed import ObservedDataset
from reconciler.model.status import Phase

PEER_REFUSED_FOR = 3.0
"""Seconds a target peer's peer port must refuse every connection (RST: nothing listens
there, so the process is not running) before the peer counts as dead and its origin runs move
to the next node of each run's rendezvous order (core/offload.py). The kernel refuses at once
however busy the machine is; the window covers peers started at the same moment that do not
listen yet, and a peer wrongly declared dead while it starts costs little: its runs come back
to it as soon as it accepts a connection, and what its stand-in fetched meanwhile it takes
from peers."""
PEER_DEAD_AFTER = 10.0
"""Seconds a target peer's peer port must fail to accept any connection (timeouts, or errors
other than a refusal: a host that is down or unreachable) before the peer counts as dead.
The signal is explicit either way: a peer merely not connected to us is alive (at fleet scale
a node connects to a few targets only, and connections come and go on a busy machine)."""
CONNECT_WAIT = 3.0
"""Seconds after the hash check that a download waits for its overlay neighbours (the peers it
dials: `Seen.peer_ip`) to connect before its first origin request, unless they all connected
or are dead: a node joining a swarm that already holds the data must see that its neighbours
have the pieces, and take nothing from the origin. Owners do not depend on it."""
PROBE_EVERY = 2.0  # seconds between liveness probes of one watched peer (per node, not dataset)
STUCK_AFTER = 20.0  # no progress this long: fetch pieces with no source from the origin anyway
#: No verified progress this long while libtorrent holds pieces written but never hashed
#: (`recheck_stranded`). Hashing a written piece takes milliseconds, even 16 MiB on a busy
#: disk well under this: pieces still unhashed are stranded, not queued.
STRANDED_AFTER = 10.0
OWNER_STALLED_AFTER = 5.0
"""Seconds an owner's bitfield may show no new piece of its own share before the runs its web
seed may be fetching can be taken over too (offload.takeover `stalled`)."""
LAG_AFTER = 3.0
"""Seconds after this node's web seed may start (`Job.checked_at`) before a node (itself or a
peer) can be judged lagging (offload.lagging): the nodes start together, and in the first
moments a web seed whose requests wait behind other torrents' at the gateway or a shared origin
holds none of its own pieces yet while its peers hold a few. Judged then, equal nodes left
their shares to each other, and two takers read the same runs (tests/test_fleet.py 4 x 12:
nodes judged lagging with 0 own pieces 0.9 s after the start; origin 1.03-1.07 x). A node that
joins a swarm already holding half the data is judged at once (offload.joined_late)."""
STALL_AFTER = 120.0  # no progress this long while the origin reports errors: Failed
STALL_FLOOR = 1024  # bytes/s: less received than this over STALL_AFTER from the origin is a stall
MAX_VERIFY_ROUNDS = 3
PASS_INTERVAL = 60.0  # a full level-triggered pass at least this often


class Stage(enum.Enum):
    FETCHING = "fetching"
    VERIFYING = "verifying"
    MOVING = "moving"
    DONE = "done"
    FAILED = "failed"

    @property
    def phase(self) -> Phase:
        """The status `phase` a download in this stage shows."""
        return _PHASE_OF[self]


_PHASE_OF: dict[Stage, Phase] = {
    Stage.FETCHING: "Fetching", Stage.VERIFYING: "Verifying", Stage.MOVING: "Verifying",
    Stage.DONE: "Ready", Stage.FAILED: "Failed"}


class FailureReason(enum.Enum):
    VERIFICATION_FAILED = "VerificationFailed"
    ALL_ORIGINS_FAILED = "AllOriginsFailed"
    STALLED = "Stalled"
    NO_ROOM = "NoRoom"
    ACTIVATION_REFUSED = "ActivationRefused"
    TORRENT_ERROR = "TorrentError"
    TIMED_OUT = "TimedOut"  # `--once --timeout` gave up on it


@dataclass(frozen=True)
class Failure:
    """Why a dataset stopped: a reason monitoring can match on, a message people can read."""

    reason: FailureReason
    message: str


def classify_torrent_error(message: str) -> Failure:
    """libtorrent's error text, typed: a full disk is not a corrupt download."""
    low = message.lower()
    if "no space left" in low or "disk quota" in low or "enospc" in low:
        return Failure(FailureReason.NO_ROOM, message)
    return Failure(FailureReason.TORRENT_ERROR, message)


# -- effects: plain data the shell applies, in order ------------------------------------------


@dataclass(frozen=True)
class WebSeed:
    """Turn the origin (through the gateway) on or off for a torrent. `pieces`: this node's
    origin share, the only pieces the gateway will read from the origin for it (libtorrent's
    web seed also takes pieces of priority FROM_PEERS once every owned piece is requested)."""

    info_hash: InfoHash
    on: bool
    pieces: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SetPriorities:
    info_hash: InfoHash
    priorities: tuple[int, ...]


@dataclass(frozen=True)
class StartVerify:
    """Check the version on disk against the lock, in a worker: every file there with its
    lock size, and `read` (the files libtorrent did not hash itself) read back and their
    pieces roots compared with the lock."""

    info_hash: InfoHash
    read: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recheck:
    """Have libtorrent hash what is on disk again and re-fetch the bad pieces."""

    info_hash: InfoHash


@dataclass(frozen=True)
class Move:
    """Move a verified version from staging into the store."""

    info_hash: InfoHash


@dataclass(frozen=True)
class Complete:
    """Record the version complete in the store (metadata written last), then activate it."""

    info_hash: InfoHash


@dataclass(frozen=True)
class MarkOriginBad:
    """Bytes of a piece that failed its hash check: the origins that served them are suspect."""

    info_hash: InfoHash
    path: str
    first: int
    last: int
    piece: int


@dataclass(frozen=True)
class Note:
    """Something worth a log line (the shell adds node and dataset)."""

    event: str
    level: str = "info"
    fields: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class StartJob:
    target: Target


@dataclass(frozen=True)
class DropJob:
    """Remove a torrent from the session (a failed job to be restarted, or one not wanted)."""

    info_hash: InfoHash


@dataclass(frozen=True)
class Activate:
    target: Target


@dataclass(frozen=True)
class MarkDraining:
    dataset: DatasetName


@dataclass(frozen=True)
class ClearDraining:
    dataset: DatasetName


@dataclass(frozen=True)
class Evict:
    dataset: DatasetName
    info_hash: InfoHash
    version: str | None
    reason: str


Effect = Union[WebSeed, SetPriorities, StartVerify, Recheck, Move, Complete, MarkOriginBad, Note,
               StartJob, DropJob, Activate, MarkDraining, ClearDraining, Evict, Pause, Resume]


# -- one download ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What the core remembers about one download between ticks."""

    info_hash: InfoHash
    dataset: DatasetName
    started: float  # monotonic
    stage: Stage = Stage.FETCHING
    verify_rounds: int = 0
    last_done: int = -1
    last_change: float = 0.0  # monotonic time bytes_done last moved
    checked_at: float | None = None  # when the first hash check had finished
    owners_for: tuple[NodeName, ...] | None = None  # the dead targets `owner_of` excludes
    owner_of: tuple[NodeName, ...] = ()  # per piece: the node that takes it from the origin
    stuck_noted: bool = False  # the stuck fallback's log line was written (once per episode)
    # Pieces the stuck fallback fetches from the origin, until each is held here or a peer has
    # it: the first of them to arrive is progress, and must not call the others off.
    stuck: frozenset[int] = frozenset()
    slow_noted: frozenset[int] = frozenset()  # pieces offload.slow_held named in a log line
    slow: frozenset[int] = frozenset()  # pieces offload.slow_held chose, until held
    # payload receive rate (bytes/s): the last RATE_WINDOW's and the highest seen, and where
    # the current window started (bytes received, monotonic time)
    rx_recent: float = 0.0
    rx_peak: float = 0.0
    rx_window: tuple[int, float] = (0, 0.0)
    run: int = 1  # pieces per ownership run (`owner_of`)
    taken: frozenset[int] = frozenset()  # runs of slower owners taken over (offload.takeover)
    # per node (this one too): when its own share was first seen done (offload.ahead_of)
    done_at: tuple[tuple[NodeName, float], ...] = ()
    # per piece, once this node's share is done: since when a peer has had it while it is
    # missing here (math.inf: not so); offload.slow_held
    waiting: tuple[float, ...] = ()
    waiting_avail: tuple[int, ...] = ()  # the holder counts `waiting` was measured with
    # per observed owner: own pieces its bitfield shows, and since when (`stalled_owners`)
    progress: tuple[tuple[NodeName, int, float], ...] = ()
    # This node and the peers seen to lag (offload.lagging), for the rest of the download: a
    # lagging owner's count rises again as it receives its runs from their takers, and if it
    # then fetched its share again it would fetch what the takers fetch.
    lagging: bool = False
    laggards: frozenset[NodeName] = frozenset()
    # per peer: when its bitfield was first seen; it is judged lagging LAG_AFTER after that,
    # as it judges itself LAG_AFTER after its own start
    met_at: tuple[tuple[NodeName, float], ...] = ()
    rx_mark: int = 0  # bytes received when the current stall window started
    rx_mark_at: float = 0.0  # monotonic start of the current stall window
    rechecked_at: float | None = None  # monotonic time of the last `recheck_stranded`
    failure: Failure | None = None
    error: str | None = None  # shown in status while the download goes on (origin trouble)

    @staticmethod
    def new(info_hash: InfoHash, dataset: DatasetName, now: float) -> "Job":
        return Job(info_hash, dataset, started=now, last_change=now, rx_mark_at=now)


@dataclass(frozen=True)
class Seen:
    """One tick's observation of a download: libtorrent, the gateway, the probe, the verifier."""

    me: NodeName
    targets: tuple[NodeName, ...]  # the dataset's target nodes in the inventory (with me)
    peer_ip: Mapping[NodeName, str]  # overlay neighbours (the peers we dial) -> their peer IP
    absent: frozenset[NodeName]  # target nodes that are dead (`peer_dead`)
    bytes_done: int
    bytes_total: int
    complete: bool  # libtorrent has every piece and is not checking
    checked: bool  # libtorrent's hash check of what was on disk has finished
    have: tuple[bool, ...]
    available: tuple[int, ...]  # per piece: connected peers that have it
    connected: frozenset[str]  # peer IPs connected to this torrent
    piece_size: int
    files: tuple[tuple[str, int], ...]  # the lock's files, for blaming failed pieces
    failed_pieces: tuple[int, ...] = ()  # hash failures since the last tick
    torrent_error: str | None = None
    origin_error: str | None = None  # the gateway's or the web seed's last error
    verify_result: tuple[str, ...] | None = None  # bad files once a verification finished
    # Pieces libtorrent holds without having hashed them in this process: loaded from resume
    # data after a clean stop (a superset is fine: it only means more is read back).
    trusted_pieces: tuple[int, ...] = ()
    # Pieces libtorrent has every block of, written, but neither passed nor failed: looked
    # for only when `look_for_stranded` says so (a walk of libtorrent's download queue).
    stranded: tuple[int, ...] = ()
    moved: bool = False  # the move into the store has finished
    web_seed_on: bool = False  # this node is reading from the origin now
    bytes_received: int = 0  # payload received so far, partial pieces included
    # Overlay neighbours' bitfields (connected ones only): who has started which run, and
    # whose own share is done (offload.takeover).
    peer_have: Mapping[NodeName, tuple[bool, ...]] = field(default_factory=dict)
    # `spec.split` (core/split.py): per piece, the target nodes holding its file; its origin
    # run goes to one of them. Empty: not split (every target holds every piece).
    holders: tuple[tuple[NodeName, ...], ...] = ()


def step_job(job: Job, seen: Seen, now: float) -> tuple[Job, list[Effect]]:
    """Advance one download by one tick. Returns the new job and the effects, in order."""
    if job.stage in (Stage.DONE, Stage.FAILED):
        return job, []
    if seen.torrent_error:
        return fail(job, classify_torrent_error(seen.torrent_error))
    effects: list[Effect] = list(_blame(job, seen))
    if seen.bytes_done != job.last_done:
        job = replace(job, last_done=seen.bytes_done, last_change=now)

    if job.stage is Stage.FETCHING:
        job = replace(job, error=seen.origin_error)
        if seen.complete:
            job = replace(job, stage=Stage.VERIFYING, verify_rounds=job.verify_rounds + 1)
            return job, [*effects, WebSeed(job.info_hash, False),
                         StartVerify(job.info_hash, unhashed_files(seen))]
        stalled = stall(job, seen, now)
        if stalled is not None:
            job, more = fail(job, stalled)
            return job, [*effects, *more]
        job = _next_stall_window(job, seen, now)
        job, more = share_origin(job, seen, now)
        job, again = recheck_stranded(job, seen, now)
        return job, [*effects, *more, *again]

    if job.stage is Stage.VERIFYING:
        if seen.verify_result is None:
            return job, effects
        bad = seen.verify_result
        if not bad:
            return replace(job, stage=Stage.MOVING), [*effects, Move(job.info_hash)]
        if job.verify_rounds >= MAX_VERIFY_ROUNDS:
            job, more = fail(job, Failure(
                FailureReason.VERIFICATION_FAILED,
                f"verification failed {job.verify_rounds} times: {', '.join(bad[:5])}"))
            return job, [*effects, *more]
        note = Note("verification found bad files; fetching them again", "warning",
                    (("files", list(bad[:5])), ("round", job.verify_rounds)))
        return replace(job, stage=Stage.FETCHING), [*effects, note, Recheck(job.info_hash)]

    # MOVING
    if not seen.moved:
        return job, effects
    return replace(job, stage=Stage.DONE), [*effects, Complete(job.info_hash)]


LOOK_EVERY = 0.2  # seconds between looks at libtorrent while nothing is about to change
LOOK_SOON = 0.02  # seconds: the next look when a download's next step is near
LOOK_QUIET = 1.0  # seconds without verified progress: a download's end is not near


def next_look(downloads: Sequence[tuple[Stage, int, float, float]]) -> float:
    """Seconds until the executor looks at its downloads again, from each one's (stage, bytes
    left, bytes/s, seconds since its last verified progress). LOOK_EVERY, or LOOK_SOON while
    a download is verifying or moving (quick local steps, each seen only at the next look),
    or sooner once its last bytes are due before the next look. Finishing is then not
    rounded up to a tick per step: three steps at LOOK_EVERY added 0.4-0.6 s to every
    download (bench/single_origin). Not for a download without verified progress for
    LOOK_QUIET: its last bytes are not about to land (a stranded piece, a stalled origin;
    libtorrent's rate decays slowly), and looking 50 times a second would only burn CPU."""
    delay = LOOK_EVERY
    for stage, left, rate, quiet in downloads:
        if stage in (Stage.VERIFYING, Stage.MOVING):
            return LOOK_SOON
        if stage is Stage.FETCHING and rate > 0 and left < rate * LOOK_EVERY \
                and quiet < LOOK_QUIET:
            delay = min(delay, max(LOOK_SOON, left / rate))
    return delay


def unhashed_files(seen: Seen) -> tuple[str, ...]:
    """The files holding a piece libtorrent did not hash itself (`Seen.trusted_pieces`), in
    torrent order: the ones a finished download's verification reads back."""
    trusted = sorted(set(seen.trusted_pieces))
    if not trusted or seen.piece_size <= 0:
        return ()
    out: list[str] = []
    first = 0  # each non-empty file starts on a piece boundary (origin_pool.piece_range)
    for path, size in seen.files:
        if size <= 0:
            continue
        end = first + -(-size // seen.piece_size)
        i = bisect.bisect_left(trusted, first)
        if i < len(trusted) and trusted[i] < end:
            out.append(path)
        first = end
    return tuple(out)


def stall(job: Job, seen: Seen, now: float) -> Failure | None:
    """A download that cannot finish: no verified progress for STALL_AFTER while the origin
    reports errors, or, while this node reads the origin, less than STALL_FLOOR bytes/s
    received over a whole STALL_AFTER window (an origin that trickles is stalled too)."""
    if seen.origin_error and now - job.last_change > STALL_AFTER:
        return Failure(FailureReason.STALLED,
                       f"no progress for {STALL_AFTER:.0f}s; {seen.origin_error}")
    window = now - job.rx_mark_at
    got = seen.bytes_received - job.rx_mark
    if seen.web_seed_on and window > STALL_AFTER and got < STALL_FLOOR * window:
        return Failure(FailureReason.STALLED,
                       f"the origin sent {got} bytes in {window:.0f}s (under "
                       f"{STALL_FLOOR} bytes/s): stalled")
    return None


def _next_stall_window(job: Job, seen: Seen, now: float) -> Job:
    """A new stall window starts every STALL_AFTER seconds, and whenever the origin is off
    (waiting for peers is not the origin's stall)."""
    if not seen.web_seed_on or now - job.rx_mark_at > STALL_AFTER:
        return replace(job, rx_mark=seen.bytes_received, rx_mark_at=now)
    return job


def fail(job: Job, failure: Failure) -> tuple[Job, list[Effect]]:
    """Stop a download: the origin goes off; the next pass drops and restarts it."""
    return (replace(job, stage=Stage.FAILED, failure=failure, error=failure.message),
            [WebSeed(job.info_hash, False),
             Note("dataset failed", "error", (("reason", failure.reason.value),
                                              ("error", failure.message)))])


def _blame(job: Job, seen: Seen) -> list[Effect]:
    """Pieces that failed their hash check: the gateway stops using the origins that served
    those bytes (pieces never span files in a hybrid torrent), so libtorrent's retry of the
    piece is served by another origin. (A recheck's failures raise no alert: a stranded
    piece, `recheck_stranded`, whose bytes may come from any request, is never blamed.)"""
    out: list[Effect] = []
    for piece in sorted(set(seen.failed_pieces)):
        where = piece_range(seen.files, seen.piece_size, piece)
        if where is not None:
            path, first, last = where
            out.append(MarkOriginBad(job.info_hash, path, first, last, piece))
    return out


def read_directly(alone: bool, split: bool, from_origin: bool, fresh: bool,
                  limited: bool = False, solo: bool = True) -> bool:
    """Whether a locked version is read straight from its source into staging, hashed as it is
    written (`lock`'s reader), instead of through libtorrent's web seed: when this node is its
    only target (no swarm to share the reading with), it is not split, it has an origin (not
    published by a node), nothing of it is on disk yet (no resume data, no file in staging,
    none linked from the object store), no `bandwidth.download` is set and it is the only
    download this node runs (`solo`; libtorrent enforces that limit, and shares bandwidth among
    downloads by priority: the read would not). libtorrent ingests a web seed at about
    250 MiB/s here, the direct read runs at the origin's and the disk's speed
    (bench.single_origin).

    Nothing is lost when it fails or stops: its files stay where libtorrent looks, and
    libtorrent's check keeps every good piece of them before the web seed (with the mirrors)
    fetches the rest. A read that matches the lock is seeded without that check."""
    return alone and not split and from_origin and fresh and not limited and solo


def hand_over_direct(others_fetching: int, paused: bool) -> bool:
    """Whether a direct read in progress stops, for libtorrent to go on from what it wrote:
    another download is fetching (its share by priority is libtorrent's to enforce), or the
    scheduler paused this one (libtorrent keeps a paused download's pieces)."""
    return others_fetching > 0 or paused


def look_for_stranded(job: Job, now: float) -> bool:
    """Whether this tick should look for stranded pieces (`Seen.stranded`): only while
    fetching, after STRANDED_AFTER without verified progress, and at most once per
    STRANDED_AFTER."""
    return (job.stage is Stage.FETCHING and now - job.last_change >= STRANDED_AFTER
            and (job.rechecked_at is None or now - job.rechecked_at >= STRANDED_AFTER))


def recheck_stranded(job: Job, seen: Seen, now: float) -> tuple[Job, list[Effect]]:
    """Pieces libtorrent wrote in full but never hashed, after STRANDED_AFTER without
    verified progress: libtorrent hashes what is on disk again (kept if good, fetched again
    if not), the one way to make it judge them.

    Seen with libtorrent 2.1.1 after a web seed sent bad bytes: a second copy of a block
    (the other web-seed connection's end-game request) arrives while the failed piece is
    being reset. Its hash job's result is dropped because the reset piece is no longer
    complete; then its write completes and marks the block finished. The piece now counts
    as downloaded, is never hashed and never requested again, and the download waits forever
    (tests/test_mirrors.py: about 1 run in 30 under load). `add_piece` cannot help: it hashes
    a piece only when its own write completes it. A recheck also drops the web seed's "this
    URL has a bad copy of the file" (libtorrent's reaction to a failed piece) with its
    connections."""
    if not seen.stranded or not look_for_stranded(job, now):
        return job, []
    pieces = tuple(sorted(seen.stranded))
    note = Note("pieces written but never hashed; hashing the version on disk again", "warning",
                (("pieces", len(pieces)), ("first", list(pieces[:8]))))
    return replace(job, rechecked_at=now), [note, Recheck(job.info_hash)]


def live_set(seen: Seen) -> tuple[NodeName, ...]:
    """The target nodes without a death signal, this node included. Not who is connected: at
    fleet scale a node connects to a few targets only, and connections come and go on a busy
    machine; owners computed from connections differ from node to node (issue 16)."""
    return tuple(sorted({seen.me} | (set(seen.targets) - seen.absent)))


def peer_dead(failing_since: float | None, now: float, refused: bool = False) -> bool:
    """The liveness rule: a peer is dead once every probe of its peer port since
    `failing_since` (the first failure after the last success, or None) has failed, for
    PEER_REFUSED_FOR seconds if the last failures were refusals, else PEER_DEAD_AFTER. One
    success makes it alive again at once."""
    if failing_since is None:
        return False
    return now - failing_since >= (PEER_REFUSED_FOR if refused else PEER_DEAD_AFTER)


def share_origin(job: Job, seen: Seen, now: float) -> tuple[Job, list[Effect]]:
    """Which missing pieces this node takes from the origin (core/offload.py), and the order
    of the effects: the web seed must never see raised priorities of pieces other nodes take
    from the origin, or libtorrent sends it one more range request for them, which the origin
    starts serving before the hang-up (measured: up to 1.25x origin bytes).

    Owners come from the targets (the same on every node), so nothing waits for peers to
    connect; a dead target's runs go to the next node of each run's rendezvous order."""
    if not seen.checked:
        return job, []
    checked_at = job.checked_at if job.checked_at is not None else now
    job = replace(job, checked_at=checked_at)
    effects: list[Effect] = []
    peers: dict[str, Sequence[bool]] = {str(n): h for n, h in seen.peer_have.items()}
    bits = {**peers, seen.me: seen.have}
    held = offload.Held.count(job.owner_of, bits)
    # A late joiner is judged by its first look at its peers, as they judge it by theirs
    # (their first sight of it): waiting for the rest of its neighbours first, it took a
    # third of the data from one of them in CONNECT_WAIT, no longer looked late, and fetched
    # the runs that peer, counting it a laggard, fetched too (bench.swarm --stagger 10).
    if not job.lagging and not seen.holders and offload.joined_late(seen.me, held):
        effects.append(_behind_note(job, seen))
        job = replace(job, lagging=True)
    waiting_for = {n for n, ip in seen.peer_ip.items()
                   if ip not in seen.connected and n not in seen.absent}
    if waiting_for and now - checked_at < CONNECT_WAIT:
        return job, effects  # give the neighbours a moment: they may hold the pieces already
    dead = tuple(sorted((set(seen.targets) & seen.absent) - {seen.me}))
    live = live_set(seen)
    if dead != job.owners_for or len(job.owner_of) != len(seen.have):
        targets = sorted(set(seen.targets) | {seen.me})
        run = offload.run_length(len(seen.have), seen.piece_size, len(targets))
        owner_of = tuple(NodeName(n) for n in (
            split.piece_owners(job.info_hash, seen.holders, run, dead) if seen.holders
            else offload.owners(job.info_hash, len(seen.have), targets, run, dead)))
        job = replace(job, owners_for=dead, owner_of=owner_of, run=run, done_at=())
        held = offload.Held.count(owner_of, bits)
        mine = sum(1 for o in owner_of if o == seen.me)
        effects.append(Note("origin shares", "info", (
            ("targets", len(targets)), ("dead", list(dead)), ("run", run),
            ("ownPieces", mine), ("pieces", len(owner_of)))))
    stuck = {p for p in job.stuck
             if p < len(seen.have) and not seen.have[p] and seen.available[p] == 0}
    if now - job.last_change > STUCK_AFTER:
        stuck |= {p for p, h in enumerate(seen.have) if not h and seen.available[p] == 0}
    if stuck != job.stuck:
        job = replace(job, stuck=frozenset(stuck))
    job, stalled = stalled_owners(job, seen, now)
    job = seen_done(job, seen, now)
    job = receive_rate(job, seen, now)
    judge = now - checked_at >= LAG_AFTER
    met = dict(job.met_at)
    if set(seen.peer_have) - set(met):
        met.update({n: now for n in seen.peer_have if n not in met})
        job = replace(job, met_at=tuple(sorted(met.items())))
    # A peer is judged as it judges itself: LAG_AFTER after it was first seen (a node that
    # joins late takes much from its peers in its first seconds and then no longer lags by
    # its own counts: judged at first sight, it was a laggard here only, and this node
    # fetched the runs it fetched too; bench.swarm --stagger 10), or at once if it joined
    # a swarm holding half the data.
    laggards = job.laggards | {n for n in seen.peer_have
                               if (judge and now - met[n] >= LAG_AFTER
                                   and offload.lagging(n, held))
                               or offload.joined_late(n, held)}
    if laggards != job.laggards:
        job = replace(job, laggards=frozenset(laggards))
    # Not for a split version: a taker must hold the run's file (core/split.py), and the
    # rendezvous order of a run is over all targets.
    slow: frozenset[int] = frozenset()
    if offload.share_done(seen.me, job.owner_of, seen.have) and seen.peer_have \
            and not seen.holders:
        rv = offload.Rendezvous(job.info_hash, set(seen.targets) | {seen.me})
        taken = offload.takeover(seen.me, rv, job.owner_of, job.run, seen.have, seen.available,
                                 peers, dead, stalled, job.laggards, dict(job.done_at), now)
        if not taken <= job.taken:
            effects.append(Note("taking over runs of slower owners", "info", (
                ("runs", len(taken - job.taken)),
                ("owners", sorted({job.owner_of[c * job.run] for c in taken - job.taken})))))
            job = replace(job, taken=job.taken | taken)
        done_nodes = {str(n) for n, _ in job.done_at}
        # since when each missing piece has had its holders: a new holder gets its own while
        # to send it (a node that fetched it from the origin, say)
        before = job.waiting if len(job.waiting) == len(seen.have) else ()
        had = job.waiting_avail if len(job.waiting_avail) == len(seen.have) else ()
        waiting = tuple(
            (before[p] if before and before[p] != math.inf and seen.available[p] <= had[p]
             else now)
            if not h and seen.available[p] else math.inf for p, h in enumerate(seen.have))
        # Chosen pieces stay chosen until held here or by a done node (from which they come):
        # fetching them makes the downlink busy again.
        slow = frozenset(p for p in job.slow if p < len(seen.have) and not seen.have[p]
                         and not any(p < len(peers[n]) and peers[n][p]
                                     for n in peers if n in done_nodes))
        if job.rx_recent <= IDLE_FRACTION * job.rx_peak:
            slow |= offload.slow_held(seen.me, rv, job.run, seen.have, peers, done_nodes,
                                      waiting, now, dead, job.laggards)
        job = replace(job, waiting=waiting, waiting_avail=seen.available, slow=slow)
    lag = job.lagging or (judge and not seen.holders
                          and offload.lagging(seen.me, held))
    if lag != job.lagging:
        effects.append(_behind_note(job, seen))
        job = replace(job, lagging=lag)
    d = offload.decide_offload(seen.me, job.info_hash, seen.have, seen.available, live, stuck,
                               job.owner_of, job.run, job.taken, lag=lag, slow=slow)
    others = [p for p in d.origin
              if job.owner_of[p] != seen.me and p // job.run not in job.taken and p not in slow]
    if slow - job.slow_noted:
        effects.append(Note("pieces only slow peers hold come from the origin", "info", (
            ("pieces", len(slow - job.slow_noted)),)))
        job = replace(job, slow_noted=job.slow_noted | slow)
    if others and not job.stuck_noted:
        effects.append(Note("no progress: pieces without a source come from the origin",
                            "warning", (("pieces", len(others)),
                                        ("since", round(now - job.last_change, 1)))))
    if bool(others) != job.stuck_noted:
        job = replace(job, stuck_noted=bool(others))
    if d.origin:
        effects += [SetPriorities(job.info_hash, d.priorities),
                    WebSeed(job.info_hash, True, d.origin)]
    else:
        effects += [WebSeed(job.info_hash, False), SetPriorities(job.info_hash, d.priorities)]
    return job, effects


def _behind_note(job: Job, seen: Seen) -> Note:
    return Note("behind the peers: leaving the rest of its origin share to them", "info", (
        ("ownHeld", offload.share_count(seen.me, job.owner_of, seen.have)),
        ("held", sum(map(bool, seen.have)))))


def seen_done(job: Job, seen: Seen, now: float) -> Job:
    """The job, remembering when this node and each peer seen were first done with their own
    shares (kept when a peer goes away; cleared when the shares change)."""
    known = dict(job.done_at)
    views: dict[NodeName, Sequence[bool]] = {**seen.peer_have, seen.me: seen.have}
    new = {n: now for n, bits in views.items()
           if n not in known and len(bits) == len(job.owner_of) > 0
           and offload.share_done(n, job.owner_of, bits)}
    if not new:
        return job
    return replace(job, done_at=tuple(sorted({**known, **new}.items())))


#: Seconds over which the payload receive rate is measured (`receive_rate`).
RATE_WINDOW = 2.0
#: A downlink receiving under this fraction of its highest rate so far is idle: what is
#: missing waits on slow peers, not on the downlink (offload.slow_held).
IDLE_FRACTION = 0.25


def receive_rate(job: Job, seen: Seen, now: float) -> Job:
    """The job with its receive rate measured over the last `RATE_WINDOW` seconds."""
    got, since = job.rx_window
    if since == 0.0 or seen.bytes_received < got:
        return replace(job, rx_window=(seen.bytes_received, now))
    if now - since < RATE_WINDOW:
        return job
    rate = (seen.bytes_received - got) / (now - since)
    return replace(job, rx_recent=rate, rx_peak=max(job.rx_peak, rate),
                   rx_window=(seen.bytes_received, now))


def stalled_owners(job: Job, seen: Seen, now: float) -> tuple[Job, frozenset[NodeName]]:
    """The observed owners whose bitfield has shown no new piece of their own share for
    OWNER_STALLED_AFTER seconds (and that have some left); the job remembers the counts."""
    before = {n: (count, since) for n, count, since in job.progress}
    progress, stalled = [], set()
    for n, bits in sorted(seen.peer_have.items()):
        mine = [bits[p] for p, o in enumerate(job.owner_of) if o == n and p < len(bits)]
        count = sum(mine)
        old, since = before.get(n, (-1, now))
        since = since if count == old else now
        progress.append((n, count, since))
        if count < len(mine) and now - since >= OWNER_STALLED_AFTER:
            stalled.add(n)
    return replace(job, progress=tuple(progress)), frozenset(stalled)


# -- one pass --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """What a pass decided about one dataset's status (the shell adds byte counters)."""

    phase: Phase
    target: Target | None = None
    version: str | None = None
    path: str | None = None
    info_hash: InfoHash | None = None
    bytes_total: int = 0
    complete: bool = False  # bytesDone = bytesTotal
    error: str | None = None
    keep: bool = False  # a download in flight: keep the status it has
    pinning: bool = False  # unlocked, its torrent not here yet: the pinner says more


@dataclass(frozen=True)
class PassDecision:
    rows: Mapping[DatasetName, Row]
    wanted: Mapping[InfoHash, DatasetName]  # every torrent the session must hold
    effects: tuple[Effect, ...]
    requeue_after: float  # when the next pass is due at the latest


def decide_pass(plan: Plan, observed: Mapping[str, ObservedDataset],
                jobs: Mapping[InfoHash, Stage], grace_period: float, now: float,
                max_active: int = 0, paused: frozenset[InfoHash] = frozenset()) -> PassDecision:
    """Turn a plan into effects: start, restart or keep downloads, activate complete versions,
    keep seeding suspended and draining ones, evict what is no longer wanted once its grace
    period is over. `now` is wall-clock (draining marks are epoch seconds). At most
    `max_active` downloads fetch (0: no cap; core/scheduling.py); `paused`: downloads in the
    session that a pass paused."""
    rows: dict[DatasetName, Row] = {}
    wanted: dict[InfoHash, DatasetName] = {}
    effects = _hold(plan, observed, jobs, rows, wanted, max_active, paused)
    effects += [MarkDraining(DatasetName(a.dataset)) for a in plan.actions
                if a.kind == "evict" and a.dataset not in plan.targets]
    effects += [ClearDraining(DatasetName(n)) for n in plan.targets]
    draining_left: list[float] = []
    for a in plan.actions:
        if a.kind != "evict" or a.info_hash is None:
            continue
        ih, name = InfoHash(a.info_hash), DatasetName(a.dataset)
        if ih in jobs and ih in wanted:
            continue
        obs = observed.get(a.dataset)
        left = _grace_left(obs, grace_period, now) if a.dataset not in plan.targets else 0.0
        v = obs.versions.get(a.info_hash) if obs else None
        if left > 0 and v is not None and v.complete:
            wanted[ih] = name  # keep seeding it to the new holders
            draining_left.append(left)
            rows[name] = Row("Draining", None, a.version, obs.link if obs else None, ih,
                             a.bytes_total, complete=True)
            continue
        effects += [DropJob(ih), Evict(name, ih, a.version, a.reason)]
    return PassDecision(rows, wanted, tuple(effects), requeue_after(rows, draining_left))


def _hold(plan: Plan, observed: Mapping[str, ObservedDataset], jobs: Mapping[InfoHash, Stage],
          rows: dict[DatasetName, Row], wanted: dict[InfoHash, DatasetName],
          max_active: int = 0, paused: frozenset[InfoHash] = frozenset()) -> list[Effect]:
    """The datasets this node must hold: their rows, the torrents to keep in the session, and
    the effects that start, restart, pause, resume or activate them."""
    effects: list[Effect] = []
    fetches: list[tuple[Target, InfoHash, Stage | None]] = []
    for a in plan.actions:
        t = plan.targets.get(a.dataset)
        name = DatasetName(a.dataset)
        if a.kind == "blocked":
            rows[name] = Row("Failed", None, a.version, a.path, error=a.reason)
        elif t is None:
            continue
        elif a.kind == "suspended":
            done = _complete(observed, t)
            rows[name] = _row(t, "Suspended", complete=done)
            if done and t.info_hash:
                wanted[InfoHash(t.info_hash)] = name
        elif a.kind in ("unchanged", "activate"):
            if a.kind == "activate":
                effects.append(Activate(t))
            rows[name] = _row(t, "Ready", complete=True)
            wanted[InfoHash(t.info_hash or "")] = name
        elif a.kind in ("fetch", "update") and t.info_hash is None:
            rows[name] = _row(t, "Pending", pinning=True)
        elif a.kind in ("fetch", "update") and t.info_hash is not None:
            ih = InfoHash(t.info_hash)
            wanted[ih] = name
            fetches.append((t, ih, jobs.get(ih)))
    return effects + _schedule(fetches, rows, max_active, paused)


def _schedule(fetches: Sequence[tuple[Target, InfoHash, Stage | None]],
              rows: dict[DatasetName, Row], max_active: int,
              paused: frozenset[InfoHash]) -> list[Effect]:
    """Start, restart, pause or resume the downloads to fetch, at most `max_active` fetching
    (verifying and moving ones do not count). Pauses come first: they free the bandwidth."""
    cands = [Candidate(ih, DatasetName(t.name), t.dataset.priority,
                       running=stage is Stage.FETCHING and ih not in paused,
                       failed=stage is Stage.FAILED)
             for t, ih, stage in fetches if stage in (None, Stage.FAILED, Stage.FETCHING)]
    sched = choose_active(cands, max_active)
    pauses: list[Effect] = []
    effects: list[Effect] = []
    for t, ih, stage in fetches:
        name = DatasetName(t.name)
        why = sched.waiting.get(ih)
        if why is not None:
            if stage is Stage.FAILED:  # shows its failure until a slot is free for the retry
                rows[name] = _row(t, "Failed", keep=True)
                continue
            if stage is Stage.FETCHING:
                if ih not in paused:
                    pauses.append(Pause(ih, why))
                rows[name] = _row(t, "Pending", keep=True)
            else:
                rows[name] = replace(_row(t, "Pending"), error=why)
            continue
        if stage is Stage.FAILED:
            effects += [DropJob(ih), StartJob(t)]  # level-triggered retry
        elif stage is None:
            effects.append(StartJob(t))
        elif stage is Stage.FETCHING and ih in paused:
            effects.append(Resume(ih))
        rows[name] = (_row(t, "Pending") if stage in (None, Stage.FAILED)
                      else _row(t, stage.phase, keep=True))
    return pauses + effects


def _complete(observed: Mapping[str, ObservedDataset], t: Target) -> bool:
    o = observed.get(t.name)
    v = o.versions.get(t.info_hash or "") if o else None
    return v is not None and v.complete


def _grace_left(obs: ObservedDataset | None, grace_period: float, now: float) -> float:
    """Seconds of `gracePeriod` left to a dataset no longer placed here (not marked yet: all)."""
    since = obs.draining_since if obs and obs.draining_since is not None else now
    return grace_period - (now - since)


def _row(t: Target, phase: Phase, complete: bool = False, keep: bool = False,
         pinning: bool = False) -> Row:
    lock: LockFile | None = t.dataset.lock
    return Row(phase, t, t.dataset.version, t.path,
               InfoHash(lock.info_hash) if lock else None, t.bytes_total,
               complete=complete and lock is not None, keep=keep, pinning=pinning)


def requeue_after(rows: Mapping[DatasetName, Row], draining_left: Sequence[float] = ()) -> float:
    """When the next pass is due at the latest: just after the first grace period ends, else
    PASS_INTERVAL. (Downloads that finish and torrents that arrive ask for a pass themselves.)"""
    if draining_left:
        return min(PASS_INTERVAL, max(0.0, min(draining_left)) + 0.5)
    return PASS_INTERVAL
