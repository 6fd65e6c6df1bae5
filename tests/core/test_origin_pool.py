"""Origin choice for the gateway: spreading, retries, circuit breakers, blaming bad pieces.
Pure logic with a fake clock, plus the gateway over real file origins for the retry paths."""

import aiohttp

from harness import pseudo_random, write_data
from reconciler.model.desired import FileSource
from reconciler.core import origin_pool as o
from reconciler.adapters.gateway import Gateway
from reconciler.core.origin_pool import OriginPool, ServedLog, piece_range
from reconciler.adapters.sources import OriginContext, open_origin


def test_load_is_spread_over_healthy_origins_and_stable_per_range():
    pool = OriginPool(["a", "b", "c"])
    firsts = {pool.candidates(f"f.bin:{off}", 0.0)[0] for off in range(0, 64 << 20, 1 << 20)}
    assert firsts == {0, 1, 2}
    assert pool.candidates("f.bin:0", 0.0) == pool.candidates("f.bin:0", 5.0)
    assert sorted(pool.candidates("x", 0.0)) == [0, 1, 2]  # the others are the retries


def test_three_consecutive_failures_open_the_breaker_then_one_trial_when_half_open():
    pool = OriginPool(["a", "b"])
    for t in (0.0, 1.0):
        pool.failure(0, t, "boom")
    pool.success(0, 1.5)  # a success resets the count
    for t in (2.0, 3.0):
        pool.failure(0, t, "boom")
    assert 0 in pool.candidates("k", 3.0)
    pool.failure(0, 4.0, "boom")
    assert pool.candidates("k", 4.0) == [1]
    assert pool.candidates("k", 4.0 + o.OPEN_FOR - 0.1) == [1]
    half = 4.0 + o.OPEN_FOR
    assert pool.candidates("k", half)[0] == 0  # the trial goes first
    pool.begin(0, half)
    assert pool.candidates("k", half) == [1]  # only one trial at a time
    pool.failure(0, half, "still down")  # failed trial: open twice as long
    assert pool.candidates("k", half + 2 * o.OPEN_FOR - 0.1) == [1]
    again = half + 2 * o.OPEN_FOR
    pool.begin(0, again)
    pool.success(0, again)
    assert sorted(pool.candidates("k", again)) == [0, 1]


def test_open_period_doubles_up_to_the_cap():
    pool = OriginPool(["a"])
    now = 0.0
    for _ in range(3):
        pool.failure(0, now, "x")
    periods = []
    for _ in range(8):
        b = pool.breakers[0]
        periods.append(b.open_for)
        now = b.open_until  # half-open
        pool.begin(0, now)
        pool.failure(0, now, "x")
    assert periods[:4] == [30.0, 60.0, 120.0, 240.0]
    assert max(periods) == o.OPEN_MAX


def test_an_abandoned_trial_frees_the_slot():
    pool = OriginPool(["a"])
    for t in range(3):
        pool.failure(0, float(t), "x")
    half = 2.0 + o.OPEN_FOR
    pool.begin(0, half)
    assert pool.candidates("k", half) == []
    pool.abandon(0)
    assert pool.candidates("k", half) == [0]


def test_marked_bad_is_skipped_long_and_all_failed_summary_names_every_origin():
    pool = OriginPool(["source (http x)", "mirrors[0] (http y)"])
    pool.mark_bad(0, 10.0, "bad bytes")
    assert pool.candidates("k", 10.0 + o.OPEN_MAX) == [1]
    assert pool.available(10.0)
    for t in range(3):
        pool.failure(1, 11.0 + t, "connection refused")
    assert not pool.available(14.0)
    msg = pool.summary()
    assert msg.startswith("all origins failed: ")
    assert "source (http x): bad bytes" in msg and "mirrors[0] (http y): connection refused" in msg
    assert pool.candidates("k", 10.0 + o.BAD_FOR)[0] == 0  # a trial, eventually


def test_served_log_blames_the_servings_that_delivered_the_bytes():
    log = ServedLog()
    log.record("a", 0, 99, 0)
    log.record("a", 100, 199, 1)
    log.record("b", 0, 99, 2)
    assert log.blame("a", 90, 110) == {0, 1}
    assert log.blame("b", 100, 200) == set()
    assert log.blame("a", 50, 60) == {0}  # the rest of origin 0's serving is still judged


def test_a_retry_served_before_the_failure_is_seen_is_not_blamed():
    """Origin 0 serves a range with bad pieces; libtorrent's retry of piece [16, 31] is served
    by origin 1 before the executor handles the hash-failure alerts."""
    log = ServedLog()
    log.record("a", 0, 63, 0)
    log.record("a", 16, 31, 1)
    assert log.blame("a", 16, 31) == {0}
    assert log.blame("a", 32, 47) == {0}  # the next bad piece of the same serving
    assert log.blame("a", 16, 31) == {1}  # only if the retry fails too
    assert log.blame("a", 16, 31) == set()


