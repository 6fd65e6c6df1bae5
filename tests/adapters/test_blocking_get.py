"""`get_range` (adapters/sources/blocking_get.py) against real HTTP servers on loopback: what it
reads, what it refuses before reading a byte, and that it stops, fails and keeps connections
as a range thread must. The servers run on the test's event loop, `get_range` on a thread."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from two_servers import Server, two_servers
from reconciler.adapters.sources.base import OriginError
from reconciler.adapters.sources.blocking_get import PlainGet, get_range
from reconciler.adapters.sources.threaded import NotRanged, Reading, Stopped

DATA = bytes(range(256)) * 4096  # 1 MiB
SECRET = "s3cr3t-blocking-7d1e"

async def serve_bytes(request: web.Request) -> web.StreamResponse:
    rng = request.headers.get("Range", "")
    a, _, b = rng.removeprefix("bytes=").partition("-")
    start, end = int(a), min(int(b), len(DATA) - 1)
    return web.Response(status=206, body=DATA[start:end + 1], headers={
        "Content-Range": f"bytes {start}-{end}/{len(DATA)}"})


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    async with two_servers() as pair:
        for s in pair:
            s.handler = serve_bytes
        yield pair


class Sink:
    """What `into` was handed, in order (copied: the view is reused)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.fail_after = fail_after

    def __call__(self, view: memoryview) -> None:
        if self.fail_after is not None and sum(map(len, self.chunks)) >= self.fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.chunks.append(bytes(view))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


async def read(get: PlainGet, offset: int, length: int, size: int = len(DATA),
               sink: Sink | None = None, reading: Reading | None = None) -> Sink:
    sink = sink or Sink()
    await asyncio.to_thread(get_range, get, offset, length, size, sink, reading or Reading())
    return sink


async def test_a_range_is_read_whole_and_the_connection_carries_the_next(servers):
    home, _ = servers
    get = PlainGet(f"{home.url}/f.bin", {"Authorization": SECRET})

    def two() -> tuple[bytes, bytes]:  # one thread: it keeps its connection
        a, b = Sink(), Sink()
        get_range(get, 0, 300_000, len(DATA), a, Reading())
        get_range(get, 300_000, len(DATA) - 300_000, len(DATA), b, Reading())
        return a.data, b.data

    a, b = await asyncio.to_thread(two)
    assert a + b == DATA
    assert [h.get("Range") for _, _, h in home.seen] == [
        "bytes=0-299999", f"bytes=300000-{len(DATA) - 1}"]
    assert all(h["Authorization"] == SECRET for _, _, h in home.seen)
    assert len(home.peers) == 1  # one TCP connection for both ranges


async def test_a_redirect_is_not_followed_and_no_byte_or_header_goes_elsewhere(servers):
    """The configured URL's headers are credentials for its origin only: a redirect is left
    to `Origin.read`'s policy (NotRanged), and the other origin hears nothing from here."""
    home, other = servers

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": f"{other.url}/f.bin"})

    home.handler = moved
    sink = Sink()
    with pytest.raises(NotRanged, match="302"):
        await read(PlainGet(f"{home.url}/f.bin", {"Authorization": SECRET}), 0, 1000,
                   sink=sink)
    assert sink.chunks == [] and other.seen == []


@pytest.mark.parametrize("case", ["whole body", "chunked", "gzip"])
async def test_a_range_not_sent_as_its_bytes_is_refused_before_a_byte(servers, case):
    home, _ = servers

    async def odd(request: web.Request) -> web.StreamResponse:
        if case == "whole body":  # Range ignored
            return web.Response(body=DATA)
        resp = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes 0-999/{len(DATA)}",
            **({"Content-Encoding": "gzip", "Content-Length": "1000"} if case == "gzip" else {})})
        if case == "chunked":
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(DATA[:1000])
        await resp.write_eof()
        return resp

    home.handler = odd
    sink = Sink()
    with pytest.raises(NotRanged):
        await read(PlainGet(f"{home.url}/f.bin"), 0, 1000, sink=sink)
    assert sink.chunks == []


