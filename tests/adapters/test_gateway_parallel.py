"""The gateway reads each libtorrent request through several origin connections (issue 13):
against real HTTP origins that cap each connection, with a real aiohttp client."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.gateway import Gateway, seed_urls
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.model.desired import HttpSource

DATA = pseudo_random(2_000_000, "gwp")


@pytest.fixture
def servers(tmp_path):
    """Two origins with the same file: `a` and `b` (a mirror)."""
    started = [OriginServer(write_data(tmp_path / n, {"f.bin": DATA})).start() for n in "ab"]
    yield started
    for s in started:
        s.stop()


async def sent(server: OriginServer, expected: int) -> int:
    """The origin's count once it reaches `expected` (its thread counts a chunk after the
    write returns, which may be after the client has it), or what it is after a second."""
    for _ in range(100):
        if server.bytes_sent >= expected:
            break
        await asyncio.sleep(0.01)
    return server.bytes_sent


def http(server: OriginServer, ctx: OriginContext) -> HttpOrigin:
    return HttpOrigin(HttpSource(base_url=server.url + "/", files=("f.bin",)), ctx.http)


async def serve(gw: Gateway, ctx: OriginContext, *origins: OriginServer) -> str:
    await gw.start()
    return gw.register("ds", "ih", "ds", (("f.bin", len(DATA)),),
                       [http(o, ctx) for o in origins])


async def test_one_request_is_read_through_several_origin_connections(tmp_path, servers):
    a = servers[0]
    a.conn_rate, a.latency = 2_000_000, 0.05
    gw = Gateway()
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, a)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin",
                                      headers={"Range": "bytes=1000-1999999"}) as r:
                    assert r.status == 206 and await r.read() == DATA[1000:]
        finally:
            await gw.stop()
    assert a.max_active > 1
    # Every byte read from the origin is counted once, none twice, none skipped.
    assert gw.bytes_served["ds"] == len(DATA) - 1000 == await sent(a, len(DATA) - 1000)


async def test_origin_connections_bound_all_requests_together(tmp_path, servers):
    a = servers[0]
    a.conn_rate, a.latency = 2_000_000, 0.05
    gw = Gateway(origin_connections=3)
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, a)
        try:
            async with aiohttp.ClientSession() as client:
                async def get(first: int, last: int) -> bytes:
                    # Two web-seed URLs of one torrent: two libtorrent connections.
                    u = seed_urls(url, 2)[first // 1_000_000]
                    async with client.get(f"{u}/ds/f.bin",
                                          headers={"Range": f"bytes={first}-{last}"}) as r:
                        assert r.status == 206
                        return await r.read()
                x, y = await asyncio.gather(get(0, 999_999), get(1_000_000, 1_999_999))
        finally:
            await gw.stop()
    assert x + y == DATA
    assert 1 < a.max_active <= 3
    assert gw.bytes_served["ds"] == len(DATA) == await sent(a, len(DATA))


async def test_a_mirror_takes_over_mid_request_at_the_first_missing_byte(tmp_path, servers):
    """The first origin tried has only the first 700,001 bytes (it sends short ranges past
    that): the bytes before are relayed, the mirror is asked for the rest only, and the
    client gets one exact body. ServedLog blames each origin for what it sent."""
    gw = Gateway()
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, *servers)
        entry = gw._entries[("ds", "ih")]
        first = entry.pool.candidates("f.bin:0", time.monotonic())[0]
        short, mirror = servers[first], servers[1 - first]
        (short.root / "f.bin").write_bytes(DATA[:700_001])
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin") as r:
                    assert r.status == 200 and await r.read() == DATA
        finally:
            await gw.stop()
    resumed = [rng for _, _, rng in mirror.requests]
    assert resumed and min(int(r.removeprefix("bytes=").split("-")[0]) for r in resumed) == 700_001
    assert await sent(short, 700_001) == 700_001
    assert await sent(mirror, len(DATA) - 700_001) == len(DATA) - 700_001
    assert gw.bytes_served["ds"] == len(DATA)
    assert entry.served.blame("f.bin", 0, 700_000) == {first}
    assert entry.served.blame("f.bin", 700_001, len(DATA) - 1) == {1 - first}
    assert "ds" not in gw.errors


async def test_a_client_hanging_up_cancels_the_origin_reads(tmp_path, servers):
    a = servers[0]
    a.conn_rate = 100_000  # 2 MB would take many seconds per connection
    # Two parts in flight of the 16: the hang-up is seen at the next write, by when the parts
    # in flight may have finished, so with all 16 in flight nothing would be left to cancel.
    gw = Gateway(origin_connections=2)
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, a)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin") as r:
                    assert await r.content.readexactly(1000) == DATA[:1000]
                    for _ in range(100):  # the parts after the first start too
                        if a.active > 1:
                            break
                        await asyncio.sleep(0.05)
                    assert a.active > 1
                    r.close()
            for _ in range(200):  # bounded: the origin notices within a few chunks
                if a.active == 0 and not gw._active:
                    break
                await asyncio.sleep(0.05)
            assert a.active == 0 and not gw._active
            assert a.bytes_sent < len(DATA)
            assert gw.bytes_served["ds"] <= a.bytes_sent  # counted as received, never more
            # What was read ahead is kept: asked again (a download resuming), the file costs
            # the origin only the bytes it had not sent yet.
            a.conn_rate = None
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin") as r:
                    assert await r.read() == DATA
            assert gw.bytes_served["ds"] == len(DATA)
        finally:
            await gw.stop()


async def test_every_seed_url_serves_the_torrent_and_others_are_unknown(tmp_path, servers):
    gw = Gateway()
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, servers[0])
        urls = seed_urls(url, 4)
        try:
            assert len(set(urls)) == 4 and all(gw.secret in u for u in urls)
            async with aiohttp.ClientSession() as client:
                for u in urls:
                    async with client.get(f"{u}/ds/f.bin", headers={"Range": "bytes=5-9"}) as r:
                        assert r.status == 206 and await r.read() == DATA[5:10]
                for bad in (url + ".x1", url + ".s", url + ".s1234", url + "x"):
                    async with client.get(f"{bad}/ds/f.bin") as r:
                        assert r.status == 404, bad
        finally:
            await gw.stop()
    assert gw.bytes_served["ds"] == 5  # a block asked again is served from the first read


def test_origin_connections_must_be_positive():
    with pytest.raises(ValueError):
        Gateway(origin_connections=0)


async def test_a_block_asked_again_follows_the_request_reading_it(tmp_path, servers):
    """libtorrent's end game: a second web-seed connection asks for a 16 KiB block that the
    first connection's request is still receiving. It gets the bytes as that request relays
    them; the origin sends them once."""
    a = servers[0]
    a.conn_rate = 1_000_000
    gw = Gateway(origin_connections=2)
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, a)
        first, second = seed_urls(url, 2)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{first}/ds/f.bin") as whole:
                    assert await whole.content.readexactly(1000) == DATA[:1000]
                    async with client.get(f"{second}/ds/f.bin",
                                          headers={"Range": "bytes=1500000-1516383"}) as block:
                        assert await block.read() == DATA[1_500_000:1_516_384]
                    assert await whole.content.read() == DATA[1000:]
        finally:
            await gw.stop()
    assert await sent(a, len(DATA)) == gw.bytes_served["ds"] == len(DATA)


async def test_a_request_spanning_a_block_in_flight_waits_for_it(tmp_path, servers):
    """The other order: the block was asked first (one web-seed connection answers one
    request at a time, so the longer request that spans it comes later). The longer one reads
    the origin around the block and takes the block's bytes from it."""
    a = servers[0]
    a.latency = 0.2
    gw = Gateway()
    async with OriginContext(tmp_path) as ctx:
        url = await serve(gw, ctx, a)
        first, second = seed_urls(url, 2)
        try:
            async with aiohttp.ClientSession() as client:
                async def get(u: str, rng: str) -> bytes:
                    async with client.get(f"{u}/ds/f.bin", headers={"Range": rng}) as r:
                        return await r.read()
                block = asyncio.create_task(get(second, "bytes=16384-32767"))
                for _ in range(100):
                    if gw._reading:
                        break
                    await asyncio.sleep(0.01)
                whole = await get(first, "bytes=0-299999")
                assert await block == DATA[16384:32768]
            assert whole == DATA[:300_000]
            # Kept: asked once more, the block costs the origin nothing.
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{second}/ds/f.bin",
                                      headers={"Range": "bytes=16384-32767"}) as r:
                    assert await r.read() == DATA[16384:32768]
            assert await sent(a, 300_000) == gw.bytes_served["ds"] == 300_000
            ranges = sorted(r for _, _, r in a.requests)
            assert "bytes=0-16383" in ranges and "bytes=16384-32767" in ranges
            # A hash failure over it: the bytes are never served from the block again (here
            # the only origin is the one blamed, so there is nothing left to serve them).
            assert gw.mark_bad("ds", "ih", "f.bin", 0, 65535) == ["source"]
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{second}/ds/f.bin",
                                      headers={"Range": "bytes=16384-32767"}) as r:
                    assert r.status == 503
        finally:
            await gw.stop()