def test_a_piece_mixing_blamed_bytes_with_later_ones_blames_no_one_else():
    """libtorrent kept 16 120 bytes of origin 0's bad block across the hash failure and asked
    the web seed for the last 264 only, which origin 1 served right (tests/test_mirrors.py)."""
    log = ServedLog()
    log.record("a", 0, 16383, 0)
    assert log.blame("a", 0, 16383) == {0}
    log.record("a", 16120, 16383, 1)
    assert log.blame("a", 0, 16383) == set()  # 0..16119 are origin 0's, judged already
    # a whole retry served by origin 1 that fails is origin 1's fault
    log.record("a", 0, 16383, 1)
    assert log.blame("a", 0, 16383) == {1}
    # ... and bytes no serving covers that were never judged leave the blame as it was
    log.record("b", 100, 199, 1)
    assert log.blame("b", 0, 199) == {1}


def test_a_serving_recorded_as_relayed_stays_one_record_and_keeps_its_age():
    """The gateway records each chunk as it relays it: a long request from origin 0 is one
    record, older than origin 1's retry of a piece it sent, even if the request is still
    being relayed when the retry ends."""
    log = ServedLog()
    log.record("a", 0, 15, 0)
    log.record("a", 16, 31, 0)  # continues it: extended
    log.record("a", 16, 31, 1)  # the retry of piece [16, 31], served meanwhile
    log.record("a", 32, 63, 0)  # origin 0's request goes on: a record of its own now
    assert len(log.entries) == 3
    assert log.blame("a", 16, 31) == {0}
    assert len(log.entries) == 3  # origin 0's [0, 15], the retry, origin 0's [32, 63]
    log.record("b", 64, 99, 0)  # another file, or a gap, is another record
    log.record("a", 70, 79, 0)
    assert len(log.entries) == 5
    log.record("a", 5, 4, 0)  # empty: nothing
    assert len(log.entries) == 5


def test_piece_range_maps_pieces_to_one_file_each():
    files = (("a", 10), ("empty", 0), ("b", 40), ("c", 16))
    assert piece_range(files, 16, 0) == ("a", 0, 9)
    assert piece_range(files, 16, 1) == ("b", 0, 15)
    assert piece_range(files, 16, 3) == ("b", 32, 39)
    assert piece_range(files, 16, 4) == ("c", 0, 15)
    assert piece_range(files, 16, 5) is None
    assert piece_range(files, 16, -1) is None


def test_labels_say_role_and_place_without_secrets():
    described = {"type": "http", "baseUrl": "http://h/x/"}
    assert o.label("http", described, 0) == "source (http http://h/x/)"
    assert o.label("s3", {"type": "s3"}, 2) == "mirrors[1] (s3)"


DATA = pseudo_random(100_000, "pool")


async def _gateway(tmp_path, good: list[bool]):
    origins = []
    for i, ok in enumerate(good):
        d = write_data(tmp_path / f"o{i}", {"f.bin": DATA} if ok else {"other": b"x"})
        origins.append(d)
    gw = Gateway()
    await gw.start()
    ctx = OriginContext(tmp_path)
    url = gw.register("ds", "ih", "ds", (("f.bin", len(DATA)),),
                      [open_origin(FileSource(str(d)), ctx) for d in origins],
                      [f"o{i}" for i in range(len(origins))])
    return gw, ctx, url


async def test_gateway_retries_on_the_next_origin_and_blames_bad_bytes(tmp_path):
    gw, ctx, url = await _gateway(tmp_path, [False, True])
    try:
        async with aiohttp.ClientSession() as http:
            for off in range(0, 100_000, 10_000):
                rng = f"bytes={off}-{off + 9_999}"
                async with http.get(f"{url}/ds/f.bin", headers={"Range": rng}) as r:
                    assert r.status == 206 and await r.read() == DATA[off:off + 10_000]
        assert gw.bytes_served["ds"] == len(DATA)
        assert "ds" not in gw.errors
        entry = gw._entries[("ds", "ih")]
        assert entry.pool.breakers[0].open_until is not None  # o0 kept failing
        assert gw.mark_bad("ds", "ih", "f.bin", 0, 16383) == ["o1"]
        assert "all origins failed" in gw.errors["ds"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=0-9"}) as r:
                assert r.status in (502, 503)
    finally:
        await gw.stop()
        await ctx.close()


async def test_gateway_with_every_origin_failing_reports_all_of_them(tmp_path):
    gw, ctx, url = await _gateway(tmp_path, [False, False])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ds/f.bin", headers={"Range": "bytes=0-9"}) as r:
                assert r.status == 502
                body = await r.text()
        err = gw.errors["ds"]
        assert err.startswith("all origins failed: ") and "o0:" in err and "o1:" in err
        assert "all origins failed" in body
        assert gw.bytes_served.get("ds", 0) == 0
    finally:
        await gw.stop()
        await ctx.close()


def test_piece_ranges_merge_contiguous_pieces_per_file() -> None:
    from reconciler.core.origin_pool import covers, piece_range, piece_ranges
    files = (("a", 100), ("empty", 0), ("b", 35))  # piece size 16: a = pieces 0-6, b = 7-9
    got = piece_ranges(files, 16, {0, 1, 3, 6, 7, 9, 42})
    assert got == {"a": ((0, 31), (48, 63), (96, 99)), "b": ((0, 15), (32, 34))}
    for p in (0, 1, 3, 6, 7, 9):
        path, first, last = piece_range(files, 16, p)  # type: ignore[misc]
        assert covers(got[path], first, last)
    assert not covers(got["a"], 16, 47) and not covers(got["a"], 0, 48)
    assert piece_ranges(files, 16, ()) == {}
