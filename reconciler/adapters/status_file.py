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
from typing import Mapping

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from reconciler.adapters import atomic
from reconciler.core.conditions import pass_result, render_status
from reconciler.core.timefmt import rfc3339_to_epoch
from reconciler.model.status import PHASES, DatasetStatus, NodeReport, Rejected, Result

__all__ = ["PHASES", "DatasetStatus", "NodeReport", "Rejected", "Result", "now_rfc3339",
           "pass_result", "read_status", "render_metrics", "render_status", "write_status"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_metrics(status: Mapping[str, object]) -> bytes:
    reg = CollectorRegistry()
    node = str(status["node"])
    g = lambda name, doc, labels=(): Gauge(f"syncbit_{name}", doc, ["node", *labels], registry=reg)  # noqa: E731

    g("info", "Revisions this node has seen and applied.", ("observed_revision", "applied_revision")
      ).labels(node, str(status["observedRevision"] or ""),
               str(status["lastAppliedRevision"] or "")).set(1)
    g("revision_rejected", "1 when the newest revision of the state repo was rejected."
      ).labels(node).set(1 if status["rejected"] else 0)
    lp = status["lastPass"]
    assert isinstance(lp, dict)
    res = g("last_pass_result", "Result of the last reconciliation pass (1 for the current one).",
            ("result",))
    for r in ("Converged", "Progressing", "Failed", "Rejected"):
        res.labels(node, r).set(1 if lp["result"] == r else 0)
    g("last_pass_timestamp_seconds", "When the last pass finished (Unix time)."
      ).labels(node).set(rfc3339_to_epoch(lp.get("finishedAt") or lp["startedAt"]) or 0.0)
    conds = status["conditions"]
    assert isinstance(conds, list)
    g("ready", "1 when every dataset placed on this node is Ready.").labels(node).set(
        1 if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else 0)

    phase = g("dataset_phase", "Phase of each dataset (1 for the current one).", ("dataset", "phase"))
    per = {k: g(k2, doc, ("dataset",)) for k, k2, doc in (
        ("bytesTotal", "dataset_bytes", "Bytes of the dataset version."),
        ("bytesDone", "dataset_bytes_done", "Bytes verified on this node."),
        ("bytesFromOrigin", "dataset_origin_bytes", "Bytes fetched from origins in this process's life."),
        ("bytesFromPeers", "dataset_peer_bytes", "Bytes fetched from peers in this process's life."),
        ("downloadRate", "dataset_download_rate_bytes", "Download rate, bytes/s."),
        ("uploadRate", "dataset_upload_rate_bytes", "Upload rate, bytes/s."),
        ("peers", "dataset_peers", "Connected peers."))}
    datasets = status["datasets"]
    assert isinstance(datasets, dict)
    for name, d in datasets.items():
        for p in PHASES:
            phase.labels(node, name, p).set(1 if d["phase"] == p else 0)
        for k, gauge in per.items():
            gauge.labels(node, name).set(d[k] or 0)
    return generate_latest(reg)


def read_status(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(status_file: Path, metrics_file: Path, report: NodeReport) -> dict[str, object]:
    """Render and write both files atomically; returns the status document."""
    doc = render_status(report, read_status(status_file))
    try:
        atomic.write_json(status_file, doc)
        atomic.write_bytes(metrics_file, render_metrics(doc))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # The disk is full: give up the room kept for this moment and write again, so the
        # status that says "no room" reaches monitoring. The room is taken back later.
        _reserve_path(status_file).unlink(missing_ok=True)
        atomic.write_json(status_file, doc)
        atomic.write_bytes(metrics_file, render_metrics(doc))
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
