"""Which origin serves a web-seed request: the dataset's `source`, then its `mirrors`.

Pure decision logic (time is passed in, nothing here does I/O), used by the gateway:

* load is spread over the healthy origins by hashing the request (file + offset), so the same
  range goes to the same origin while it stays healthy;
* a request that fails is retried on the next candidate (the gateway bounds the attempts);
* an origin that fails FAIL_THRESHOLD times in a row opens its circuit breaker: it is skipped
  for OPEN_FOR seconds, doubling on every failed trial up to OPEN_MAX; once that time is up the
  breaker is half-open and one trial request decides (success closes it, failure reopens it);
* an origin whose bytes failed a piece hash check is marked bad: breaker open for BAD_FOR.

`piece_range` maps a piece of a hybrid/v2 torrent to the one (file, byte range) it covers.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

FAIL_THRESHOLD = 3  # consecutive failures that open the breaker
OPEN_FOR = 30.0  # first open period, seconds
OPEN_MAX = 300.0  # open periods double up to this
BAD_FOR = 600.0  # an origin that served bytes failing a hash check
SERVED_MEMORY = 4096  # (file, range, origin) records kept to blame bad pieces on


def label(kind: str, described: Mapping[str, object], index: int) -> str:
    """A name for logs and status: `source` or `mirrors[i]`, and where (no secrets: only what
    `Origin.describe()` returns, which the lock records too)."""
    role = "source" if index == 0 else f"mirrors[{index - 1}]"
    where = next((str(described[k]) for k in ("baseUrl", "path", "bucket", "repo")
                  if described.get(k)), "")
    return f"{role} ({kind}{' ' + where if where else ''})"


@dataclass
class Breaker:
    failures: int = 0  # consecutive
    open_until: float | None = None  # None: closed
    open_for: float = 0.0  # length of the current/last open period
    trial: bool = False  # the one half-open trial request is under way
    last_error: str | None = None

    def state(self, now: float) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half-open"


@dataclass
class OriginPool:
    names: Sequence[str]
    breakers: list[Breaker] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.breakers:
            self.breakers = [Breaker() for _ in self.names]

    def candidates(self, key: str, now: float) -> list[int]:
        """Origins to try for the request `key`, in order: a half-open origin's one trial first,
        then the closed ones starting at a place chosen by hashing `key`. Open ones: none."""
        closed = [i for i, b in enumerate(self.breakers) if b.state(now) == "closed"]
        trials = [i for i, b in enumerate(self.breakers)
                  if b.state(now) == "half-open" and not b.trial]
        if closed:
            k = zlib.crc32(key.encode()) % len(closed)
            closed = closed[k:] + closed[:k]
        return trials + closed

    def begin(self, i: int, now: float) -> None:
        """A request goes to origin `i` now (takes the half-open trial slot if it is one)."""
        b = self.breakers[i]
        if b.state(now) == "half-open":
            b.trial = True

    def success(self, i: int, now: float) -> None:
        b = self.breakers[i]
        b.failures, b.open_until, b.open_for, b.trial = 0, None, 0.0, False

    def abandon(self, i: int) -> None:
        """A request to origin `i` ended without a verdict (the client hung up)."""
        self.breakers[i].trial = False

    def failure(self, i: int, now: float, error: str) -> None:
        b = self.breakers[i]
        b.last_error = error
        b.failures += 1
        if b.trial or b.state(now) == "half-open":
            b.trial = False
            self._open(b, now, min(OPEN_MAX, max(OPEN_FOR, b.open_for * 2)))
        elif b.open_until is None and b.failures >= FAIL_THRESHOLD:
            self._open(b, now, OPEN_FOR)

    def mark_bad(self, i: int, now: float, reason: str) -> None:
        b = self.breakers[i]
        b.last_error = reason
        b.trial = False
        self._open(b, now, max(BAD_FOR, b.open_for))

    @staticmethod
    def _open(b: Breaker, now: float, seconds: float) -> None:
        b.open_for = seconds
        b.open_until = now + seconds

    def available(self, now: float) -> bool:
        """Can any origin take a request now?"""
        return any(b.state(now) == "closed" or (b.state(now) == "half-open" and not b.trial)
                   for b in self.breakers)

    def summary(self) -> str:
        """`all origins failed: <name>: <last error>; ...`, the dataset's error with none left."""
        parts = [f"{n}: {b.last_error or 'unavailable'}" for n, b in zip(self.names, self.breakers)]
        return "all origins failed: " + "; ".join(parts)


