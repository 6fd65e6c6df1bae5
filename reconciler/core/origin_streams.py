"""How many origin range requests a node's web-seed gateway keeps in flight.

Many concurrent requests are what an origin that caps each connection needs (S3, a CDN, a busy
web server: `aria2c -x16`). They are also what hurts when the node's own link is the narrow
part: 64 requests sharing a 0.8 MiB/s downlink each bring 12 KiB/s, the parts all end together
after seconds, and nothing becomes a whole piece until then. When the node's share changes
meanwhile (it is judged lagging and the others take its runs over), every byte of those parts
was read from the origin for nothing (bench.swarm --slow-node 10, origin trace: 3.3 of the
slow node's 4.25 MiB fetched again by another node).

So the count grows only while it adds throughput, as TCP's window does: it starts at `START`
and doubles after each `WINDOW` in which every allowed request was in use and the origin
brought at least `GAIN` times the rate it brought at half the count. A doubling that did not
pay is undone, and tried again after `HOLD`. A per-connection cap doubles the rate with the
count, so `START` reaches 64 in four windows; a full link does not, and keeps the few
requests that fill it, in order, so what arrives becomes pieces at once.

Pure: the gateway feeds in the bytes it counted and how busy its requests were (`observe`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

START = 4  # requests in flight before anything is known
WINDOW = 1.0  # seconds of full use over which a count's rate is measured
GAIN = 1.5  # a doubling is kept when the rate rose at least this much (a cap: about 2x)
HOLD = 5.0  # seconds before a doubling that did not pay is tried again


@dataclass(frozen=True)
class StreamLimit:
    """The count of origin requests allowed in flight now, and what it is being judged on."""

    ceiling: int  # the node's `originConnections`
    limit: int = START
    since: float | None = None  # when the current window began (None: not measuring)
    bytes_at: int = 0  # bytes counted when it began
    full: bool = True  # every request allowed was in use at every observation since
    below: float | None = None  # the rate at half the current count, if that was measured
    hold_until: float = 0.0  # no doubling before this (one that did not pay was undone)

    @staticmethod
    def new(ceiling: int) -> "StreamLimit":
        return StreamLimit(ceiling=max(1, ceiling), limit=max(1, min(START, ceiling)))


def observe(s: StreamLimit, now: float, counted: int, busy: int, waiting: int) -> StreamLimit:
    """The limit after one observation: `counted` bytes brought by the origin so far (all
    reads, monotonic), `busy` requests in flight, `waiting` reads queued for one. A window
    in which some allowed request sat unused says nothing about more of them: it is dropped."""
    full = busy >= s.limit or waiting > 0
    if s.since is None:
        return replace(s, since=now, bytes_at=counted, full=full) if full else s
    if not full:
        return replace(s, since=None, full=True)
    if now - s.since < WINDOW:
        return s
    rate = (counted - s.bytes_at) / (now - s.since)
    fresh = replace(s, since=now, bytes_at=counted, full=True)
    if s.below is not None and rate < GAIN * s.below:  # the doubling did not pay: undo it
        return replace(fresh, limit=max(1, s.limit // 2), below=None, hold_until=now + HOLD)
    if s.limit >= s.ceiling or now < s.hold_until:
        return replace(fresh, below=None)
    return replace(fresh, limit=min(s.ceiling, 2 * s.limit), below=rate)
