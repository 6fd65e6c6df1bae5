"""The gateway's origin requests in flight: as many as pay (adapters/origin_gate.py), against
real HTTP origins with a real aiohttp client."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.gateway import Gateway
from reconciler.adapters.origin_gate import OriginGate
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.core.origin_streams import START
from reconciler.model.desired import HttpSource

DATA = pseudo_random(6_000_000, "gate")


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "o", {"f.bin": DATA})).start()
    yield server
    server.stop()


async def _read_through_gateway(tmp_path, server: OriginServer, nbytes: int) -> Gateway:
    gw = Gateway()
    async with OriginContext(tmp_path) as ctx:
        await gw.start()
        url = gw.register("ds", "ih", "ds", (("f.bin", len(DATA)),), [HttpOrigin(
            HttpSource(base_url=server.url + "/", files=("f.bin",)), ctx.http)])
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin",
                                      headers={"Range": f"bytes=0-{nbytes - 1}"}) as r:
                    assert r.status == 206 and await r.read() == DATA[:nbytes]
        finally:
            await gw.stop()
    return gw


async def test_an_origin_that_caps_each_connection_gets_more_of_them(tmp_path, origin):
    origin.conn_rate = 100_000  # 4 requests: 0.4 MB/s; each doubling doubles it
    gw = await _read_through_gateway(tmp_path, origin, len(DATA))
    assert gw.gate.limit >= 4 * START
    assert origin.max_active > 2 * START
    assert gw.bytes_served["ds"] == len(DATA)


async def test_an_origin_whose_bandwidth_is_full_keeps_the_few_requests_that_fill_it(
        tmp_path, origin):
    # The whole origin at 0.8 MB/s (as a node's own slow link would be): more requests in
    # flight bring nothing more, so a doubling is tried, undone, and parts come in order.
    origin.rate = 800_000
    gw = await _read_through_gateway(tmp_path, origin, 4_000_000)
    assert gw.gate.limit == START
    assert origin.max_active <= 2 * START
    assert gw.bytes_served["ds"] == 4_000_000


async def test_places_go_in_the_order_asked_and_a_cancelled_waiter_gives_its_place_back():
    gate = OriginGate(asyncio.Semaphore(64), 64)
    order: list[int] = []
    release = asyncio.Event()

    async def use(i: int) -> None:
        async with gate:
            order.append(i)
            await release.wait()

    tasks = [asyncio.create_task(use(i)) for i in range(START + 3)]
    await asyncio.sleep(0.05)
    assert order == list(range(START)) and gate.busy == START  # the rest wait, in order
    tasks[START].cancel()  # a waiter cancelled before its turn: never counted
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == list(range(START)) + [START + 1, START + 2]
    assert gate.busy == 0 and not gate._queue
    assert gate.slots._value == 64  # every node slot given back


async def test_a_waiter_cancelled_as_it_gets_its_place_passes_it_on():
    gate = OriginGate(asyncio.Semaphore(64), 1)
    async with gate:
        waiter = asyncio.create_task(gate.__aenter__())
        other = asyncio.create_task(gate.__aenter__())
        await asyncio.sleep(0.01)
    # the place went to `waiter` as the block ended; it is cancelled before it runs
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(other, 1.0)  # ...so the place passed on
    assert gate.busy == 1
    await gate.__aexit__(None, None, None)
    assert gate.busy == 0 and gate.slots._value == 64
