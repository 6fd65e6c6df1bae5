"""The real product on a shaped network: the origin process, a git state repo, one daemon per
node namespace, and the polling that turns their status files into times.

Why daemons (not `--once`) by default: a fleet runs the daemon; a late joiner and a rollout only
make sense for processes that stay up and keep seeding. `once=True` starts `--once` runs instead
(cron and init containers all started together); each exits 0 once it has converged and its peers
have what it seeds.

Several datasets (`bench.swarm --datasets K`) are written to one file and committed together; a
node counts as Ready when every dataset is Ready on it. Each node's peer connections (TCP to or
from the peer port, established) are sampled from its namespace's /proc/<pid>/net/tcp about once
a second: no process is started for it.

Everything started here is stopped by `Cluster.close()` (the caller's `finally`), by the Popen
handle of each process it started, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.dataset import Version, tree_digest
from bench.namespaces import UNSHAPED, Host, Network

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import NodeHome, StateRepo, dataset_yaml, http_source, node_yaml  # noqa: E402

DATASET = "weights"
ORIGIN_PORT = 8080
PEER_PORT = 6881
API_PORT = 9100
POLL = 0.2  # seconds between two reads of every node's status.json


@dataclass
class NodeResult:
    name: str
    ip: str
    up: int  # bytes/s of its links
    down: int
    start_s: float | None = None  # from the common start (t0): when its daemon was started
    ready_s: float | None = None  # first poll that saw every dataset Ready (at the version wanted)
    datasets_ready_s: dict[str, float] = field(default_factory=dict)  # each dataset's first Ready
    phase: str | None = None
    error: str | None = None
    bytes_from_origin: int = 0  # its status.json at the end of the phase
    bytes_from_peers: int = 0
    wire_down: int = 0  # bytes its link delivered to it during the phase (IP, incl. headers)
    wire_up: int = 0  # bytes it sent
    data_ok: bool | None = None
    events: dict[str, float] = field(default_factory=dict)  # first time of each log event
    series: list[tuple[float, int]] = field(default_factory=list)  # (s, link bytes down) ~1/s
    peer_conns: list[tuple[float, int]] = field(default_factory=list)  # (s, established) ~1/s
    exit_code: int | None = None  # `--once` only

    @property
    def peer_conns_max(self) -> int:
        return max((c for _, c in self.peer_conns), default=0)


@dataclass
class Phase:
    """One measured convergence: the first version, or a rollout to the next."""

    version: str
    size: int  # bytes that had to reach every node (dataset, or changed files of a rollout)
    seconds: float | None = None  # common start to the last node Ready (None: not all Ready)
    origin_bytes: int = 0  # body bytes the origin sent during the phase
    dataset_bytes: dict[str, int] = field(default_factory=dict)  # each dataset's size (or changed)
    origin_by_dataset: dict[str, int] = field(default_factory=dict)  # origin body bytes of each
    origin_first_byte_s: float | None = None
    # (s, bytes sent, responses in flight) at every poll: origin throughput and concurrency
    origin_series: list[tuple[float, int, int]] = field(default_factory=list)
    timed_out: bool = False
    nodes: list[NodeResult] = field(default_factory=list)


class OriginProcess:
    """bench/origin.py in the origin's namespace, reached over the bridge."""

    def __init__(self, host: Host, root: Path, conn_rate: int, latency_ms: float,
                 log: Path, trace: Path | None = None) -> None:
        """`trace`: bench/origin.py's `--log` (one JSON line per GET)."""
        self.host, self.conn_rate, self.latency_ms = host, conn_rate, latency_ms
        self.url = f"http://{host.ip}:{ORIGIN_PORT}"
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            host.argv([sys.executable, "-m", "bench.origin", "--root", str(root), "--host",
                       host.ip, "--port", str(ORIGIN_PORT), "--conn-rate", str(conn_rate),
                       "--latency-ms", str(latency_ms)]
                      + (["--log", str(trace)] if trace else [])),
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_env(), cwd=ROOT)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"origin did not start, see {log}") from None
                time.sleep(0.1)

    def _post(self, path: str, doc: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(self.url + path, json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, Any]:
        """{"bytes", "gets", "heads", "open": int, "by_top": {first path segment: bytes}}."""
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._post("/_stats/reset", {})

    def lifted(self, lifted: bool) -> None:
        """Per-connection cap and latency off (True) or back to the configured values."""
        self._post("/_control", {"conn_rate": 0 if lifted else self.conn_rate,
                                 "latency_ms": 0 if lifted else self.latency_ms})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _env() -> dict[str, str]:
    """The environment of every process the bench starts: this checkout first on the path, so
    the daemons run the product of the tree being benchmarked, not whatever is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "SYNCBIT_LOG_LEVEL": "info"}


def _wire(h: Host) -> tuple[int, int]:
    """(bytes delivered to the host, bytes it sent) so far, from its veth's bridge end."""
    stats = Path("/sys/class/net") / h.outer / "statistics"
    return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())


