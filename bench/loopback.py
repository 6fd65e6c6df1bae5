#!/usr/bin/env python
"""Convergence time and origin amplification of an N-node Syncbit cluster, against the physical
lower bound and against a single node measured in the same run.

    python -m bench.loopback [--source http|s3|hf] [--nodes 3 8] [--size-mib 32]
                             [--origin-mibps 16] [--modes once daemon] [--repeat 1]

(The old bench/swarm_bench.py. All processes share loopback and one throttle on the origin;
bench/swarm.py is the shaped-network benchmark with one network namespace per node.)

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
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # `bench` and the test harness, also as a script

from harness import (  # noqa: E402
    NodeHome,
    StateRepo,
    dataset_yaml,
    nodes_yaml,
    pseudo_random,
    tree_digest,
    write_data,
)

from bench.loopback_origins import (  # noqa: E402
    RESETS,
    HfBench,
    HttpBench,
    S3Bench,
)
from bench.loopback_tables import print_tables  # noqa: E402

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
