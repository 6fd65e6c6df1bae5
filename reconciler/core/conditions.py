"""The status document (DESIGN §6) from a NodeReport: pass result and Flux-style conditions.

Pure: the previous document is passed in (its conditions' `lastTransitionTime` carry over while
their status holds), and no clock is read.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from reconciler.model.status import DatasetStatus, NodeReport, Result


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
    warnings = r.placement_warnings
    placement = (("False", "PlacementUnsatisfiable",
                  f"{len(warnings)} placement warning(s): " + "; ".join(warnings))
                 if warnings else ("True", "Satisfied", "placement satisfied as written"))
    prev = {c.get("type"): c for c in previous if isinstance(c, dict)}
    now = r.finished_at or r.started_at
    out: list[dict[str, object]] = []
    for type_, (status, reason, message) in (("Ready", ready), ("Reconciling", reconciling),
                                             ("Stalled", stalled),
                                             ("PlacementSatisfied", placement)):
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
        "conditions": _conditions(r, prev_conditions),
        "datasets": {name: d.to_json() for name, d in sorted(r.datasets.items())},
    }