def _int(d: object, key: str) -> int:
    """An integer field of a status.json entry; 0 if the entry or field is missing."""
    return int(d.get(key) or 0) if isinstance(d, dict) else 0


def peer_connections(pid: int) -> int | None:
    """Established TCP connections to or from PEER_PORT in the network namespace of process
    `pid` (its /proc/<pid>/net/tcp{,6}); None once the process is gone."""
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return None if table == "tcp" else n
        for line in lines:
            f = line.split()
            if len(f) > 3 and f[3] == "01" and PEER_PORT_HEX in (f[1][-4:], f[2][-4:]):
                n += 1
    return n


PEER_PORT_HEX = f"{PEER_PORT:04X}"


def first_events(log: Path, t0_wall: float) -> dict[str, float]:
    """Seconds from t0 to the first occurrence of every log event after t0 (the daemon logs
    JSON lines): where a node's time went (start-up, first peer, verify, activation)."""
    out: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
            t = datetime.fromisoformat(ev["timestamp"]).timestamp() - t0_wall
        except (ValueError, KeyError, TypeError):
            continue
        if t >= -0.5 and ev.get("event") not in out:
            out[str(ev.get("event"))] = round(t, 2)
    return out


class Cluster:
    """N daemons, one per node host, against one origin; `converge()` measures one phase."""

    def __init__(self, net: Network, origin_host: Host, nodes: list[Host], workdir: Path,
                 first: Sequence[Version], conn_rate: int, latency_ms: float,
                 once: float = 0.0, node_config: dict[str, object] | None = None,
                 warm: bool = False, trace: Path | None = None) -> None:
        """`trace`: the origin's per-GET log (bench/origin.py `--log`). `once`: 0 for daemons,
        else start `--once --timeout <once>` runs. `node_config`: more keys of every node's
        config file (e.g. maxActiveDownloads). `warm`: the state repo starts idle (nodes only);
        `warm_up` starts the daemons, `converge(commit=True)` commits."""
        self.net, self.origin_host, self.hosts = net, origin_host, nodes
        self.workdir, self.once = workdir, once
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []
        origin_root = first[0].root.parents[first[0].prefix.count("/")]
        self.origin = OriginProcess(origin_host, origin_root, conn_rate, latency_ms,
                                    workdir / "origin.log", trace)
        try:
            self.repo = StateRepo.create(workdir / "state")
            self.repo.write("nodes.yaml", "---\n".join(
                node_yaml(h.name, h.ip, PEER_PORT, API_PORT) for h in nodes))
            self.homes = [NodeHome(h.name, workdir / h.name, self.repo.root,
                                   dict(node_config or {})).write_config() for h in nodes]
            if warm:  # an idle state repo: the datasets are committed by converge(commit=True)
                self.repo.commit("nodes")
            self.prepare(first)
            if not warm:
                self.repo.commit(first[0].name)
        except BaseException:  # the caller has no Cluster to close yet
            self.origin.stop()
            raise

    def prepare(self, vs: Sequence[Version]) -> None:
        """Write the Datasets at versions `vs` (one file) and lock them with the origin's caps
        and shaper lifted (the lock reads every byte once; that read is not part of any
        measurement); the commit is left to `converge(commit=True)`, after the counters are
        reset. The daemons read the work tree whenever it changes (not only a new HEAD), so
        the Datasets are written and locked in a copy of the repo, and the live one gets the
        lock files first and then ds.yaml in one rename: it never shows a Dataset without its
        lock. (Locked in place, the first-ranked node started building v2's torrent from the
        source while `lock` ran: 12 MB from the origin for a 6.7 MB rollout.)"""
        with tempfile.TemporaryDirectory(prefix="syncbit-bench-lock-") as tmp:
            stage = StateRepo(Path(tmp) / "repo")
            shutil.copytree(self.repo.root, stage.root, ignore=shutil.ignore_patterns(".git"))
            stage.write("ds.yaml", "---\n".join(dataset_yaml(
                v.dataset, http_source(f"{self.origin.url}/{v.prefix}/", list(v.sizes)),
                version=v.name, path=f"models/{v.dataset}") for v in vs))
            self.net.shape(self.origin_host, UNSHAPED, UNSHAPED)
            self.origin.lifted(True)
            try:
                lock = stage.lock(env=_env())
                if lock.returncode != 0:
                    raise RuntimeError(f"lock failed: {lock.stdout}{lock.stderr}")
            finally:
                self.origin.lifted(False)
                self.net.shape(self.origin_host, self.origin_host.up, self.origin_host.down)
            # Each lock under a name of its version (`lock` writes locks/<dataset>.torrent, the
            # live repo's lock of the version before): the live lock files never change.
            text = (stage.root / "ds.yaml").read_text()
            (self.repo.root / "locks").mkdir(exist_ok=True)
            for v in vs:
                name = f"{v.dataset}.{v.name}.torrent"
                shutil.copyfile(stage.root / "locks" / f"{v.dataset}.torrent",
                                self.repo.root / "locks" / name)
                text = text.replace(f"lock: locks/{v.dataset}.torrent\n",
                                    f"lock: locks/{name}\n")
                if f"lock: locks/{name}\n" not in text:
                    raise RuntimeError(f"no `lock: locks/{v.dataset}.torrent` in the locked "
                                       "ds.yaml")
            staged = self.repo.root / ".ds.yaml.tmp"  # hidden: the daemons skip it
            staged.write_text(text)
            os.replace(staged, self.repo.root / "ds.yaml")

    def _start(self, i: int) -> None:
        h, home = self.hosts[i], self.homes[i]
        log = open(home.base / "daemon.log", "ab")  # noqa: SIM115 (closed in close)
        self._logs.append(log)
        once = ["--once", "--timeout", f"{self.once:g}"] if self.once else []
        self.procs.append(subprocess.Popen(
            h.argv([sys.executable, "-m", "reconciler", *once, "--config", str(home.config)]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_env(), cwd=home.base))

    def warm_up(self, timeout: float) -> float:
        """Start every daemon on the idle state repo and wait until each one's API answers
        /healthz (its first pass is done): in production the daemons are up when a commit
        lands, and on 2 cores 8 Python daemons start 0.7-4 s apart. Returns the seconds it
        took."""
        t0 = time.monotonic()
        while len(self.procs) < len(self.hosts):
            self._start(len(self.procs))
        waiting = set(range(len(self.hosts)))
        while waiting:
            for i in list(waiting):
                try:
                    url = f"http://{self.hosts[i].ip}:{API_PORT}/healthz"
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            waiting.discard(i)
                except OSError:
                    pass
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a daemon exited ({dead[0].returncode}); see {self.workdir}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"daemons not up after {timeout:g} s: {sorted(waiting)}")
            time.sleep(POLL)
        return time.monotonic() - t0

    def _status(self, i: int) -> dict[str, dict[str, object]]:
        """Dataset name -> its entry in node i's status.json ({} if unreadable)."""
        try:
            doc = self.homes[i].status()
        except (OSError, ValueError):
            return {}
        return doc.get("datasets") or {}

    def converge(self, vs: Sequence[Version], size: int, stagger: float, timeout: float,
                 commit: bool = False, progress: Callable[[str], None] = lambda s: None
                 ) -> Phase:
        """Start the daemons not yet running (node i at i x stagger s) and poll until every node
        is Ready at `v` or `timeout` s after the last start. Origin and link counters count from
        this call; `commit` commits the prepared version once they are reset (a rollout)."""
        v = vs[0]
        ph = Phase(v.name, size)
        ph.dataset_bytes = {x.dataset: (x.changed_bytes if x.changed else x.size) for x in vs}
        ph.nodes = [NodeResult(h.name, h.ip, h.up, h.down) for h in self.hosts]
        self.origin.reset()
        wire0 = [_wire(h) for h in self.hosts]
        first_new = len(self.procs)
        if commit:
            self.repo.commit(v.name)
        t0, t0_wall = time.monotonic(), time.time()
        deadline = t0 + timeout + stagger * (len(self.hosts) - 1)
        exited = False
        while time.monotonic() < deadline:
            now = time.monotonic() - t0
            while len(self.procs) < len(self.hosts) and \
                    now >= (len(self.procs) - first_new) * stagger:
                ph.nodes[len(self.procs)].start_s = now
                self._start(len(self.procs))
            st = self.origin.stats()
            sent = st["bytes"]
            ph.origin_series.append((round(now, 2), sent, st["open"]))
            if len(ph.origin_series) % 5 == 1:  # every ~1 s: how each node's download went
                for j, (h, nr, w0) in enumerate(zip(self.hosts, ph.nodes, wire0)):
                    nr.series.append((round(now, 2), _wire(h)[0] - w0[0]))
                    c = peer_connections(self.procs[j].pid) if j < len(self.procs) else None
                    if c is not None:
                        nr.peer_conns.append((round(now, 2), c))
            if sent and ph.origin_first_byte_s is None:
                ph.origin_first_byte_s = now
            for i, nr in enumerate(ph.nodes):
                if nr.ready_s is not None or i >= len(self.procs):
                    continue
                st_i = self._status(i)
                for x in vs:
                    d = st_i.get(x.dataset) or {}
                    if x.dataset not in nr.datasets_ready_s and d.get("phase") == "Ready" \
                            and d.get("version") == x.name:
                        nr.datasets_ready_s[x.dataset] = now
                if len(nr.datasets_ready_s) == len(vs):
                    nr.ready_s = now
                    progress(f"{nr.name} Ready at {now:.1f} s")
            if all(nr.ready_s is not None for nr in ph.nodes):
                break
            dead = [p for p in self.procs if p.poll() is not None
                    and (not self.once or p.returncode != 0)]
            if dead:
                raise RuntimeError(f"a node exited ({dead[0].returncode}); see {self.workdir}")
            if self.once and len(self.procs) == len(self.hosts) and \
                    all(p.poll() is not None for p in self.procs):
                if exited:
                    break  # every run exited 0, their last status files read: nothing will change
                exited = True
            time.sleep(POLL)
        else:
            ph.timed_out = True
        ready = [nr.ready_s for nr in ph.nodes]
        ph.seconds = None if None in ready else max(r for r in ready if r is not None)
        st = self.origin.stats()
        ph.origin_bytes = st["bytes"]
        by_top: dict[str, int] = st.get("by_top") or {}
        ph.origin_by_dataset = {x.dataset: by_top.get(x.prefix.split("/")[0], 0) for x in vs}
        for i, nr in enumerate(ph.nodes):
            st_i = self._status(i)
            # the first dataset not Ready on the node (else the first): its phase and error
            d = next((st_i.get(x.dataset) or {} for x in vs
                      if (st_i.get(x.dataset) or {}).get("phase") != "Ready"),
                     st_i.get(v.dataset) or {})
            if i < len(self.procs):
                nr.exit_code = self.procs[i].poll()
            nr.phase, nr.error = d.get("phase"), d.get("error")  # type: ignore[assignment]
            nr.bytes_from_origin = sum(_int(st_i.get(x.dataset), "bytesFromOrigin") for x in vs)
            nr.bytes_from_peers = sum(_int(st_i.get(x.dataset), "bytesFromPeers") for x in vs)
            down, up = _wire(self.hosts[i])
            nr.wire_down, nr.wire_up = down - wire0[i][0], up - wire0[i][1]
            nr.events = first_events(self.homes[i].base / "daemon.log", t0_wall)
        return ph

    def verify(self, ph: Phase, vs: Sequence[Version]) -> None:
        """Byte-for-byte: every node's tree of every dataset against the origin's files."""
        want = {v.dataset: tree_digest(v.root) for v in vs}
        for home, nr in zip(self.homes, ph.nodes):
            try:
                nr.data_ok = all(tree_digest(home.data / "models" / ds) == w
                                 for ds, w in want.items())
            except OSError:
                nr.data_ok = False

    def close(self) -> None:
        """Stop every daemon and the origin (each by its Popen handle)."""
        self.stop_daemons()
        self.origin.stop()

    def stop_daemons(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; the origin keeps running (for the baselines)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        self._logs.clear()
