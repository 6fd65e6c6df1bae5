"""`read_parallel` against a real HTTP origin that caps each connection."""

import asyncio

import pytest

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.sources import Origin, OriginContext, OriginError, OriginFile
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.adapters.sources.parallel import read_parallel
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
