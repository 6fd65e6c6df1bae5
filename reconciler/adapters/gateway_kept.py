"""The gateway's end-game keep cache: the bytes read from origins last, by file and offset.

libtorrent's end game asks a second web-seed URL for blocks it has asked of the first, and a
read that ends early leaves bytes the origin already sent: both are served from here rather
than read from the origin again. Every relay step asks "kept bytes at this position?" and
"where do kept bytes begin after it?", so each file's offsets are a sorted index (bisect), not
scanned; chunks may overlap, and none is longer than the longest kept so far (`_longest`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import defaultdict, deque

Key = tuple[str, str, str]  # (dataset, infohash, file)


class _File:
    """One file's kept chunks: offset -> (bytes, origin index), and the offsets sorted."""

    def __init__(self) -> None:
        self.chunks: dict[int, tuple[bytes, int]] = {}
        self.offsets: list[int] = []
        self.longest = 0  # no chunk is longer: how far back `at` and `drop` look

    def pop(self, off: int) -> int:
        """Forget the chunk at `off`; returns its length (0 if none)."""
        old = self.chunks.pop(off, None)
        if old is None:
            return 0
        del self.offsets[bisect_left(self.offsets, off)]
        return len(old[0])


class Kept:
    """The last `limit` bytes read from origins, as chunks by (dataset, infohash, file) and
    offset: relayed, or read ahead for a request that ended first. Oldest out first."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.files: dict[Key, _File] = defaultdict(_File)
        self.order: deque[tuple[Key, int]] = deque()

    def add(self, key: Key, offset: int, chunk: bytes, origin: int) -> None:
        f = self.files[key]
        if not chunk or offset in f.chunks:
            return
        f.chunks[offset] = (chunk, origin)
        insort(f.offsets, offset)
        f.longest = max(f.longest, len(chunk))
        self.order.append((key, offset))
        self.size += len(chunk)
        while self.size > self.limit and self.order:
            k, off = self.order.popleft()
            old = self.files.get(k)
            if old is not None:
                self.size -= old.pop(off)
                if not old.chunks:
                    del self.files[k]

    def at(self, key: Key, pos: int) -> tuple[bytes, int]:
        """Kept bytes from `pos` on (one chunk's worth; empty if none) and their origin."""
        f = self.files.get(key)
        if f is None:
            return b"", -1
        j = bisect_right(f.offsets, pos)
        while j > 0 and f.offsets[j - 1] > pos - f.longest:  # chunks that may cover pos
            j -= 1
            off = f.offsets[j]
            chunk, origin = f.chunks[off]
            if pos < off + len(chunk):
                return chunk[pos - off:], origin
        return b"", -1

    def next_start(self, key: Key, pos: int, stop: int) -> int:
        """Where the first kept chunk after `pos` begins, or `stop`."""
        f = self.files.get(key)
        if f is None:
            return stop
        j = bisect_right(f.offsets, pos)
        return min(f.offsets[j], stop) if j < len(f.offsets) else stop

    def drop(self, key: Key, first: int, stop: int) -> None:
        """Every chunk with a byte in [first, stop)."""
        f = self.files.get(key)
        if f is None:
            return
        lo = bisect_right(f.offsets, first - f.longest)
        hi = bisect_left(f.offsets, stop)
        for off in [o for o in f.offsets[lo:hi] if first < o + len(f.chunks[o][0])]:
            self.size -= f.pop(off)

    def drop_origins(self, dataset: str, info_hash: str, origins: set[int]) -> None:
        """Everything these origins sent for this torrent (they sent bad bytes)."""
        for key, f in self.files.items():
            if key[:2] == (dataset, info_hash):
                for off in [o for o, (_, i) in f.chunks.items() if i in origins]:
                    self.size -= f.pop(off)
