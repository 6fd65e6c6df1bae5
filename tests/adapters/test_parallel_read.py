"""`read_parallel` against a real HTTP origin that caps each connection."""

import asyncio

import pytest

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.sources import Origin, OriginContext, OriginError, OriginFile
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.adapters.sources.parallel import (JUDGED_PART, PROBE_SECONDS, REPROBE_EVERY,
                                                   SLOWER, Pace, is_fast, read_parallel)
from reconciler.core.ranges import MAX_PART, MIN_PART, finish_on_close
from reconciler.model.desired import HttpSource

DATA = pseudo_random(3_000_000, "par")


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "o", {"f.bin": DATA})).start()
    yield server
    server.stop()


async def collect(it) -> bytes:
    return b"".join([c async for c in it])


async def test_bytes_come_in_order_through_many_connections(tmp_path, origin):
    origin.conn_rate = 4_000_000  # per response: concurrency is what makes it fast
    seen: list[int] = []
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        got = await collect(read_parallel(o, "f.bin", 1234, 2_500_000, streams=8,
                                          on_bytes=seen.append))
    assert got == DATA[1234:1234 + 2_500_000]
    assert sum(seen) == 2_500_000
    assert origin.max_active > 1  # really concurrent
    assert origin.max_active <= 8


async def test_slots_bound_the_connections_across_readers(tmp_path, origin):
    slots = asyncio.Semaphore(3)
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        a, b = await asyncio.gather(
            collect(read_parallel(o, "f.bin", 0, 1_500_000, streams=8, slots=slots)),
            collect(read_parallel(o, "f.bin", 1_500_000, 1_500_000, streams=8, slots=slots)))
    assert a + b == DATA
    assert origin.max_active <= 3


async def test_a_failing_part_raises_after_the_good_bytes_before_it(tmp_path, origin):
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        got = bytearray()
        with pytest.raises(OriginError):
            # Past the end of the file: the origin sends fewer bytes than asked for.
            async for chunk in read_parallel(o, "f.bin", 2_000_000, 1_500_000, streams=4,
                                             min_part=256 << 10):
                got += chunk
        assert bytes(got) == DATA[2_000_000:2_000_000 + len(got)]


async def test_closing_early_cancels_reads_in_flight(tmp_path, origin):
    origin.conn_rate = 200_000
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        it = read_parallel(o, "f.bin", 0, len(DATA), streams=6)
        first = await anext(it)
        assert first == DATA[:len(first)]
        await it.aclose()
    for _ in range(100):  # the server notices the hang-ups within a few chunks
        if origin.active == 0:
            break
        await asyncio.sleep(0.05)
    assert origin.active == 0


async def test_closing_early_reads_short_parts_in_flight_to_their_end(tmp_path, origin):
    """Parts already asked of the origin with at most `FINISH_LEFT` left are read on after the
    reader closed, their bytes handed to `on_unread` (the gateway keeps them for the next
    request): an uncapped origin has sent them already, and cancelling only made it send them
    again (bench.swarm --slow-node 10 origin trace). Parts not yet asked for are not asked."""
    origin.conn_rate = 400_000  # 128 KiB parts take ~0.3 s each: still in flight at the close
    part = MIN_PART
    unread: dict[int, bytes] = {}
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        it = read_parallel(o, "f.bin", 0, 16 * part, streams=4, min_part=part, max_part=part,
                           on_unread=lambda at, c: unread.__setitem__(at, c))
        first = await anext(it)
        await it.aclose()
    at, got = len(first), b""
    while at in unread:
        got += unread[at]
        at += len(unread[at])
    assert at == 4 * part == len(first) + sum(len(c) for c in unread.values())  # by aclose
    for _ in range(100):  # the server's own count ends a moment after its last byte
        if origin.active == 0:
            break
        await asyncio.sleep(0.05)
    assert got == DATA[len(first):4 * part]
    assert origin.bytes_sent == 4 * part  # the 4 parts in flight, once; the other 12 not asked
    assert finish_on_close(True, part, 0) and not finish_on_close(False, part, 0)


async def test_a_cancelled_reader_finishes_no_part(tmp_path, origin):
    origin.conn_rate = 100_000
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)

        async def reader() -> None:
            async for _ in read_parallel(o, "f.bin", 0, 8 * MIN_PART, streams=4,
                                         min_part=MIN_PART, max_part=MIN_PART):
                await asyncio.sleep(10)  # holds the generator at a chunk

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.3)
        task.cancel()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - t0 < 1.0  # not the ~1.3 s the parts in flight would take
    for _ in range(100):
        if origin.active == 0:
            break
        await asyncio.sleep(0.05)
    assert origin.active == 0


class _SlowStart(Origin):
    """A real in-memory origin whose range starting at `slow_at` answers last: the parts
    after it arrive first and must wait for it."""
    kind = "mem"

    def __init__(self, data: bytes, slow_at: int) -> None:
        self.data, self.slow_at, self.order = data, slow_at, []  # type: list[int]

    async def list_files(self) -> list[OriginFile]:
        return [OriginFile("f.bin", len(self.data))]

    async def read(self, path, offset=0, length=None):
        if offset == self.slow_at:
            await asyncio.sleep(0.3)
        self.order.append(offset)
        end = len(self.data) if length is None else offset + length
        for i in range(offset, end, 10_000):
            yield self.data[i:min(end, i + 10_000)]


