"""A gateway request that follows another one (end game): it gets a copy of each chunk the
older request relays from the follower's position on, instead of reading the origin again
(see `gateway_relay.Relay`)."""

from __future__ import annotations

import asyncio
from collections import deque


class Follower:
    """A request waiting for bytes another request is reading (see `Relay.run`)."""

    def __init__(self, pos: int) -> None:
        self.fed = pos  # the next byte it needs
        self.chunks: deque[bytes] = deque()
        self.ended = False  # the leader has no more to give
        self.changed = asyncio.Event()

    def feed(self, at: int, chunk: bytes) -> None:
        if at <= self.fed < at + len(chunk):
            piece = chunk[self.fed - at:]
            self.chunks.append(piece)
            self.fed += len(piece)
            self.changed.set()

    def end(self) -> None:
        self.ended = True
        self.changed.set()


