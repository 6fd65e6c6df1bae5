"""Splitting one byte range into parts that are read from an origin concurrently.

Object stores and CDNs cap each connection (tens of MB/s on S3, far less on a busy HTTP
server), so one stream per request leaves most of an origin's bandwidth unused; `aria2c -x16`
and `s5cmd` read many ranges at once. Parts are big enough that a request's latency is paid
rarely, and small enough that `streams` of them in flight keep the memory bounded.
"""

from __future__ import annotations

MIN_PART = 128 << 10  # below this, a part's latency costs more than its transfer saves
MAX_PART = 4 << 20  # what one part may buffer: memory is at most streams × MAX_PART


def split_range(offset: int, length: int, streams: int, min_part: int = MIN_PART,
                max_part: int = MAX_PART) -> list[tuple[int, int]]:
    """`(offset, length)` parts covering the range in order: about `length / streams` each,
    clamped to [min_part, max_part], so a range is spread over every stream when it is large
    enough to pay for it."""
    if length <= 0:
        return []
    streams = max(1, streams)
    part = -(-length // streams)  # ceil
    part = max(min_part, min(max_part, part))
    return [(offset + i, min(part, length - i)) for i in range(0, length, part)]


#: A part the origin was already asked for when its reader stops (libtorrent hung up on the
#: gateway) is read on to its end if at most this much of it is left; a longer rest is
#: cancelled. See `finish_on_close`.
FINISH_LEFT = 2 * MIN_PART


def finish_on_close(asked: bool, length: int, received: int,
                    max_left: int = FINISH_LEFT) -> bool:
    """Whether a part still being read when its reader stops is read to its end (kept for the
    next request of those bytes) rather than cancelled. An origin without a per-connection
    cap writes a whole short part into its socket at once, so cancelling it saves nothing:
    the bytes were sent, dropped with the connection, and sent again when libtorrent asked
    for them anew after the hang-up (bench.swarm --slow-node 10, origin trace: 3.45 MiB of
    64, 0.054x of a 0.14x excess). A part not yet asked for costs nothing to cancel, and a
    long rest may not have been sent yet."""
    return asked and 0 <= length - received <= max_left