@dataclass
class ServedLog:
    """Which origin served which (file, byte range) recently, to blame bad pieces on."""

    entries: deque[tuple[str, int, int, int]] = field(
        default_factory=lambda: deque(maxlen=SERVED_MEMORY))  # (file, first, last, origin)
    judged: deque[tuple[str, int, int]] = field(
        default_factory=lambda: deque(maxlen=SERVED_MEMORY))  # (file, first, last) blamed

    def record(self, path: str, first: int, last: int, origin: int) -> None:
        """Bytes [first, last] of `path` came from `origin`, recorded as they are relayed (a
        serving recorded only when its request ends would look younger than a retry of one of
        its pieces served meanwhile, and the retry would be blamed). A serving that continues
        the last one extends it, so a long request stays one record."""
        if last < first:
            return
        if self.entries:
            p, a, b, o = self.entries[-1]
            if p == path and o == origin and b + 1 == first:
                self.entries[-1] = (p, a, last, o)
                return
        self.entries.append((path, first, last, origin))

    def blame(self, path: str, first: int, last: int) -> set[int]:
        """The origins whose oldest servings of bytes [first, last] of `path` together cover
        them: the bytes that failed a hash check. Those bytes leave the log, so libtorrent's
        retry of the piece, which may be served (by another origin) before the failure is
        seen here, is judged only by its own result.

        No one, when bytes of the range no serving covers were blamed before: libtorrent
        kept part of a block across the failure (a web-seed response cut mid-block, resumed
        with a request for the rest) and the piece mixes the blamed origin's bytes with
        another's, which prove nothing about the other (tests/test_mirrors.py: the mirror
        blamed for 264 bytes it sent right, after the source's 16 120 bad ones)."""
        uncovered = [(first, last)]
        blamed: set[int] = set()
        kept: list[tuple[str, int, int, int]] = []
        for p, a, b, o in self.entries:  # oldest first
            if p != path or not any(a <= hi and b >= lo for lo, hi in uncovered):
                kept.append((p, a, b, o))
                continue
            blamed.add(o)
            uncovered = [r for u in uncovered for r in _minus(u, (a, b))]
            kept.extend((p, x, y, o) for x, y in _minus((a, b), (first, last)))
        self.entries = deque(kept, maxlen=self.entries.maxlen)
        mixed = any(p == path and a <= hi and b >= lo
                    for p, a, b in self.judged for lo, hi in uncovered)
        self.judged.append((path, first, last))
        return set() if mixed else blamed


def _minus(r: tuple[int, int], cut: tuple[int, int]) -> list[tuple[int, int]]:
    """Interval `r` without interval `cut` (inclusive bounds): zero, one or two intervals."""
    lo, hi = r
    out = []
    if cut[0] > lo:
        out.append((lo, min(hi, cut[0] - 1)))
    if cut[1] < hi:
        out.append((max(lo, cut[1] + 1), hi))
    return [(x, y) for x, y in out if x <= y]


def piece_range(files: Iterable[tuple[str, int]], piece_size: int, piece: int
                ) -> tuple[str, int, int] | None:
    """The (file, first byte, last byte) that piece `piece` covers in a hybrid/v2 torrent:
    files in torrent order, each non-empty one starting on a piece boundary (pad files between
    them), empty ones taking no room. None when the piece is past the end."""
    if piece < 0 or piece_size <= 0:
        return None
    first_piece = 0
    for path, size in files:
        if size <= 0:
            continue
        n = -(-size // piece_size)
        if piece < first_piece + n:
            start = (piece - first_piece) * piece_size
            return path, start, min(size, start + piece_size) - 1
        first_piece += n
    return None


def piece_ranges(files: Iterable[tuple[str, int]], piece_size: int, pieces: Iterable[int]
                 ) -> dict[str, tuple[tuple[int, int], ...]]:
    """The (first byte, last byte) ranges of each file that `pieces` cover, contiguous ones
    merged: what the gateway may read from the origin for a node's share (same layout as
    piece_range)."""
    starts: list[tuple[int, str, int]] = []  # (first piece, path, size) of non-empty files
    first_piece = 0
    for path, size in files:
        if size > 0:
            starts.append((first_piece, path, size))
            first_piece += -(-size // piece_size)
    out: dict[str, list[tuple[int, int]]] = {}
    i = 0
    for piece in sorted(p for p in set(pieces) if 0 <= p < first_piece):
        while i + 1 < len(starts) and starts[i + 1][0] <= piece:
            i += 1
        at, path, size = starts[i]
        first = (piece - at) * piece_size
        last = min(size, first + piece_size) - 1
        ranges = out.setdefault(path, [])
        if ranges and ranges[-1][1] + 1 == first:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
    return {path: tuple(r) for path, r in out.items()}


def covers(ranges: Sequence[tuple[int, int]], first: int, last: int) -> bool:
    """Is [first, last] inside one of `ranges` (merged, sorted: piece_ranges)?"""
    return any(a <= first and last <= b for a, b in ranges)
