"""`syncbit-reconcile status --cluster`: every node of the inventory, through its HTTP API.

Reads the desired state (for the inventory, the datasets and the revision to compare against),
asks every Node's `spec.api` for `GET /status` concurrently, and shows one table: a row per node,
a column per dataset. A node that does not answer is a row saying why, never dropped. Then a
summary line, and a `warning:` line per placement the revision cannot satisfy (as `validate`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Mapping, cast

from rich.table import Table

from reconciler.adapters.cluster_view import MAX_PARALLEL, fetch_cluster, split_summary
from reconciler.adapters.config import NodeConfig
from reconciler.app.exit_codes import EXIT_READY
from reconciler.model.desired import DesiredState
from reconciler.core.placement import place
from reconciler.core.placement_warnings import placement_warnings

_PHASE_COLOR = {"Ready": "green", "Fetching": "cyan", "Verifying": "cyan", "Pending": "cyan",
                "Draining": "yellow", "Failed": "bold red", "Suspended": "magenta"}
_RESULT_COLOR = {"Converged": "green", "Progressing": "cyan", "Failed": "bold red",
                 "Rejected": "bold red"}


def _unreachable(error: str) -> bool:
    """A connection-level failure, as opposed to an API that answered without a status."""
    return not error.startswith(_ANSWERED)


_ANSWERED = ("HTTP ", "invalid response", "wrong node")


def short_revision(rev: object) -> str:
    """12 characters of a git commit; `sha256:` + 12 hex of a directory digest."""
    if not isinstance(rev, str) or not rev:
        return "-"
    if rev.startswith("sha256:"):
        return rev[:7 + 12]
    return rev[:12]


def _cell(d: Mapping[str, object]) -> str:
    phase = str(d.get("phase") or "?")
    text = phase
    total, done = d.get("bytesTotal") or 0, d.get("bytesDone") or 0
    if phase in ("Fetching", "Verifying") and isinstance(total, int) and total > 0:
        # `bytesDone` is a JSON number in a well-formed status document (int() as before).
        done_n = int(cast("int | float", done))
        text = f"{phase} {int(100 * done_n / total)}%"  # floor: 100% only when it is
    return f"[{_PHASE_COLOR.get(phase, 'white')}]{text}[/]"


def _columns(results: Mapping[str, dict], state: DesiredState) -> tuple[list[str], list[str]]:
    """Datasets of the desired state, then ones nodes still report but the state no longer has
    (Draining after being removed from the state repo)."""
    desired = sorted(state.datasets)
    extra: set[str] = set()
    for r in results.values():
        doc = r.get("status")
        if isinstance(doc, dict) and isinstance(doc.get("datasets"), dict):
            extra.update(n for n in doc["datasets"] if n not in state.datasets)
    return desired, sorted(extra)


def _placed(state: DesiredState) -> dict[str, set[str]]:
    """dataset -> nodes the desired state places it on (the same answer every node computes)."""
    return {name: set(a.nodes) for name, a in place(state).items()}


def render_cluster(results: dict[str, dict], state: DesiredState) -> Table:
    """One row per node of `results` (a `fetch_cluster` answer), one column per dataset."""
    desired, extra = _columns(results, state)
    placed = _placed(state)
    t = Table(title=f"cluster at revision {short_revision(state.revision)} "
                    f"({len(results)} nodes, {len(state.datasets)} datasets)",
              title_justify="left")
    t.add_column("node", no_wrap=True)
    t.add_column("result", overflow="fold")
    t.add_column("applied revision", no_wrap=True)
    for name in desired:
        t.add_column(name, no_wrap=True)
    for name in extra:
        t.add_column(f"{name} (removed)", no_wrap=True, header_style="dim")
    for node in sorted(results):
        r = results[node]
        doc = r.get("status")
        if not isinstance(doc, dict):
            cells = [("[dim]?[/]" if node in placed.get(ds, ()) else "[dim]-[/]")
                     for ds in desired] + ["[dim]?[/]"] * len(extra)
            err = str(r.get("error") or "unknown")
            label = "unreachable" if _unreachable(err) else "error"
            t.add_row(node, f"[bold red]{label}: {_esc(err)}[/]", "[dim]?[/]", *cells)
            continue
        lp = doc.get("lastPass")
        if not isinstance(lp, dict):
            lp = {}
        result = str(lp.get("result") or "?")
        result_cell = f"[{_RESULT_COLOR.get(result, 'white')}]{result}[/]"
        if lp.get("finishedAt") is None and lp.get("startedAt"):
            result_cell += " [dim](pass running)[/]"
        rej = doc.get("rejected")
        if isinstance(rej, dict) and result != "Rejected":
            result_cell += f" [red](rejected {_esc(short_revision(rej.get('revision')))})[/]"
        applied = doc.get("lastAppliedRevision")
        rev_cell = (f"[green]{_esc(short_revision(applied))} (current)[/]"
                    if applied == state.revision
                    else f"[yellow]{_esc(short_revision(applied))} (differs)[/]")
        datasets = doc.get("datasets")
        if not isinstance(datasets, dict):
            datasets = {}
        cells = [_cell(datasets[ds]) if isinstance(datasets.get(ds), dict) else "[dim]-[/]"
                 for ds in [*desired, *extra]]
        t.add_row(node, result_cell, rev_cell, *cells)
    return t


def summary_line(results: Mapping[str, dict], state: DesiredState) -> str:
    """`N/M nodes reachable, K/D datasets Ready on every node they are placed on`."""
    with_status = {n for n, r in results.items() if isinstance(r.get("status"), dict)}
    answered_without = [n for n, r in results.items()
                        if n not in with_status and not _unreachable(str(r.get("error") or ""))]
    placed = {ds: nodes for ds, nodes in _placed(state).items() if nodes}
    ready = 0
    for ds, nodes in placed.items():
        phases = []
        for n in nodes:
            doc = results.get(n, {}).get("status")
            d = (doc.get("datasets") or {}).get(ds) if isinstance(doc, dict) else None
            phases.append(d.get("phase") if isinstance(d, dict) else None)
        ready += all(p == "Ready" for p in phases)
    reachable = len(with_status) + len(answered_without)
    line = f"{reachable}/{len(results)} nodes reachable"
    if answered_without:
        line += f" ({len(answered_without)} without a status)"
    line += f", {ready}/{len(placed)} datasets Ready on every node they are placed on"
    unplaced = len(state.datasets) - len(placed)
    if unplaced:
        line += f" ({unplaced} placed on no node)"
    return line


def split_status(results: Mapping[str, dict], state: DesiredState
                 ) -> dict[str, dict[str, int]]:
    """`spec.split` datasets: their files, and how many have fewer than `copies` copies on
    the nodes where the desired version is Ready (adapters/cluster_view.py)."""
    out = {}
    for ds, nodes in sorted(_placed(state).items()):
        d = state.datasets[ds]
        ready = []
        for n in nodes:
            doc = results.get(n, {}).get("status")
            e = (doc.get("datasets") or {}).get(ds) if isinstance(doc, dict) else None
            if isinstance(e, dict) and e.get("phase") == "Ready" and e.get("version") == d.version:
                ready.append(n)
        summary = split_summary(d, sorted(nodes), ready)
        if summary is not None:
            out[ds] = summary
    return out


def split_lines(results: Mapping[str, dict], state: DesiredState) -> list[str]:
    """One line per split dataset: `split DS: F/N files with fewer than K copies`."""
    return [f"split {ds}: {v['filesShort']}/{v['files']} files with fewer than "
            f"{v['copies']} copies" for ds, v in split_status(results, state).items()]


def warning_lines(state: DesiredState) -> list[str]:
    """The revision's placement warnings (what `validate` prints), one line each."""
    return [f"warning: {w}" for w in placement_warnings(state)]


