"""The NodeStatus document (DESIGN §6) and its Prometheus textfile twin.

Both are rendered from the same `NodeReport` (the document by core/conditions.py, the metrics
here with prometheus-client), written atomically, and read by monitoring; the field names are
public interface.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime, timezone
from pathlib import Path
import threading
import time
from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.adapters import atomic, disk, origin_errors
from reconciler.core.conditions import pass_result, render_status
from reconciler.core.timefmt import rfc3339_to_epoch
from reconciler.model.status import PHASES, DatasetStatus, NodeReport, Rejected, Result

__all__ = ["METRICS", "NodeMetrics", "PHASES", "DatasetStatus", "NodeReport", "Rejected", "Result", "now_rfc3339",
           "pass_result", "read_status", "render_metrics", "render_status", "write_status"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


#: Buckets of syncbit_pass_duration_seconds: a pass that only re-checks takes well under a
#: second; one that downloads lasts until the data is verified, minutes to hours.
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600,
                12 * 3600, float("inf"))
STORE_SCAN_EVERY = 30.0  # s between two walks of the store for syncbit_store_bytes
RESULTS: tuple[Result, ...] = ("Converged", "Progressing", "Failed", "Rejected")

#: Every metric a node exposes (in `/metrics` and in `metricsFile`), name -> (type, meaning).
#: The README's "Metrics" table and the Grafana test read this; keep it the source of truth.
METRICS: dict[str, tuple[str, str]] = {
    "syncbit_info": ("gauge", "1, labelled with the revision this node observed last and the one it applied last."),
    "syncbit_ready": ("gauge", "1 when every dataset placed on this node is Ready (the Ready condition)."),
    "syncbit_revision_rejected": ("gauge", "1 while the newest revision of the state repo is rejected."),
    "syncbit_revision_rejected_info": ("gauge", "Info metric: 1, labelled with the rejected revision and its number of errors; absent when none is."),
    "syncbit_last_pass_result": ("gauge", "Result of the last pass: 1 on the label of the current result."),
    "syncbit_last_pass_timestamp_seconds": ("gauge", "When the last pass finished (or started, while it runs), Unix time."),
    "syncbit_pass_duration_seconds": ("histogram", "Duration of each finished pass, from its start until nothing was in flight (downloads included), in seconds; this process's life."),
    "syncbit_passes_total": ("counter", "Passes finished, by result; this process's life."),
    "syncbit_dataset_phase": ("gauge", "Phase of each dataset: 1 on the label of the current phase."),
    "syncbit_dataset_ready": ("gauge", "1 when the dataset's version is Ready on this node, else 0."),
    "syncbit_dataset_bytes": ("gauge", "Bytes of the dataset version this node holds or fetches."),
    "syncbit_dataset_bytes_done": ("gauge", "Bytes of that version verified on this node."),
    "syncbit_dataset_origin_bytes_total": ("counter", "Bytes of that version fetched from origins (sources and mirrors); kept in the store across restarts."),
    "syncbit_dataset_peer_bytes_total": ("counter", "Bytes of that version fetched from peers; kept in the store across restarts."),
    "syncbit_dataset_origin_bytes": ("gauge", "Same value as syncbit_dataset_origin_bytes_total without the version label (older dashboards)."),
    "syncbit_dataset_peer_bytes": ("gauge", "Same value as syncbit_dataset_peer_bytes_total without the version label (older dashboards)."),
    "syncbit_dataset_download_rate_bytes": ("gauge", "Download rate of the dataset, bytes/s."),
    "syncbit_dataset_upload_rate_bytes": ("gauge", "Upload rate of the dataset to peers, bytes/s."),
    "syncbit_dataset_peers": ("gauge", "Peers connected for the dataset."),
    "syncbit_origin_errors_total": ("counter", "Failed reads from an origin, by dataset, origin name and reason (timeout, http_4xx, http_5xx, short_read, connection, hash_mismatch, other); this process's life."),
    "syncbit_store_bytes": ("gauge", "Bytes the store holds on disk (store/, staging/, objects/; hard links once)."),
    "syncbit_store_free_bytes": ("gauge", "Bytes available to the node on the store's filesystem."),
}


def _rendered_families(status: Mapping[str, object]) -> list[Metric]:
    """The metrics that are a rendering of one NodeStatus document."""
    node = str(status["node"])
    out: list[Metric] = []

    def gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        fam = GaugeMetricFamily(name, METRICS[name][1], labels=["node", *labels])
        out.append(fam)
        return fam

    def counter(name: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        # prometheus-client wants a counter's family name without `_total`
        fam = CounterMetricFamily(name.removesuffix("_total"), METRICS[name][1],
                                  labels=["node", *labels])
        out.append(fam)
        return fam

    gauge("syncbit_info", ("observed_revision", "applied_revision")).add_metric(
        [node, str(status["observedRevision"] or ""), str(status["lastAppliedRevision"] or "")], 1)
    rejected = status["rejected"]
    gauge("syncbit_revision_rejected").add_metric([node], 1 if rejected else 0)
    if isinstance(rejected, dict):
        errors = rejected.get("errors")
        gauge("syncbit_revision_rejected_info", ("revision", "errors")).add_metric(
            [node, str(rejected.get("revision") or ""),
             str(len(errors) if isinstance(errors, list) else 0)], 1)
    lp = status["lastPass"]
    assert isinstance(lp, dict)
    res = gauge("syncbit_last_pass_result", ("result",))
    for r in RESULTS:
        res.add_metric([node, r], 1 if lp["result"] == r else 0)
    gauge("syncbit_last_pass_timestamp_seconds").add_metric(
        [node], rfc3339_to_epoch(lp.get("finishedAt") or lp["startedAt"]) or 0.0)
    conds = status["conditions"]
    assert isinstance(conds, list)
    gauge("syncbit_ready").add_metric([node], 1 if any(
        c["type"] == "Ready" and c["status"] == "True" for c in conds) else 0)

    phase = gauge("syncbit_dataset_phase", ("dataset", "phase"))
    ready = gauge("syncbit_dataset_ready", ("dataset", "version"))
    origin_total = counter("syncbit_dataset_origin_bytes_total", ("dataset", "version"))
    peer_total = counter("syncbit_dataset_peer_bytes_total", ("dataset", "version"))
    per = {k: gauge(name, ("dataset",)) for k, name in (
        ("bytesTotal", "syncbit_dataset_bytes"), ("bytesDone", "syncbit_dataset_bytes_done"),
        ("bytesFromOrigin", "syncbit_dataset_origin_bytes"),
        ("bytesFromPeers", "syncbit_dataset_peer_bytes"),
        ("downloadRate", "syncbit_dataset_download_rate_bytes"),
        ("uploadRate", "syncbit_dataset_upload_rate_bytes"), ("peers", "syncbit_dataset_peers"))}
    datasets = status["datasets"]
    assert isinstance(datasets, dict)
    for name, d in datasets.items():
        for p in PHASES:
            phase.add_metric([node, name, p], 1 if d["phase"] == p else 0)
        version = str(d.get("version") or "")
        ready.add_metric([node, name, version], 1 if d["phase"] == "Ready" else 0)
        origin_total.add_metric([node, name, version], d.get("bytesFromOrigin") or 0)
        peer_total.add_metric([node, name, version], d.get("bytesFromPeers") or 0)
        for k, fam in per.items():
            fam.add_metric([node, name], d[k] or 0)
    return out


class _Rendered(Collector):
    def __init__(self, status: Callable[[], Mapping[str, object] | None]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        doc = self._status()
        return _rendered_families(doc) if doc is not None else []


def render_metrics(status: Mapping[str, object]) -> bytes:
    """The metrics that a status document alone determines (no pass history, no store)."""
    reg = CollectorRegistry()
    reg.register(_Rendered(lambda: status))
    return generate_latest(reg)


class NodeMetrics:
    """One node's metrics for this process, in one prometheus-client registry: those rendered
    from the status document, plus what outlives one document: the pass-duration histogram,
    passes by result, origin errors (origin_errors.py), and the store's size and free space.
    The runner tells it when a pass starts (`pass_started`); `write_status` feeds it every
    document; `render` gives the same text to `metricsFile` and to the API's `/metrics`."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.registry = CollectorRegistry()
        self._doc: Mapping[str, object] | None = None
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}  # lastPass.startedAt -> monotonic start
        self._seq = 0  # passes announced by pass_started
        # (announced passes, startedAt) of the last pass counted: startedAt has whole seconds,
        # and two passes often start within one (a pass right after a version completes).
        self._counted: tuple[int, str] | None = None
        self._store: tuple[int, int] | None = None  # (bytes, free)
        self._scanned_at: float | None = None
        self._shape: object = None  # the datasets' (name, version, phase) at the last walk
        self._durations = Histogram("syncbit_pass_duration_seconds",
                                    METRICS["syncbit_pass_duration_seconds"][1], ["node"],
                                    buckets=PASS_BUCKETS, registry=None)
        self._passes = Counter("syncbit_passes", METRICS["syncbit_passes_total"][1],
                               ["node", "result"], registry=None)
        for c in (self._durations, self._passes, _Rendered(self._current), _Extra(self)):
            self.registry.register(c)

    def _current(self) -> Mapping[str, object] | None:
        return self._doc

    def pass_started(self, started_at: str) -> None:
        """A pass began; `started_at` is its lastPass.startedAt."""
        with self._lock:
            self._seq += 1
            self._started = {started_at: time.monotonic()}

    def observe(self, doc: Mapping[str, object]) -> None:
        """A status document was published: count the pass if it just finished."""
        with self._lock:
            self._doc = doc
            node = str(doc.get("node"))
            for r in RESULTS:
                self._passes.labels(node, r)  # every result present from the start, at 0
            self._durations.labels(node)
            lp = doc.get("lastPass")
            if isinstance(lp, dict) and lp.get("finishedAt") and lp.get("startedAt"):
                started = str(lp["startedAt"])
                if (self._seq, started) != self._counted:
                    self._counted = (self._seq, started)
                    t0 = self._started.pop(started, None)
                    if t0 is not None:
                        duration = time.monotonic() - t0
                    else:  # not announced: from the document's times (whole seconds)
                        a, b = rfc3339_to_epoch(started), rfc3339_to_epoch(lp["finishedAt"])
                        duration = max(0.0, b - a) if a is not None and b is not None else 0.0
                    self._durations.labels(node).observe(duration)
                    self._passes.labels(node, str(lp.get("result"))).inc()
            self._scan_store()

    def _scan_store(self) -> None:
        if self.state_dir is None:
            return
        now = time.monotonic()
        try:
            shape = _shape(self._doc)
            if (self._store is not None and self._scanned_at is not None
                    and shape == self._shape and now - self._scanned_at < STORE_SCAN_EVERY):
                # free space is one statvfs; the walk for the bytes held only every so often
                self._store = (self._store[0], disk.statvfs(self.state_dir)[0])
                return
            self._scanned_at, self._shape = now, shape
            self._store = (disk.usage(self.state_dir).used, disk.statvfs(self.state_dir)[0])
        except OSError:
            self._store = None

    def extra_families(self) -> list[Metric]:
        doc = self._doc
        if doc is None:
            return []
        node = str(doc.get("node"))
        out: list[Metric] = []
        errs = CounterMetricFamily("syncbit_origin_errors",
                                   METRICS["syncbit_origin_errors_total"][1],
                                   labels=["node", "dataset", "origin", "reason"])
        for (dataset, origin, reason), n in sorted(origin_errors.snapshot().items()):
            errs.add_metric([node, dataset, origin, reason], n)
        out.append(errs)
        if self._store is not None:
            for name, value in zip(("syncbit_store_bytes", "syncbit_store_free_bytes"),
                                   self._store):
                fam = GaugeMetricFamily(name, METRICS[name][1], labels=["node"])
                fam.add_metric([node], value)
                out.append(fam)
        return out

    def render(self, doc: Mapping[str, object] | None = None) -> bytes:
        """The Prometheus text of the registry, for `doc` if given, else the last observed."""
        if doc is not None and doc is not self._doc:
            self.observe(doc)
        return generate_latest(self.registry)


