#!/usr/bin/env python
"""Convergence time and origin amplification of an N-node Syncbit cluster, against the physical
lower bound and against a single node measured in the same run.

    /work/venv/bin/python bench/swarm_bench.py [--nodes 3 8] [--size-mib 32] [--origin-mibps 16]
                                                [--modes once daemon] [--repeat 1]

Every run is a fresh cluster in a temp dir: a real git state repo, N `syncbit-reconcile`
processes (`--once`, or the daemon stopped with SIGTERM) on distinct loopback addresses, one
dataset placed on all of them (`placement: {all: true}`, an HTTP source of 4 files), and the
throttled aiohttp origin of the test suite (`tests/origin_server.py`, whose `rate` bounds the
whole server and which counts the bytes it sends). All N processes start at the same moment.

Measured per run (see bench/README.md for how to read them):

- amplification = origin bytes sent / dataset bytes (goal <= 1.05);
- T_bound = S / u_origin, the time the origin needs to send the dataset once (goal: every node
  Ready within 1.2x of it);
- per node the time from the common start until its status.json says Ready (polled every
  0.1 s), the time of its `activated` log line, and for `--once` its exit time;
- bytes from peers and from the origin as each node reports them in status.json;
- CPU seconds used by the node processes, as a share of the machine (nproc x wall time);
- baseline: ONE node alone (a one-node inventory) fetching the same dataset from the same
  throttled origin, per mode, in the same invocation.
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
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import NodeHome, StateRepo, nodes_yaml, pseudo_random, tree_digest, write_data  # noqa: E402
from origin_server import OriginServer  # noqa: E402

MIB = 1 << 20
DATASET = "weights"
POLL = 0.1
AMPLIFICATION_GOAL = 1.05
TIME_GOAL = 1.2  # x T_bound


# -- the dataset ----------------------------------------------------------------------------------

def dataset_files(size: int) -> dict[str, bytes]:
    """Four files summing to exactly `size` bytes; two of them are not a multiple of 1 MiB."""
    a = size * 3 // 8 - 12_345
    b = size // 4
    c = size // 4 - 4_096
    d = size - a - b - c  # = size/8 + 16441
    sizes = {"model-00001-of-00003.safetensors": a, "model-00002-of-00003.safetensors": b,
             "model-00003-of-00003.safetensors": c, "extra/optimizer.bin": d}
    assert sum(sizes.values()) == size and min(sizes.values()) > 0
    return {name: pseudo_random(n, name) for name, n in sizes.items()}


def dataset_yaml(origin_url: str, files: list[str]) -> str:
    return f"""
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {{name: {DATASET}}}
        spec:
          version: v1
          source: {{http: {{baseUrl: "{origin_url}/", files: [{", ".join(files)}]}}}}
          placement: {{all: true}}
          path: models/{DATASET}
        """


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
    origin_rate: int
    t_bound_s: float
    origin_bytes: int = 0
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
    max_over_single: float | None = None  # max Ready / single-node Ready, same mode
    peer_bytes: int = 0
    origin_bytes_reported: int = 0  # sum of the nodes' bytesFromOrigin
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_share: float = 0.0  # cpu_s / (nproc * wall_s)
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


def _activated_at(log: Path, t0_wall: float) -> float | None:
    """Seconds from the start to the node's `activated` log line (JSON lines on a pipe)."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "activated" and ev.get("dataset") == DATASET:
            ts = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
            return ts.timestamp() - t0_wall
    return None


def run_cluster(kind: str, mode: str, n: int, rep: int, files: dict[str, bytes], origin_dir: Path,
                rate: int, first_ip: int, timeout: float, keep: bool, workdir: Path
                ) -> RunResult:
    size = sum(map(len, files.values()))
    res = RunResult(kind, mode, n, rep, size, rate, size / rate)
    tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-{mode}-n{n}-r{rep}-", dir=workdir))
    origin = OriginServer(origin_dir, rate=rate).start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        names = [f"node{i + 1}" for i in range(n)]
        repo = StateRepo.create(tmp / "state")
        repo.write("nodes.yaml", nodes_yaml(names, first_ip=first_ip))
        repo.write("ds.yaml", dataset_yaml(origin.url, sorted(files)))
        origin.rate = None  # locking reads the whole origin once: not part of the measurement
        lock = repo.lock()
        if lock.returncode != 0:
            raise RuntimeError(f"lock failed: {lock.stderr}")
        origin.rate = rate
        repo.commit("bench")
        homes = [NodeHome(nm, tmp / nm, repo.root).write_config() for nm in names]
        res.nodes = [NodeResult(nm, f"127.0.0.{first_ip + i}") for i, nm in enumerate(names)]
        expected = tree_digest(origin_dir)

        env = {**os.environ, "SYNCBIT_LOG_LEVEL": "info"}
        cmd_tail = ["--once", "--timeout", str(timeout)] if mode == "once" else []
        cmds = [[sys.executable, "-m", "reconciler", "--config", str(h.config), *cmd_tail]
                for h in homes]
        logs = [open(h.base / f"{mode}.log", "wb") for h in homes]
        origin.bytes_sent = 0
        cpu0 = _children_cpu()
        t0_wall = time.time()
        t0 = time.monotonic()
        for c, lg in zip(cmds, logs):
            procs.append(subprocess.Popen(c, stdout=lg, stderr=subprocess.STDOUT, env=env,
                                          stdin=subprocess.DEVNULL, cwd=tmp))

        deadline = t0 + timeout + (10 if mode == "once" else 0)
        last_origin = 0
        while True:
            now = time.monotonic() - t0
            sent = origin.bytes_sent
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
                res.origin_bytes_at_all_ready = origin.bytes_sent
            if mode == "once" and all(p.poll() is not None for p in procs):
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
        res.origin_bytes = origin.bytes_sent
        origin.stop()
    res.cpu_s = _children_cpu() - cpu0
    res.cpu_share = res.cpu_s / ((os.cpu_count() or 1) * res.wall_s) if res.wall_s else 0.0

    for h, nr, p in zip(homes, res.nodes, procs):
        if nr.exit_code is None:
            nr.exit_code = p.returncode  # daemon: after SIGTERM (0 = clean stop)
        nr.activated_s = _activated_at(h.base / f"{mode}.log", t0_wall)
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
    res.max_ready_s, res.median_ready_s = _max(ready), _median(ready)
    res.max_activated_s, res.median_activated_s = _max(act), _median(act)
    exits = [nr.exit_s for nr in res.nodes if nr.exit_s is not None]
    res.max_exit_s = _max(exits) if mode == "once" else None
    if res.all_ready:
        res.max_over_t_bound = res.max_ready_s / res.t_bound_s  # type: ignore[operator]
        res.median_over_t_bound = res.median_ready_s / res.t_bound_s  # type: ignore[operator]
    res.peer_bytes = sum(nr.bytes_from_peers for nr in res.nodes)
    res.origin_bytes_reported = sum(nr.bytes_from_origin for nr in res.nodes)
    if not keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return res


