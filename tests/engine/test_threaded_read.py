"""`read_file` (engine/threaded_read.py): one file read as ranges on threads against a real HTTP
origin (tests/origin_server.py, on its own thread), written in place and hashed per range.
The hashes must be exactly `FileHasher`'s over the whole file, whatever the ranges; a capped
origin gets every stream, a fast one a few threads with merged requests; a stopped read
writes nothing after it returns."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from reconciler.adapters.sources.base import OriginError, OriginFile
from reconciler.adapters.sources.blocking_get import PlainGet
from reconciler.engine.threaded_read import Caps, piece_parts, read_file
from reconciler.torrent.hybrid import FileHasher

PIECE = 64 << 10


def expected(data: bytes) -> object:
    h = FileHasher(PIECE, parallel=False)
    h.update(data)
    return h.finish()


@pytest.fixture
def origin(origins, tmp_path: Path):
    """An origin serving nothing yet: each test writes its files into the root."""
    return origins({}), tmp_path / "origin"


class Counted:
    def __init__(self, delay: float = 0.0) -> None:
        self.bytes = 0
        self.delay = delay

    async def __call__(self, n: int) -> None:
        self.bytes += n
        if self.delay:
            await asyncio.sleep(self.delay)


@pytest.mark.parametrize("size", [0, 1000, PIECE, 3 * PIECE, 40 * PIECE + 12345])
async def test_bytes_and_hashes_are_the_whole_files_whatever_the_ranges(origin, tmp_path, size):
    server, root = origin
    data = random.Random(size).randbytes(size)
    (root / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "sub" / "f.bin"
    counted = Counted()
    got = await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", size), PIECE,
                          dest, streams=8, fast_streams=2, slots=None, arrived=counted)
    assert got == expected(data)
    assert dest.read_bytes() == data
    assert counted.bytes == size
    deadline = time.monotonic() + 10  # the server counts a chunk once its write returns
    while server.bytes_sent < size and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.bytes_sent == size  # each byte asked for once


async def test_hash_only_without_a_destination(origin):
    server, root = origin
    data = os.urandom(5 * PIECE + 7)
    (root / "f.bin").write_bytes(data)
    got = await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)),
                          PIECE, None, streams=4, fast_streams=2, slots=None, arrived=Counted())
    assert got == expected(data)


def test_ranges_are_whole_pieces_and_cover_the_file():
    for size in (1, PIECE, 10 * PIECE + 1, 1000 * PIECE):
        for streams in (1, 3, 64):
            parts = piece_parts(size, PIECE, streams)
            assert parts[0][0] == 0 and sum(n for _, n in parts) == size
            assert all(a % PIECE == 0 for a, _ in parts)
            assert all(b == a + n for (a, n), (b, _) in zip(parts, parts[1:]))
            assert len(parts) <= max(1, streams)
    assert piece_parts(0, PIECE, 8) == []


async def test_a_fast_origin_gets_a_few_threads_asking_for_merged_ranges(origin, tmp_path):
    """Once judged fast (here: given; how fast a loopback server on a busy CI machine is, is
    not this test's to assert, bench.single_origin measures the judging)."""
    server, root = origin
    data = os.urandom(128 * PIECE)  # 8 MiB: 16 ranges of 512 KiB
    (root / "f.bin").write_bytes(data)
    caps = Caps()
    caps.capped = False
    await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)), PIECE,
                    tmp_path / "f.bin", streams=16, fast_streams=2, slots=None,
                    arrived=Counted(), caps=caps)
    gets = [r for m, _, r in server.requests if m == "GET"]
    assert caps.capped is False
    assert len(gets) < len(piece_parts(len(data), PIECE, 16)), gets
    assert server.max_active <= 2


async def test_a_capped_origin_gets_every_stream_and_the_slots_bound_them(origin, tmp_path):
    server, root = origin
    server.conn_rate = 256 << 10  # bytes/s per response, like an object store
    data = os.urandom(16 * PIECE)
    (root / "f.bin").write_bytes(data)
    caps = Caps()
    got = await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)),
                          PIECE, tmp_path / "f.bin", streams=8, fast_streams=1, slots=None,
                          arrived=Counted(), caps=caps)
    assert got == expected(data)
    assert caps.capped is True and server.max_active > 1

    server.max_active = 0
    slots = asyncio.Semaphore(2)
    await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)), PIECE,
                    tmp_path / "g.bin", streams=8, fast_streams=1, slots=slots,
                    arrived=Counted(), caps=caps)
    assert server.max_active == 2  # capped from the start (caps), held to the node's slots


async def test_a_cancelled_read_writes_nothing_after_it_returns(origin, tmp_path):
    server, root = origin
    server.conn_rate = 128 << 10
    data = os.urandom(32 * PIECE)
    (root / "f.bin").write_bytes(data)
    dest = tmp_path / "f.bin"
    task = asyncio.create_task(read_file(
        PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)), PIECE, dest,
        streams=8, fast_streams=1, slots=None, arrived=Counted()))
    while server.bytes_sent < 3 * PIECE:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    written = dest.read_bytes()
    await asyncio.sleep(0.5)  # the origin's writes already under way end (the peer is gone)
    sent = server.bytes_sent
    await asyncio.sleep(0.5)
    assert dest.read_bytes() == written  # every thread had stopped
    assert server.bytes_sent == sent  # and the origin stopped sending
    # What was written is the origin's bytes where they belong (zeros where none came).
    assert any(written) and all(w in (0, d) for w, d in zip(written[:4096], data[:4096]))


async def test_a_failing_range_is_an_origin_error(origin, tmp_path):
    server, _ = origin  # f.bin is listed but missing: 404
    with pytest.raises(OriginError, match="404"):
        await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", 10 * PIECE),
                        PIECE, tmp_path / "f.bin", streams=4, fast_streams=2, slots=None,
                        arrived=Counted())


async def test_a_rate_limit_holds_the_threads_back(origin, tmp_path):
    """`arrived` (the node's bandwidth.origin) is awaited for every batch: the threads go at
    most a batch ahead of it."""
    server, root = origin
    data = os.urandom(16 * PIECE)
    (root / "f.bin").write_bytes(data)
    counted = Counted(delay=0.05)
    got = await read_file(PlainGet(f"{server.url}/f.bin"), OriginFile("f.bin", len(data)),
                          PIECE, tmp_path / "f.bin", streams=4, fast_streams=2, slots=None,
                          arrived=counted)
    assert got == expected(data) and counted.bytes == len(data)
