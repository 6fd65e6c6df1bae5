"""What people see in a terminal: progress bars, the plan, status tables (rich)."""

from __future__ import annotations

import sys
from typing import Mapping, cast

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from reconciler.core.plan import Plan
from reconciler.core.units import format_bytes
from reconciler.model.status import DatasetStatus

# Not a terminal (CI logs, pipes): wide enough that paths and hashes are not folded.
out = Console() if sys.stdout.isatty() else Console(width=200)
err = Console(stderr=True)

_SIGN = {"fetch": "+", "update": "~", "activate": ">", "evict": "-", "blocked": "!",
         "suspended": "=", "unchanged": " "}
_COLOR = {"fetch": "green", "update": "yellow", "activate": "cyan", "evict": "red",
          "blocked": "bold red", "suspended": "magenta", "unchanged": "dim"}


def print_plan(plan: Plan) -> None:
    out.print(f"Plan for node [bold]{plan.node}[/] at revision [bold]{plan.revision}[/]\n")
    shown = [a for a in plan.actions if a.kind != "unchanged"]
    if not shown:
        out.print("  No changes. This node holds everything placed on it.\n")
    for a in shown:
        what = a.version or ""
        if a.kind == "update":
            what = f"{a.from_version} -> {a.version}"
        detail = []
        if a.path:
            detail.append(a.path)
        if a.bytes_total and a.kind in ("fetch", "update"):
            detail.append(format_bytes(a.bytes_total))
        if a.reason:
            detail.append(a.reason)
        out.print(f"  [{_COLOR[a.kind]}]{_SIGN[a.kind]} {a.kind:<9}[/] {a.dataset}  {what}"
                  + (f"  ({'; '.join(detail)})" if detail else ""), highlight=False)
    counts = ", ".join(f"{plan.count(k)} to {k}" for k in ("fetch", "update", "activate", "evict"))
    out.print(f"\nPlan: {counts}, {plan.count('unchanged')} unchanged"
              + (f", {plan.count('blocked')} blocked" if plan.count("blocked") else "") + ".")


def status_table(status: Mapping[str, object], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    datasets = status.get("datasets") or {}
    assert isinstance(datasets, dict)
    for col in ("dataset", "phase", "version", "done", "from origin", "from peers", "peers", "path"):
        t.add_column(col, overflow="fold", no_wrap=col in ("phase", "peers"))
    if any(d.get("error") for d in datasets.values()):
        t.add_column("error", overflow="fold")
    for name, d in sorted(datasets.items()):
        total = d.get("bytesTotal") or 0
        done = d.get("bytesDone") or 0
        pct = f"{100 * done / total:.0f}% of {format_bytes(total)}" if total else "-"
        color = {"Ready": "green", "Failed": "red", "Draining": "yellow"}.get(d["phase"], "cyan")
        row = [name, f"[{color}]{d['phase']}[/]", str(d.get("version") or "-"), pct,
               format_bytes(d.get("bytesFromOrigin") or 0), format_bytes(d.get("bytesFromPeers") or 0),
               str(d.get("peers") or 0), str(d.get("path") or "-")]
        if len(t.columns) > len(row):
            row.append(str(d.get("error") or ""))
        t.add_row(*row)
    return t


def print_status(status: Mapping[str, object]) -> None:
    lp = status.get("lastPass") or {}
    assert isinstance(lp, dict)
    out.print(status_table(status, f"node {status.get('node')} — revision "
                                   f"{status.get('lastAppliedRevision')} — {lp.get('result')}"))
    rej = status.get("rejected")
    if isinstance(rej, dict):
        out.print(f"[bold red]revision {rej['revision']} rejected:[/]")
        for e in rej.get("errors", []):
            out.print(f"  {e['file']}:{e['line']}: {e['field']}: {e['message']}", highlight=False)
    # A status document lists its conditions as JSON objects (see adapters.status_file).
    conditions = cast("list[Mapping[str, object]]", status.get("conditions") or [])
    for c in conditions:
        if c["type"] == "Ready":
            out.print(f"Ready={c['status']} ({c['reason']}): {c['message']}", highlight=False)


class ProgressView:
    """Per-dataset progress bars on stderr, only when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.progress = Progress(TextColumn("{task.fields[name]:<20} {task.fields[phase]:<9}"),
                                 BarColumn(), DownloadColumn(binary_units=True),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=err, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "ProgressView":
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, statuses: Mapping[str, DatasetStatus]) -> None:
        if not self.enabled:
            return
        for name, s in statuses.items():
            if s.phase not in ("Pending", "Fetching", "Verifying") and name not in self.tasks:
                continue
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task("", total=s.bytes_total or None,
                                                          name=name, phase=s.phase)
            self.progress.update(self.tasks[name], completed=s.bytes_done, phase=s.phase)


def print_rejected(revision: str, errors: object, why: str = "") -> None:
    """A rejected revision on stderr: a headline, then one `FILE:LINE:COL: FIELD: MESSAGE` each."""
    print(f"revision {revision} rejected{why}:", file=sys.stderr)
    for e in errors:  # type: ignore[attr-defined]
        print(e, file=sys.stderr)