def cluster_json(results: Mapping[str, dict], state: DesiredState) -> dict[str, object]:
    return {"revision": state.revision,
            "warnings": [str(w) for w in placement_warnings(state)],
            "split": split_status(results, state),
            "nodes": {n: {"api": state.nodes[n].api if n in state.nodes else None,
                          "status": r.get("status"), "error": r.get("error")}
                      for n, r in sorted(results.items())}}


def cmd_status_cluster(cfg: NodeConfig, as_json: bool) -> int:
    """`syncbit-reconcile status --cluster [--json]`: 0, also with unreachable nodes and while
    the newest revision is rejected (the rejection first, then the table of the last good
    revision's inventory: an incident is when operators need it most)."""
    from reconciler.engine.inputs import effective_state, load
    from reconciler.app.ui import out, print_rejected

    loaded = load(cfg)
    state = effective_state(cfg, loaded)
    if loaded.state is None:
        why = (f" (showing the inventory of the last good revision {state.revision})"
               if state is not None else " (no good revision yet: no inventory to ask)")
        print_rejected(loaded.revision, loaded.errors, why)
    if state is None:
        if as_json:
            print(json.dumps({"revision": None, "rejected": loaded.revision, "nodes": {}}))
        return EXIT_READY
    results = asyncio.run(fetch_cluster(state))
    if as_json:
        doc = cluster_json(results, state)
        if loaded.state is None:
            doc["rejected"] = loaded.revision
        print(json.dumps(doc, indent=2))
        return EXIT_READY
    out.print(render_cluster(results, state))
    out.print(summary_line(results, state), highlight=False)
    for line in split_lines(results, state):
        out.print(line, highlight=False, markup=False)
    for line in warning_lines(state):
        out.print(line, highlight=False, markup=False, style="yellow")
    return EXIT_READY


def _esc(text: str) -> str:
    from rich.markup import escape
    return escape(text)