async def test_origin_failures_are_origin_errors_without_the_query_string(servers):
    home, _ = servers

    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    home.handler = missing
    with pytest.raises(OriginError, match="404") as e:
        await read(PlainGet(f"{home.url}/f.bin?X-Signature={SECRET}"), 0, 10)
    assert SECRET not in str(e.value)


async def test_a_file_that_changed_size_is_refused(servers):
    home, _ = servers
    with pytest.raises(OriginError, match="did it change"):
        await read(PlainGet(f"{home.url}/f.bin"), 0, 1000, size=len(DATA) + 1)


async def begin_whole(request: web.Request, sent: int) -> web.StreamResponse:
    """A 206 announcing all of DATA, of which only the first `sent` bytes are written."""
    resp = web.StreamResponse(status=206, headers={
        "Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"})
    resp.content_length = len(DATA)
    await resp.prepare(request)
    await resp.write(DATA[:sent])
    return resp


async def test_a_body_cut_short_is_an_error_after_what_came(servers):
    home, _ = servers

    async def short(request: web.Request) -> web.StreamResponse:
        resp = await begin_whole(request, 100_000)
        assert request.transport is not None
        request.transport.close()  # the origin goes away mid-body
        return resp

    home.handler = short
    sink = Sink()
    with pytest.raises(OriginError, match=f"sent 100000 of {len(DATA)} bytes"):
        await read(PlainGet(f"{home.url}/f.bin"), 0, len(DATA), sink=sink)
    assert sink.data == DATA[:100_000]


async def test_the_disks_error_is_raised_as_it_is(servers):
    home, _ = servers
    with pytest.raises(OSError) as e:
        await read(PlainGet(f"{home.url}/f.bin"), 0, len(DATA), sink=Sink(fail_after=1))
    assert e.value.errno == errno.ENOSPC and not isinstance(e.value, OriginError)


async def test_stop_ends_a_range_blocked_on_a_silent_origin(servers):
    home, _ = servers
    answered = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        resp = await begin_whole(request, 1000)
        answered.set()
        await asyncio.sleep(30)  # bounded; the test ends long before
        return resp

    home.handler = silent
    reading = Reading()
    task = asyncio.create_task(read(PlainGet(f"{home.url}/f.bin"), 0, len(DATA),
                                    reading=reading))
    await asyncio.wait_for(answered.wait(), 10)
    await asyncio.sleep(0.2)  # the thread is in a socket read now
    reading.stop()
    with pytest.raises(Stopped):  # its socket shut down, not the 120 s read timeout
        await asyncio.wait_for(task, 5)


async def test_a_kept_connection_the_origin_closed_is_replaced_once(servers):
    home, _ = servers
    get = PlainGet(f"{home.url}/f.bin")

    def twice() -> bytes:
        first = Sink()
        get_range(get, 0, 1000, len(DATA), first, Reading())
        read_one.set()
        closed.wait(10)
        second = Sink()
        get_range(get, 1000, 1000, len(DATA), second, Reading())
        return first.data + second.data

    read_one, closed = threading.Event(), threading.Event()
    thread = asyncio.create_task(asyncio.to_thread(twice))
    assert await asyncio.to_thread(read_one.wait, 10)
    # The origin closes its idle keep-alive connection, as servers do after a while.
    for transport in home.transports:
        transport.close()
    await asyncio.sleep(0.1)
    closed.set()
    assert await asyncio.wait_for(thread, 10) == DATA[:2000]
    assert len(home.peers) == 2


async def test_credentials_in_the_url_or_another_scheme_go_through_origin_read():
    with pytest.raises(NotRanged, match="credentials"):
        await read(PlainGet("http://user:pw@127.0.0.1:9/f.bin"), 0, 10)
    with pytest.raises(NotRanged, match="not http"):
        await read(PlainGet("ftp://127.0.0.1/f.bin"), 0, 10)
