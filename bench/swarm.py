"""The real product on a shaped network, against the fluid lower bound and against curl and
aria2c pulling from the same origin:

    python -m bench.swarm --nodes N --size SIZE [--files K] [--origin-rate R]
        [--origin-conn-rate R] [--origin-latency MS] [--node-rate R] [--slow-node FACTOR]
        [--stagger S] [--rollout FRACTION] [--datasets K] [--once] [--no-baselines] [--json]

Run as root from the project root (network namespaces, veth, tc). One namespace per node and one
for the origin, every link shaped (bench/namespaces.py); one product daemon per node
(bench/cluster.py); the origin is bench/origin.py. Measured: time from the common start until
every node's status.json says Ready, and the bytes the origin sent; every node's data is then
checked byte for byte. `--datasets K`: K datasets of --size each, on every node, committed
together; a node is Ready when all K are, and the origin's bytes are also split by dataset.
With --json the last line printed is exactly one JSON object
{"nodes", "datasets", "bytes", "seconds", "lower_bound_seconds", "lower_bound_ratio",
"origin_amplification", "worst_dataset_amplification", "naive_seconds", "aria2_seconds"}
("bytes": all datasets together); everything else (per node, per dataset, peer connections
per node, the rollout, the run without the slow node) goes to
bench/results/<UTC time>-swarm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import baselines
from bench.bound import fluid_lower_bound, parse_size
from bench.cluster import Cluster, Phase
from bench.dataset import Version, write_datasets, write_rollout
from bench.namespaces import Network, cleanup_leftovers
from bench.table import print_run

ROOT = Path(__file__).resolve().parent.parent
ORIGIN_OCTET, FIRST_NODE_OCTET = 1, 11


@dataclass
class Params:
    nodes: int
    size: int
    files: int
    origin_rate: int
    origin_conn_rate: int  # 0 = no per-connection cap
    origin_latency_ms: float
    node_rate: int
    slow_node: float  # 0 = none; else the last node's links are this many times slower
    stagger: float
    rollout: float  # 0 = none; else the fraction of files changed in the next version
    baselines: tuple[str, ...]  # of "curl", "aria2c"
    timeout: float
    datasets: int = 1
    once: bool = False  # `--once` runs (exit when converged), not daemons
    max_active: int | None = None  # every node's maxActiveDownloads (None: the default)
    start: str = "warm"  # warm: daemons up on an idle repo, timed from the commit; cold: not


@dataclass
class RunResult:
    """One cluster: N daemons from start to Ready (and a rollout), plus the baselines."""

    label: str
    nodes: int
    size: int
    lower_bound_seconds: float
    first: Phase
    rollout: Phase | None = None
    rollout_lower_bound_seconds: float | None = None
    slow: list[str] = field(default_factory=list)  # names of the slow nodes
    baselines: list[baselines.Baseline] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        return self.first.seconds

    def others_seconds(self) -> float | None:
        """The slowest node that is not slow itself."""
        t = [n.ready_s for n in self.first.nodes if n.name not in self.slow]
        return None if None in t or not t else max(x for x in t if x is not None)

    def baseline(self, tool: str) -> float | None:
        return next((b.seconds for b in self.baselines if b.tool == tool), None)

    def ok(self) -> bool:
        phases = [self.first] + ([self.rollout] if self.rollout else [])
        return all(p.seconds is not None and all(n.data_ok for n in p.nodes) for p in phases)


def _rates(p: Params, n: int, slow: bool) -> list[int]:
    return [int(p.node_rate / p.slow_node) if slow and i == n - 1 else p.node_rate
            for i in range(n)]


def run_cluster(p: Params, label: str, n: int, slow: bool, tools: tuple[str, ...],
                workdir: Path, v1s: list[Version], v2: Version | None,
                trace: Path | None = None) -> RunResult:
    """A fresh network and cluster of `n` nodes (the last one slow if `slow`), torn down at the
    end whatever happens. `trace`: write the origin's per-GET log there, with a first line
    naming each node's address."""
    rates = _rates(p, n, slow)
    v1, size = v1s[0], sum(v.size for v in v1s)
    tlb = fluid_lower_bound(size, p.origin_rate, rates, rates)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=workdir))
    cluster: Cluster | None = None
    with Network().open() as net:
        try:
            origin = net.add("o", ORIGIN_OCTET, p.origin_rate, p.origin_rate)
            hosts = [net.add(f"n{i + 1}", FIRST_NODE_OCTET + i, r, r) for i, r in enumerate(rates)]
            if trace is not None:
                trace.parent.mkdir(parents=True, exist_ok=True)
                trace.write_text(json.dumps({"nodes": {h.ip: h.name for h in hosts},
                                             "slow": hosts[-1].name if slow else None,
                                             "size": size}) + "\n")
            warm = p.start == "warm" and not p.stagger and not p.once
            cluster = Cluster(net, origin, hosts, run_dir, v1s, p.origin_conn_rate,
                              p.origin_latency_ms, once=p.timeout if p.once else 0.0,
                              node_config=None if p.max_active is None
                              else {"maxActiveDownloads": p.max_active}, warm=warm,
                              trace=trace)
            if warm:
                up = cluster.warm_up(p.timeout)
                say(f"[{label}] {n} daemons up on an idle state repo in {up:.1f} s")
            say(f"[{label}] {n} nodes, lower bound {tlb:.1f} s ...")
            first = cluster.converge(v1s, size, p.stagger, p.timeout, commit=warm,
                                     progress=lambda m: say(f"[{label}] {m}"))
            cluster.verify(first, v1s)
            res = RunResult(label, n, size, tlb, first,
                            slow=[hosts[-1].name] if slow else [])
            if v2 is not None and first.seconds is not None:
                say(f"[{label}] rollout to {v2.name}: {len(v2.changed)} files changed "
                    f"({v2.changed_bytes} B) ...")
                cluster.prepare([v2])
                res.rollout = cluster.converge([v2], v2.changed_bytes, 0, p.timeout, commit=True,
                                               progress=lambda m: say(f"[{label}] {m}"))
                cluster.verify(res.rollout, [v2])
                res.rollout_lower_bound_seconds = fluid_lower_bound(
                    v2.changed_bytes, p.origin_rate, rates, rates)
            cluster.stop_daemons()
            for tool in tools:
                say(f"[{label}] baseline: {tool} on every node ...")
                res.baselines.append(baselines.run(tool, hosts, v1, cluster.origin, run_dir,
                                                   p.timeout * 4))
            return res
        finally:
            if cluster is not None:
                cluster.close()
            if not os.environ.get("SYNCBIT_BENCH_KEEP"):
                shutil.rmtree(run_dir, ignore_errors=True)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import libtorrent as lt

    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), "0")
    return {"nproc": os.cpu_count(), "ram_gib": round(int(mem) / (1 << 20), 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "libtorrent": lt.__version__,
            "load1": round(os.getloadavg()[0], 2)}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`: processes, namespaces, temp dirs


def parse_args(argv: list[str] | None) -> tuple[Params, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--size", type=parse_size, default=parse_size("64MiB"))
    ap.add_argument("--files", type=int, default=10, help="files in the dataset (default 10)")
    ap.add_argument("--origin-rate", type=parse_size, default=parse_size("4MiB"),
                    help="origin uplink, bytes/s (default 4MiB)")
    ap.add_argument("--origin-conn-rate", type=parse_size, default=0,
                    help="cap of each origin connection, bytes/s (default 0: none)")
    ap.add_argument("--origin-latency", type=float, default=0.0, metavar="MS",
                    help="delay before every origin response's first byte (default 0)")
    ap.add_argument("--node-rate", type=parse_size, default=parse_size("8MiB"),
                    help="each node's up and down link, bytes/s (default 8MiB)")
    ap.add_argument("--slow-node", type=float, default=0.0, metavar="FACTOR",
                    help="the last node's links FACTOR x slower; also runs the cluster without "
                         "it and compares the other nodes' times")
    ap.add_argument("--stagger", type=float, default=0.0, metavar="S",
                    help="node i starts i x S seconds after the first (a late joiner)")
    ap.add_argument("--start", choices=("warm", "cold"), default="warm",
                    help="warm (default): the daemons start on an idle state repo and the clock "
                    "starts at the dataset's commit once all are up; cold: the dataset is "
                    "committed first and the clock starts with the daemons (--stagger: cold)")
    ap.add_argument("--rollout", type=float, default=0.0, metavar="FRACTION",
                    help="after Ready, commit a version with this fraction of the files changed")
    ap.add_argument("--datasets", type=int, default=1, metavar="K",
                    help="K datasets of --size each on every node, committed together "
                         "(default 1; K > 1: no rollout, no baselines)")
    ap.add_argument("--once", action="store_true",
                    help="start `--once --timeout <timeout>` runs, all together, not daemons")
    ap.add_argument("--max-active", type=int, default=None, metavar="N",
                    help="every node's maxActiveDownloads, >= 1 (default: the product's, 4)")
    ap.add_argument("--baselines", default="curl,aria2c",
                    help="comma-separated baselines to run after the cluster: curl, aria2c "
                         "(default both; a single curl connection against --origin-conn-rate "
                         "takes S / conn-rate, which may be long)")
    ap.add_argument("--no-baselines", action="store_true", help="skip curl and aria2c")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="per phase, seconds (default 300)")
    ap.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    ap.add_argument("--origin-log", type=Path, default=None, metavar="DIR",
                    help="write the origin's per-GET log of each cluster to "
                         "DIR/<UTC time>-<cluster>-origin.jsonl (bench/origin_trace.py reads it)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args(argv)
    if a.nodes < 1 or a.files < 1 or (a.slow_node and (a.slow_node < 1 or a.nodes < 2)):
        ap.error("--nodes and --files >= 1; --slow-node needs FACTOR >= 1 and --nodes >= 2")
    if not 0 <= a.rollout <= 1:
        ap.error("--rollout is a fraction of the files, 0..1")
    if a.datasets < 1 or (a.datasets > 1 and a.rollout):
        ap.error("--datasets K >= 1; --rollout needs --datasets 1")
    if a.once and (a.rollout or a.stagger):
        ap.error("--once: every run starts together and exits; no --rollout or --stagger")
    tools = () if a.no_baselines or a.datasets > 1 else \
        tuple(t for t in a.baselines.split(",") if t)
    if set(tools) - {"curl", "aria2c"}:
        ap.error("--baselines: curl, aria2c")
    return Params(a.nodes, a.size, a.files, a.origin_rate, a.origin_conn_rate, a.origin_latency,
                  a.node_rate, a.slow_node, a.stagger, a.rollout, tools, a.timeout, a.datasets,
                  a.once, a.max_active, a.start), a


def summary(r: RunResult) -> dict[str, Any]:
    """The line --json promises, exactly these keys."""
    s = r.seconds
    ph = r.first
    worst = max((ph.origin_by_dataset.get(d, 0) / b for d, b in ph.dataset_bytes.items()),
                default=0.0)
    return {"nodes": r.nodes, "datasets": len(ph.dataset_bytes), "bytes": r.size,
            "seconds": None if s is None else round(s, 2),
            "lower_bound_seconds": round(r.lower_bound_seconds, 2),
            "lower_bound_ratio": None if s is None else round(s / r.lower_bound_seconds, 3),
            "origin_amplification": round(r.first.origin_bytes / r.size, 4),
            "worst_dataset_amplification": round(worst, 4),
            "naive_seconds": r.baseline("curl"), "aria2_seconds": r.baseline("aria2c")}


def main(argv: list[str] | None = None) -> int:
    p, a = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.swarm needs root (ip netns, veth, tc)")
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then raises no
    # KeyboardInterrupt; the benchmark must clean up whoever stops it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _terminate)
    left = cleanup_leftovers()
    if left:
        say(f"removed leftovers of an earlier run: {left}")
    started = datetime.now(UTC)
    mach = machine()
    workdir = Path(tempfile.mkdtemp(prefix="syncbit-bench-swarm-"))
    runs: list[RunResult] = []
    try:
        v1 = write_datasets(workdir / "origin", "v1", p.size, p.files, p.datasets)
        v2 = write_rollout(v1[0], "v2", p.rollout) if p.rollout else None
        stamp = started.strftime('%Y%m%dT%H%M%SZ')
        trace = (lambda label: None if a.origin_log is None  # noqa: E731
                 else a.origin_log.resolve() / f"{stamp}-{label}-origin.jsonl")
        runs.append(run_cluster(p, "main", p.nodes, bool(p.slow_node), p.baselines, workdir,
                                v1, v2, trace("main")))
        if p.slow_node:
            runs.append(run_cluster(p, "without-slow", p.nodes - 1, False, (), workdir, v1, None,
                                    trace("without-slow")))
    finally:
        if not os.environ.get("SYNCBIT_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        cleanup_leftovers()
    main_run = runs[0]
    doc = {"started": started.isoformat(), "command": [sys.executable, "-m", "bench.swarm",
                                                        *(argv if argv is not None else sys.argv[1:])],
           "machine": mach, "params": asdict(p), "summary": summary(main_run),
           "runs": [asdict(r) for r in runs]}
    if p.slow_node and len(runs) == 2:
        with_slow, without = runs[0].others_seconds(), runs[1].seconds
        doc["slow_node"] = {"others_with_slow_s": with_slow, "others_without_slow_s": without,
                            "ratio": None if not with_slow or not without
                            else round(with_slow / without, 3)}
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}-swarm.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    print_run(doc)
    print(f"results: {out}")
    if a.json:
        print(json.dumps(doc["summary"]))
    return 0 if all(r.ok() for r in runs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