def _shape(doc: Mapping[str, object] | None) -> object:
    """What, when it changes, changes the store's size: a version arrives, completes, goes."""
    datasets = doc.get("datasets") if doc is not None else None
    if not isinstance(datasets, dict):
        return None
    return tuple(sorted((n, d.get("version"), d.get("phase")) for n, d in datasets.items()
                        if isinstance(d, dict)))


class _Extra(Collector):
    def __init__(self, metrics: NodeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        return self._m.extra_families()


def read_status(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(status_file: Path, metrics_file: Path, report: NodeReport,
                 metrics: NodeMetrics | None = None) -> dict[str, object]:
    """Render and write both files atomically; returns the status document. With `metrics`,
    the document is observed there and the metrics file is its full registry."""
    doc = render_status(report, read_status(status_file))
    body = metrics.render(doc) if metrics is not None else render_metrics(doc)
    try:
        atomic.write_json(status_file, doc)
        atomic.write_bytes(metrics_file, body)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # The disk is full: give up the room kept for this moment and write again, so the
        # status that says "no room" reaches monitoring. The room is taken back later.
        _reserve_path(status_file).unlink(missing_ok=True)
        atomic.write_json(status_file, doc)
        atomic.write_bytes(metrics_file, body)
    _keep_reserve(status_file)
    return doc


RESERVE_BYTES = 256 << 10  # room kept next to the status file for writing it on a full disk


def _reserve_path(status_file: Path) -> Path:
    return status_file.parent / f".{status_file.name}.reserve"


def _keep_reserve(status_file: Path) -> None:
    """Hold RESERVE_BYTES of real blocks (fallocate) that a full disk can give back."""
    p = _reserve_path(status_file)
    try:
        if p.exists() and p.stat().st_blocks * 512 >= RESERVE_BYTES:
            return
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        p.unlink(missing_ok=True)  # no room for it now: try again on the next write