async def test_a_slow_part_does_not_reorder_the_bytes():
    for slow_at in (0, 256 << 10):
        o = _SlowStart(DATA, slow_at)
        got = await collect(read_parallel(o, "f.bin", 0, 1 << 20, streams=4))
        assert got == DATA[:1 << 20]
        assert o.order[-1] == slow_at  # it really finished last


class _Memory(Origin):
    """A real in-memory origin, as fast as the event loop: it records each range asked."""
    kind = "mem"

    def __init__(self, data: bytes) -> None:
        self.data, self.asked = data, []  # type: bytes, list[tuple[int, int]]

    async def list_files(self) -> list[OriginFile]:
        return [OriginFile("f.bin", len(self.data))]

    async def read(self, path, offset=0, length=None):
        end = len(self.data) if length is None else offset + length
        self.asked.append((offset, end - offset))
        for i in range(offset, end, 64 << 10):
            yield self.data[i:min(end, i + (64 << 10))]


def test_is_fast_asks_for_a_whole_max_part_within_the_probe_time():
    assert is_fast(MAX_PART, PROBE_SECONDS)
    assert is_fast(JUDGED_PART, PROBE_SECONDS * JUDGED_PART / MAX_PART)
    assert not is_fast(JUDGED_PART, PROBE_SECONDS)  # 1 MiB in 0.15 s: 6.7 MiB/s, a cap


def test_pace_probes_first_then_every_so_often_while_slow():
    pace = Pace()
    assert pace.probe_next()  # nothing known
    pace.fast = True
    assert not any(pace.probe_next() for _ in range(3 * REPROBE_EVERY))
    pace.fast = False
    probes = [pace.probe_next() for _ in range(2 * REPROBE_EVERY)]
    assert probes.count(True) == 2 and probes[REPROBE_EVERY - 1]


def test_pace_forgets_fast_only_for_a_part_far_slower_than_a_probe():
    pace = Pace()
    pace.fast = True
    pace.observe(MAX_PART, PROBE_SECONDS * 2)  # parts sharing a fast origin: still fast
    assert pace.fast
    pace.observe(JUDGED_PART // 2, 10.0)  # too short to show a speed
    assert pace.fast
    pace.observe(MAX_PART, PROBE_SECONDS * (SLOWER + 1))  # a cap
    assert pace.fast is False


async def test_a_fast_origin_is_read_in_parts_of_max_part_after_a_probe():
    data = pseudo_random(40 << 20, "fast")
    o, pace = _Memory(data), Pace()
    got = await collect(read_parallel(o, "f.bin", 100, 20 << 20, streams=64, pace=pace))
    assert got == data[100:100 + (20 << 20)]
    assert pace.fast is True
    sizes = [n for _, n in o.asked]
    # The probe: the first of 64 parts, then twice as long each up to a judged one...
    first = -(-(20 << 20) // 64)
    assert sizes[:3] == [first, 2 * first, 4 * first] and 4 * first >= JUDGED_PART
    # ...then parts of MAX_PART; and the next read has no probe.
    assert set(sizes[3:-1]) == {MAX_PART}
    o.asked.clear()
    got = await collect(read_parallel(o, "f.bin", 0, 16 << 20, streams=64, pace=pace))
    assert got == data[:16 << 20] and o.asked == [(i, MAX_PART) for i in range(0, 16 << 20, MAX_PART)]


async def test_a_capped_origin_is_split_over_every_stream_after_the_probe(tmp_path, origin):
    origin.conn_rate = 400_000  # per connection: 256 KiB take 0.65 s, far past the probe
    pace, seen = Pace(), []  # type: Pace, list[int]
    async with OriginContext(tmp_path) as ctx:
        o = HttpOrigin(HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)
        got = await collect(read_parallel(o, "f.bin", 0, 2_400_000, streams=8,
                                          on_bytes=seen.append, pace=pace))
    assert got == DATA[:2_400_000]
    assert pace.fast is False
    assert origin.max_active > 4  # the rest went through every stream at once
    # No part was cut short: the origin sent exactly what was counted, nothing unread.
    for _ in range(100):
        if origin.active == 0:
            break
        await asyncio.sleep(0.05)
    assert sum(seen) == 2_400_000 == origin.bytes_sent


async def test_every_chunk_is_handed_on_with_its_offset_as_it_arrives():
    o = _SlowStart(DATA, 0)  # the first part comes last: the others arrive before it
    placed = bytearray(1 << 20)
    arrived: list[int] = []

    def on_chunk(offset: int, chunk: bytes) -> None:
        placed[offset:offset + len(chunk)] = chunk
        arrived.append(offset)

    got = await collect(read_parallel(o, "f.bin", 0, 1 << 20, streams=4, on_chunk=on_chunk))
    assert got == bytes(placed) == DATA[:1 << 20]
    assert arrived != sorted(arrived)  # handed on as they came, not in the reader's order
