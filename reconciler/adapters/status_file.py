"""The NodeStatus document (DESIGN §6) and its Prometheus textfile twin.

Both are rendered from the same `NodeReport`, written atomically, and read by monitoring; the
field names are public interface.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from reconciler.adapters import atomic
from reconciler.model.desired import ValidationError

Phase = Literal["Pending", "Fetching", "Verifying", "Ready", "Draining", "Failed", "Suspended"]
PHASES: tuple[Phase, ...] = ("Pending", "Fetching", "Verifying", "Ready", "Draining", "Failed",
                             "Suspended")
Result = Literal["Converged", "Progressing", "Failed", "Rejected"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class DatasetStatus:
    phase: Phase
    version: str | None = None
    path: str | None = None
    infoHash: str | None = None
    bytesTotal: int = 0
    bytesDone: int = 0
    bytesFromOrigin: int = 0
    bytesFromPeers: int = 0
    downloadRate: int = 0
    uploadRate: int = 0
    peers: int = 0
    error: str | None = None


@dataclass
class Rejected:
    revision: str
    errors: Sequence[ValidationError]


@dataclass
class NodeReport:
    node: str
    observed_revision: str | None
    last_applied_revision: str | None
    started_at: str
    finished_at: str | None
    result: Result
    datasets: Mapping[str, DatasetStatus] = field(default_factory=dict)
    rejected: Rejected | None = None


def pass_result(datasets: Mapping[str, DatasetStatus], rejected: bool) -> Result:
    if rejected:
        return "Rejected"
    phases = {d.phase for d in datasets.values()}
    if "Failed" in phases:
        return "Failed"
    if phases - {"Ready", "Suspended", "Draining"}:
        return "Progressing"
    return "Converged"


def _conditions(r: NodeReport, previous: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    failed = sorted(n for n, d in r.datasets.items() if d.phase == "Failed")
    waiting = sorted(n for n, d in r.datasets.items()
                     if d.phase not in ("Ready", "Suspended", "Draining", "Failed"))
    if r.result == "Rejected":
        rej = r.rejected
        n = len(rej.errors) if rej else 0
        first = str(rej.errors[0]) if rej and rej.errors else ""
        ready = ("False", "RevisionRejected", f"revision {rej.revision if rej else '?'} rejected "
                 f"with {n} error(s), still serving {r.last_applied_revision}: {first}")
    elif r.result == "Failed":
        ready = ("False", "Failed", "failed: " + ", ".join(failed))
    elif r.result == "Progressing":
        ready = ("False", "Progressing", "not ready yet: " + ", ".join(waiting))
    else:
        ready = ("True", "Converged", f"{len(r.datasets)} dataset(s) converged at "
                 f"{r.last_applied_revision}")
    reconciling = (("True", "Progressing", "fetching: " + ", ".join(waiting)) if waiting
                   else ("False", "Idle", "nothing to do"))
    stalled = (("True", "RevisionRejected", ready[2]) if r.result == "Rejected"
               else ("True", "Failed", ready[2]) if failed
               else ("False", "Healthy", "no failures"))
    prev = {c.get("type"): c for c in previous if isinstance(c, dict)}
    now = r.finished_at or r.started_at
    out = []
    for type_, (status, reason, message) in (("Ready", ready), ("Reconciling", reconciling),
                                             ("Stalled", stalled)):
        old = prev.get(type_)
        kept = old.get("lastTransitionTime") if old and old.get("status") == status else None
        since = kept if isinstance(kept, str) and kept else now
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since})
    return out


def render_status(r: NodeReport, previous: Mapping[str, object] | None = None) -> dict[str, object]:
    prev_conditions = (previous or {}).get("conditions") or []
    if not isinstance(prev_conditions, list):
        prev_conditions = []  # a hand-edited or foreign file: start the clocks afresh
    return {
        "apiVersion": "syncbit/v1",
        "kind": "NodeStatus",
        "node": r.node,
        "observedRevision": r.observed_revision,
        "lastAppliedRevision": r.last_applied_revision,
        "rejected": None if r.rejected is None else {
            "revision": r.rejected.revision,
            "errors": [{"file": e.file, "line": e.line, "field": e.field, "message": e.message}
                       for e in r.rejected.errors]},
        "lastPass": {"startedAt": r.started_at, "finishedAt": r.finished_at, "result": r.result},
        "conditions": _conditions(r, prev_conditions),  # type: ignore[arg-type]
        "datasets": {name: asdict(d) for name, d in sorted(r.datasets.items())},
    }


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
      ).labels(node).set(_epoch(lp.get("finishedAt") or lp["startedAt"]))
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


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def read_status(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(status_file: Path, metrics_file: Path, report: NodeReport) -> dict[str, object]:
    """Render and write both files atomically; returns the status document."""
    doc = render_status(report, read_status(status_file))
    atomic.write_json(status_file, doc)
    atomic.write_bytes(metrics_file, render_metrics(doc))
    return doc