# -- reporting -------------------------------------------------------------------------------------

def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]no[/]"


def print_tables(results: list[RunResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    t = Table(title="Syncbit swarm bench (times in s from the common start; x = ratio)")
    for col in ("run", "N", "mode", "origin MiB", "amp", "amp<=1.05", "T_bound", "max Ready",
                "med Ready", "max/T", "med/T", "<=1.2x", "max/single", "max activ.",
                "max exit", "peers MiB", "node-origin MiB", "CPU share", "data"):
        t.add_column(col, justify="right")
    for r in results:
        ok_amp = r.amplification <= AMPLIFICATION_GOAL
        ok_t = r.max_over_t_bound is not None and r.max_over_t_bound <= TIME_GOAL
        t.add_row(
            ("baseline" if r.kind == "baseline" else "cluster") + f" #{r.repeat + 1}",
            str(r.n), r.mode, f"{r.origin_bytes / MIB:.1f}", f"{r.amplification:.3f}",
            _mark(ok_amp), f"{r.t_bound_s:.2f}", _f(r.max_ready_s), _f(r.median_ready_s),
            _f(r.max_over_t_bound), _f(r.median_over_t_bound), _mark(ok_t),
            _f(r.max_over_single), _f(r.max_activated_s), _f(r.max_exit_s),
            f"{r.peer_bytes / MIB:.1f}", f"{r.origin_bytes_reported / MIB:.1f}",
            f"{r.cpu_share:.0%}",
            ("[green]ok[/]" if r.all_ready else "[red]FAIL[/]") + (" (timeout)" if r.timed_out else ""))
    con.print(t)
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
    ap.add_argument("--origin-mibps", type=float, default=16.0,
                    help="origin bandwidth for the whole origin, MiB/s (default 16)")
    ap.add_argument("--modes", nargs="+", choices=("once", "daemon"), default=["once", "daemon"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="per run, seconds (default 120)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the single-node baseline")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, stores)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)

    size = int(args.size_mib * MIB)
    rate = int(args.origin_mibps * MIB)
    mach = machine()
    print(f"machine: {mach}")
    print(f"dataset {size} B ({args.size_mib} MiB), origin {args.origin_mibps} MiB/s, "
          f"T_bound = {size / rate:.2f} s; nodes {args.nodes}, modes {args.modes}, "
          f"repeat {args.repeat}")
    files = dataset_files(size)
    workdir = Path(tempfile.mkdtemp(prefix="syncbit-bench-"))
    origin_dir = write_data(workdir / "origin", files)
    addrs = Addresses()
    results: list[RunResult] = []
    started = datetime.now(timezone.utc)
    try:
        for rep in range(args.repeat):
            for mode in args.modes:
                single = None
                if not args.no_baseline:
                    print(f"[{rep + 1}/{args.repeat}] {mode}: baseline, 1 node ...", flush=True)
                    single = run_cluster("baseline", mode, 1, rep, files, origin_dir, rate,
                                         addrs.take(1), args.timeout, args.keep, workdir)
                    results.append(single)
                for n in args.nodes:
                    print(f"[{rep + 1}/{args.repeat}] {mode}: {n} nodes ...", flush=True)
                    r = run_cluster("cluster", mode, n, rep, files, origin_dir, rate,
                                    addrs.take(n), args.timeout, args.keep, workdir)
                    if single is not None and single.max_ready_s and r.max_ready_s and r.all_ready:
                        r.max_over_single = r.max_ready_s / single.max_ready_s
                    results.append(r)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            print(f"kept: {workdir}")

    print_tables(results)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {"started": started.isoformat(), "command": [sys.executable, *sys.argv],
           "machine": mach,
           "params": {"nodes": args.nodes, "size_bytes": size, "origin_rate": rate,
                      "modes": args.modes, "repeat": args.repeat, "timeout": args.timeout},
           "goals": {"amplification": AMPLIFICATION_GOAL, "time_over_t_bound": TIME_GOAL},
           "runs": [asdict(r) for r in results]}
    out.write_text(json.dumps(doc, indent=2))
    print(f"results: {out}")
    return 0 if all(r.all_ready for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
