"""How many origin requests the gateway keeps in flight: grown while it pays."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.origin_streams import (GAIN, HOLD, START, WINDOW, StreamLimit,
                                            observe)

TICK = 0.1


def _run(s: StreamLimit, rate_of: object, seconds: float, t: float = 0.0,
         counted: int = 0) -> tuple[StreamLimit, float, int, list[int]]:
    """Observe every TICK for `seconds` with every place busy and reads queued; the origin
    brings `rate_of(limit)` bytes/s. Returns the state, clock, bytes and the limits seen."""
    seen = []
    for _ in range(round(seconds / TICK)):
        t += TICK
        counted += int(rate_of(s.limit) * TICK)  # type: ignore[operator]
        s = observe(s, t, counted, busy=s.limit, waiting=3)
        seen.append(s.limit)
    return s, t, counted, seen


def test_a_per_connection_cap_doubles_the_count_up_to_the_ceiling():
    s = StreamLimit.new(64)
    assert s.limit == START
    s, t, _, seen = _run(s, lambda n: n * 128 * 1024, 10.0)  # 128 KiB/s a connection
    assert s.limit == 64
    # one doubling a window (the window restarts at each change): 4 -> 64 in 4 windows
    assert seen.index(64) * TICK <= 4 * WINDOW + 4 * TICK + 1e-9
    assert sorted(set(seen)) == [4, 8, 16, 32, 64]


def test_a_full_link_keeps_the_few_requests_that_fill_it():
    s = StreamLimit.new(64)
    s, t, counted, seen = _run(s, lambda n: 800 * 1024, 5.0)  # 0.8 MiB/s whatever the count
    # one doubling was tried, did not pay, and was undone
    assert max(seen) == 2 * START and s.limit == START
    assert s.hold_until > t
    # ...and is tried again only after HOLD
    s, t, counted, seen = _run(s, lambda n: 800 * 1024, HOLD + 2 * WINDOW, t, counted)
    assert seen.count(2 * START) and seen.count(2 * START) <= round(2 * WINDOW / TICK) + 1
    assert s.limit == START


def test_a_window_with_places_unused_says_nothing():
    s = StreamLimit.new(64)
    t, counted = 0.0, 0
    for _ in range(50):  # demand under the limit: 2 of 4 busy, nobody waiting
        t += TICK
        counted += 100_000
        s = observe(s, t, counted, busy=2, waiting=0)
    assert s.limit == START and s.since is None
    s = observe(s, t + TICK, counted, busy=START, waiting=0)
    assert s.since == t + TICK  # measuring from the first full moment on


def test_a_doubling_that_paid_less_than_gain_is_undone():
    s = StreamLimit.new(64)
    s, t, counted, _ = _run(s, lambda n: 1_000_000 * (GAIN - 0.1) ** (n // START - 1),
                            WINDOW + 2 * TICK)
    assert s.limit == 2 * START
    s, t, counted, _ = _run(s, lambda n: 1_000_000 * (GAIN - 0.1) ** (n // START - 1),
                            WINDOW, t, counted)
    assert s.limit == START


def test_a_ceiling_under_start_is_the_count():
    assert StreamLimit.new(2).limit == 2
    s, *_ = _run(StreamLimit.new(2), lambda n: n * 1_000_000, 5.0)
    assert s.limit == 2
    assert StreamLimit.new(0).limit == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 128), st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 10 ** 7),
                                               st.integers(0, 200), st.integers(0, 50)),
                                     max_size=60))
def test_the_limit_stays_within_one_and_the_ceiling(ceiling, steps):
    s = StreamLimit.new(ceiling)
    t, counted = 0.0, 0
    for dt, more, busy, waiting in steps:
        t += dt
        counted += more
        s = observe(s, t, counted, busy, waiting)
        assert 1 <= s.limit <= ceiling


def test_requests_that_bring_nothing_do_not_keep_the_others_waiting():
    """A hung origin holds every place and brings no byte: more places cost nothing there,
    and the count grows to the ceiling, so reads of other datasets (other origins) get
    places as they did with a fixed `originConnections`."""
    s, _, _, seen = _run(StreamLimit.new(64), lambda n: 0, 6.0)
    assert s.limit == 64 and seen == sorted(seen)
