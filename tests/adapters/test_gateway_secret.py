"""The gateway serves libtorrent only (issue 11, item 6): a per-process secret in the URL path,
checked before any origin is touched, and capped concurrency. A real counting HTTP origin in
its own thread, the real gateway, a real client (any local process could be that client)."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

import aiohttp

from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.model.desired import HttpSource
from reconciler.adapters.gateway import REDACTED, Gateway
from reconciler.adapters.sources import OriginContext, open_origin

DATA = pseudo_random(200_000, "gws")
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def test_without_the_secret_404_and_the_origin_is_never_asked(tmp_path) -> None:
    origin = OriginServer(write_data(tmp_path / "o", {"f.bin": DATA})).start()
    gw = Gateway()
    ctx = OriginContext(tmp_path)
    try:
        await gw.start()
        url = gw.register("ds", "ih", "ds", (("f.bin", len(DATA)),),
                          open_origin(HttpSource(base_url=origin.url + "/", files=("f.bin",)),
                                      ctx))
        base = f"http://{gw.host}:{gw.port}"
        assert gw.secret in url and len(gw.secret) >= 40
        wrong = gw.secret[:-1] + ("A" if gw.secret[-1] != "A" else "B")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for path in ("/ds/ih/ds/f.bin",  # the URL form before the secret
                         "/ds/ih", f"/{wrong}/ds/ih/ds/f.bin", f"/{wrong}/ds/ih",
                         "//ds/ih/ds/f.bin", f"/{gw.secret[:8]}/ds/ih/ds/f.bin"):
                async with http.get(base + path, headers={"Range": "bytes=0-9"}) as r:
                    assert r.status == 404, path
                    assert gw.secret not in await r.text()
            assert origin.bytes_sent == 0 and origin.requests == []
            assert gw.bytes_served.get("ds", 0) == 0
            # libtorrent's URL works.
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=0-9"}) as r:
                assert r.status == 206 and await r.read() == DATA[:10]
        for _ in range(100):  # the origin's thread counts a chunk once its write returns
            if origin.bytes_sent:
                break
            await asyncio.sleep(0.01)
        assert origin.bytes_sent > 0
        assert gw.refused == 4  # the other two match no route at all
    finally:
        await gw.stop()
        await ctx.close()
        origin.stop()


async def test_listens_on_a_private_loopback_address_not_127_0_0_1() -> None:
    gw = Gateway()
    assert ipaddress.ip_address(gw.host) in ipaddress.ip_network("127.128.0.0/9")
    assert gw.secret not in repr(gw)
    assert gw.redact(f"url seed http://{gw.host}:1/{gw.secret}/ds/ih failed") == (
        f"url seed http://{gw.host}:1/{REDACTED}/ds/ih failed")


async def test_concurrent_requests_are_capped_per_dataset_and_in_all(tmp_path) -> None:
    # A throttled origin keeps requests in flight long enough to pile up.
    origin = OriginServer(write_data(tmp_path / "o", {"f.bin": DATA}), rate=200_000).start()
    gw = Gateway(max_requests=3, max_per_dataset=2)
    ctx = OriginContext(tmp_path)
    try:
        await gw.start()
        src = HttpSource(base_url=origin.url + "/", files=("f.bin",))
        urls = [gw.register(name, "ih", "ds", (("f.bin", len(DATA)),), open_origin(src, ctx))
                for name in ("a", "b")]

        async def fetch(http: aiohttp.ClientSession, url: str) -> int:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=0-49999"}) as r:
                await r.read()
                return r.status

        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            codes = await asyncio.wait_for(asyncio.gather(
                *(fetch(http, urls[0]) for _ in range(4)),
                *(fetch(http, urls[1]) for _ in range(2))), 30)
        # All six overlap (each takes >= 0.25 s at the origin's rate): dataset a gets at most
        # 2 at a time, the gateway at most 3 in all.
        assert set(codes) <= {206, 503} and 206 in codes[:4] and 206 in codes[4:], codes
        assert codes[:4].count(503) >= 2 and codes.count(503) >= 3, codes
        assert urlsplit(urls[0]).path.split("/")[1] == gw.secret
    finally:
        await gw.stop()
        await ctx.close()
        origin.stop()
