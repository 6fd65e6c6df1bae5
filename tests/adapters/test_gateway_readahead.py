"""The gateway reads from the origin only a bounded amount ahead of a slow client (issue 13):
a real aiohttp client reading slowly through the real gateway from a real HTTP origin."""

from __future__ import annotations

import asyncio

import aiohttp

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.gateway import Gateway
from reconciler.adapters.gateway_relay import RATE_AFTER
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.sources.base import CHUNK
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.core.ranges import MAX_PART
from reconciler.model.desired import HttpSource

SIZE = 48 << 20  # well over a window: an unbounded relay reads all of it at once
STEP = 256 << 10  # what the slow client reads at a time


async def settled(server: OriginServer) -> int:
    """The origin's count once it stops moving for 0.2 s (bounded: 5 s at most)."""
    last = -1
    for _ in range(25):
        if server.bytes_sent == last:
            break
        last = server.bytes_sent
        await asyncio.sleep(0.2)
    return server.bytes_sent


async def test_a_slow_client_holds_the_origin_reads_within_the_window(tmp_path):
    data = pseudo_random(SIZE, "ra")
    origin = OriginServer(write_data(tmp_path / "o", {"f.bin": data})).start()
    gw = Gateway()
    try:
        async with OriginContext(tmp_path) as ctx:
            await gw.start()
            url = gw.register("ds", "ih", "ds", (("f.bin", SIZE),), [HttpOrigin(
                HttpSource(base_url=origin.url + "/", files=("f.bin",)), ctx.http)])
            got = bytearray()
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/ds/f.bin") as r:
                    assert r.status == 200
                    # Slow for longer than RATE_AFTER, then not reading at all: the origin
                    # reads must stop about a window ahead of what the client consumed.
                    for _ in range(8):
                        got += await r.content.readexactly(STEP)
                        await asyncio.sleep(RATE_AFTER / 6)
                    sent = await settled(origin)
                    read = gw.bytes_served["ds"]
                    relayed = gw.bytes_relayed["ds"]
                    window = max(MAX_PART, int(2 * len(got) / RATE_AFTER))  # generous
                    # Exact, in the gateway: read from the origin and not yet relayed, at most
                    # the window plus the chunk each of the request's parts was reading.
                    assert read - relayed <= window + (SIZE // MAX_PART) * CHUNK
                    # At the origin, the kernel's loopback socket buffers on both sides of the
                    # gateway come on top (measured: 3.4 and 5.2 MiB, sent 15.3 MiB for 2 MiB
                    # consumed of 24 MiB); unbounded, it was all SIZE bytes.
                    assert sent - len(got) < SIZE // 2, (sent, len(got))
                    got += await r.content.read()  # then the rest, whole and in order
            assert bytes(got) == data
    finally:
        await gw.stop()
        origin.stop()
    # Nothing read twice, nothing lost: every byte the origin sent was relayed once.
    assert gw.bytes_served["ds"] == SIZE == await settled(origin)
