"""The web-seed gateway against a real aiohttp client: ranges, errors, byte counting."""

import aiohttp

from harness import pseudo_random, write_data
from reconciler.model.desired import FileSource
from reconciler.adapters.gateway import Gateway
from reconciler.adapters.sources import OriginContext, open_origin

DATA = pseudo_random(100_000, "gw")


async def started(tmp_path):
    src = write_data(tmp_path / "src", {"f.bin": DATA, "g.bin": b"gg"})
    gw = Gateway()
    await gw.start()
    ctx = OriginContext(tmp_path)
    url = gw.register("ds", "ih", "ds", (("f.bin", len(DATA)), ("g.bin", 2)),
                      open_origin(FileSource(str(src)), ctx))
    return gw, ctx, url


async def test_ranges_are_served_and_counted(tmp_path):
    gw, ctx, url = await started(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=10-19"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
                assert await r.read() == DATA[10:20]
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=99990-"}) as r:
                assert r.status == 206 and await r.read() == DATA[99990:]
            async with http.get(f"{url}/ds/f.bin") as r:
                assert r.status == 200 and await r.read() == DATA
        # The two short ranges (blocks, as in libtorrent's end game) were kept: the whole
        # file reused them and read only the rest from the origin.
        assert gw.bytes_served["ds"] == len(DATA)
    finally:
        await gw.stop()
        await ctx.close()


async def test_unknown_versions_files_and_bad_ranges_are_refused(tmp_path):
    gw, ctx, url = await started(tmp_path)
    base = url.rsplit("/", 2)[0]
    try:
        async with aiohttp.ClientSession() as http:
            for path, headers, status in (
                    ("/ds/other-ih/ds/f.bin", {}, 404),
                    ("/ds/ih/ds/nope.bin", {}, 404),
                    ("/ds/ih/wrongname/f.bin", {}, 404),
                    ("/ds/ih/ds/f.bin", {"Range": "bytes=500000-"}, 416),
                    ("/ds/ih/ds/f.bin", {"Range": "items=1-2"}, 416)):
                async with http.get(base + path, headers=headers) as r:
                    assert r.status == status, path
        assert gw.bytes_served.get("ds", 0) == 0
    finally:
        await gw.stop()
        await ctx.close()


async def test_origin_failure_is_a_502_and_remembered_for_the_status(tmp_path):
    gw, ctx, url = await started(tmp_path)
    (tmp_path / "src" / "f.bin").unlink()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=0-9"}) as r:
                assert r.status == 502
        assert "f.bin" in gw.errors["ds"]
    finally:
        await gw.stop()
        await ctx.close()


async def test_requests_outside_the_nodes_origin_share_are_declined(tmp_path):
    gw, ctx, url = await started(tmp_path)
    gw.allow("ds", "ih", {"f.bin": ((0, 49_999),)})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=100-199"}) as r:
                assert r.status == 206 and await r.read() == DATA[100:200]
            for rng in ("bytes=49990-50009", "bytes=60000-60099"):  # partly, wholly outside
                async with http.get(f"{url}/ds/f.bin", headers={"Range": rng}) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
                    assert r.reason == "Not In This Node's Origin Share"
            async with http.get(f"{url}/ds/g.bin") as r:  # no range of g.bin is in the share
                assert r.status == 503
        assert gw.bytes_served["ds"] == 100 and gw.declined == 3
        gw.allow("ds", "ih", None)  # nothing shared out: anything goes
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/g.bin") as r:
                assert r.status == 200 and await r.read() == b"gg"
    finally:
        await gw.stop()
        await ctx.close()
