"""The origin rate limit with a fake clock: what it makes callers wait, not how long tests take."""

import asyncio

from reconciler.adapters.ratelimit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def run(bucket: TokenBucket, chunks: list[int]) -> None:
    async def go() -> None:
        for n in chunks:
            await bucket.take(n)
    asyncio.run(go())


def test_unlimited_never_waits():
    t = FakeTime()
    run(TokenBucket(0, clock=t.clock, sleep=t.sleep), [10 << 20] * 5)
    assert t.slept == []


def test_bytes_beyond_the_burst_cost_their_time_at_the_rate():
    t = FakeTime()
    rate = 1 << 20
    run(TokenBucket(rate, burst=256 << 10, clock=t.clock, sleep=t.sleep), [64 << 10] * 64)  # 4 MiB
    # 4 MiB through a 1 MiB/s bucket that starts with a 256 KiB burst: 3.75 s of waiting.
    assert abs(sum(t.slept) - (4 * rate - (256 << 10)) / rate) < 1e-6


def test_a_chunk_larger_than_the_burst_passes_after_its_cost():
    t = FakeTime()
    run(TokenBucket(1000, burst=100, clock=t.clock, sleep=t.sleep), [1100])
    assert t.slept == [1.0]
