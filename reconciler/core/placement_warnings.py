"""Placement that a valid revision asks for but cannot get, found from the state repo alone.

`syncbit-reconcile validate` prints these as warnings (the revision is still valid: every node
places what it can, DESIGN §3). Pure: it reads the validated model and asks
`reconciler.core.placement.place` (the same placement every node computes) what it placed,
so a warning never disagrees with what the nodes will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from reconciler.core.placement import place
from reconciler.model.desired import Dataset, DesiredState, Placement


@dataclass(frozen=True, order=True)
class PlacementWarning:
    """One warning, printed like a validation error: `FILE:LINE:COL: FIELD: MESSAGE`."""

    file: str
    line: int
    col: int
    field: str
    message: str
    dataset: str = ""  # the dataset it is about (also named in the message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.field}: {self.message}"


def _selector_text(p: Placement) -> str:
    parts = [f"{k}: {v}" for k, v in sorted(p.selector.items())]
    parts += [f"{r.key} {r.operator}" + (f" ({', '.join(r.values)})" if r.values else "")
              for r in p.match_expressions]
    return "{" + ", ".join(parts) + "}"


def _warn(d: Dataset, field: str, message: str) -> PlacementWarning:
    pos = d.position
    return PlacementWarning(pos.file if pos else f"<dataset {d.name}>", pos.line if pos else 1,
                            pos.col if pos else 1, field, f"dataset {d.name}: {message}", d.name)


def placement_warnings(state: DesiredState) -> list[PlacementWarning]:
    """Every dataset whose placement cannot be satisfied as written, sorted by position.

    - `replicas: N` when fewer than N nodes can take it (too few match the selector, matching
      nodes are cordoned, one node per `storageGroup`, or not enough `capacity`);
    - `all: true` whose selector matches no node (or only cordoned ones), whose eligible nodes
      lack room, or that leaves a storage group with an eligible member without a copy;
    - `selector` next to `nodes:` (the selector is ignored: `nodes` names the nodes);
    - `split: {copies: K}` with fewer than K target nodes (each file is on all of them);
    - a `nodes:` entry naming a cordoned node (placed there anyway: an explicit pin), no Node
      document (validation rejects that already; kept here so the function is complete on
      any model) or a node the selector would not match.
    """
    assignments = place(state)
    out: list[PlacementWarning] = []
    for name in sorted(state.datasets):
        d = state.datasets[name]
        p = d.placement
        a = assignments.get(name)
        selector = _selector_text(p) if p.has_selector else None
        held = len(a.nodes) if a is not None else 0
        if d.split is not None and d.split > held:
            out.append(_warn(d, "spec.split.copies",
                             f"copies: {d.split} is more than its {held} target node(s): "
                             f"each file is on all {held} of them"))
        if p.nodes is not None:
            unknown = [n for n in p.nodes if n not in state.nodes]
            for n in unknown:
                out.append(_warn(d, "spec.placement.nodes",
                                 f"node '{n}' is not in the inventory (no Node document has "
                                 "this name): placed on the other nodes only"))
            cordoned = [n for n in p.nodes if n in state.nodes and state.nodes[n].cordoned]
            if cordoned:
                out.append(_warn(d, "spec.placement.nodes",
                                 f"cordoned node(s) {', '.join(cordoned)} named in nodes: "
                                 "placed there anyway (an explicit nodes: list is a pin; "
                                 "cordon stops replicas and all only)"))
            if selector:
                unmatched = sorted(n for n in p.nodes if n in state.nodes
                                   and not p.selects(state.nodes[n].labels))
                message = (f"selector {selector} is ignored next to nodes: (nodes names the "
                           "nodes itself)")
                if unmatched:
                    message += f"; it would not match {', '.join(unmatched)}"
                out.append(_warn(d, "spec.placement.selector", message))
            continue
        if a is None:
            continue
        where = f" matching selector {selector}" if selector else ""
        fenced = sum(1 for n in state.nodes.values() if n.cordoned and p.selects(n.labels))
        fence = f"; {fenced} matching node(s) cordoned" if fenced else ""
        if p.replicas is not None and len(a.nodes) < p.replicas:
            why = a.shortfall_reason or f"{len(a.nodes)} of {p.replicas} replicas placed"
            out.append(_warn(d, "spec.placement.replicas",
                             f"replicas: {p.replicas} cannot be satisfied: {why}{fence}"
                             + (f" ({where.strip()})" if where else "")))
        elif p.all and not a.nodes and not a.shortfall_reason:
            what = (f"all {fenced} Node(s){where} are cordoned" if fenced
                    else f"no Node{where}")
            out.append(_warn(d, "spec.placement.selector" if selector else "spec.placement.all",
                             f"all: true places it on no node: {what}"))
        elif p.all and a.shortfall_reason:
            out.append(_warn(d, "spec.placement.all",
                             f"all: true cannot be satisfied: {a.shortfall_reason}"))
        if p.all and a.unserved_groups:
            out.append(_warn(d, "spec.placement.all",
                             f"storage group(s) {', '.join(a.unserved_groups)}: no member "
                             "chosen (no eligible member has room), so no copy there"))
    return sorted(out)
