"""OffsetWriter: chunks land at their offsets in any order, a failed write surfaces, and a
cancelled reader still leaves on disk everything it had put."""

from __future__ import annotations

import asyncio
import os

import pytest

from harness import pseudo_random
from reconciler.adapters.offset_writer import OffsetWriter

DATA = pseudo_random(1 << 20, "ow")


async def test_chunks_put_out_of_order_make_the_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    w = await OffsetWriter.open(path, limit=64 << 10)
    offsets = list(range(0, len(DATA), 50_000))
    for at in reversed(offsets):
        w.put(at, DATA[at:at + 50_000])
        await w.room()  # a small limit: the reader waits for the disk
    await w.close()
    assert path.read_bytes() == DATA
    await w.close()  # twice is fine


async def test_an_existing_file_is_truncated(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    w = await OffsetWriter.open(tmp_path / "f.bin")
    w.put(0, b"abc")
    await w.close()
    assert (tmp_path / "f.bin").read_bytes() == b"abc"


async def test_a_failed_write_is_raised(tmp_path):
    w = await OffsetWriter.open(tmp_path / "f.bin")
    os.close(w._fd)  # the disk goes away under it: every write fails with EBADF
    w.put(0, b"abc")
    with pytest.raises(OSError):
        await w.close()
    w2 = await OffsetWriter.open(tmp_path / "g.bin", limit=1)
    os.close(w2._fd)
    w2.put(0, b"abc")
    with pytest.raises(OSError):
        await w2.room()
    with pytest.raises(OSError):
        await w2.close()


async def test_a_put_after_close_is_refused(tmp_path):
    w = await OffsetWriter.open(tmp_path / "f.bin")
    await w.close()
    with pytest.raises(ValueError, match="after close"):
        w.put(0, b"abc")


async def test_what_was_put_before_a_cancellation_is_written(tmp_path):
    w = await OffsetWriter.open(tmp_path / "f.bin")
    started = asyncio.Event()

    async def reader() -> None:
        try:
            for at in range(0, len(DATA), 4096):
                w.put(at, DATA[at:at + 4096])
                if at == 512 << 10:
                    started.set()
                    await asyncio.sleep(60)  # cancelled here
        finally:
            await w.close()

    task = asyncio.create_task(reader())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    got = (tmp_path / "f.bin").read_bytes()
    assert got == DATA[:(512 << 10) + 4096]


async def test_many_readers_waiting_for_room_all_go_on(tmp_path):
    # Every part of a parallel read waits for room after its chunks: all of them must wake.
    w = await OffsetWriter.open(tmp_path / "f.bin", limit=64 << 10)

    async def part(start: int, end: int) -> None:
        for at in range(start, end, 16384):
            w.put(at, DATA[at:at + 16384])
            await w.room()

    step = len(DATA) // 8
    await asyncio.wait_for(asyncio.gather(*(part(i * step, (i + 1) * step) for i in range(8))),
                           timeout=30)
    await w.close()
    assert (tmp_path / "f.bin").read_bytes() == DATA
