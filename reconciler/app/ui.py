"""What people see in a terminal: progress bars, the plan, status tables (rich)."""

from __future__ import annotations

import sys
from typing import Mapping, Self, cast

from rich import box
from rich.console import Console
from rich.text import Text
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


def print_status(status: Mapping[str, object], console: Console | None = None) -> None:
    """This node's status. On a terminal, the view of `status_view`; elsewhere (pipes, CI
    logs, `--once` under cron) the plain table, unchanged, that scripts and tests read."""
    c = console or out
    if c.is_terminal:
        print_status_tty(status, c)
        return
    lp = status.get("lastPass") or {}
    assert isinstance(lp, dict)
    c.print(status_table(status, f"node {status.get('node')} — revision "
                                 f"{status.get('lastAppliedRevision')} — {lp.get('result')}"))
    rej = status.get("rejected")
    if isinstance(rej, dict):
        c.print(f"[bold red]revision {rej['revision']} rejected:[/]")
        for e in rej.get("errors", []):
            c.print(f"  {e['file']}:{e['line']}: {e['field']}: {e['message']}", highlight=False)
    # A status document lists its conditions as JSON objects (see adapters.status_file).
    conditions = cast("list[Mapping[str, object]]", status.get("conditions") or [])
    for c_ in conditions:
        if c_["type"] == "Ready":
            c.print(f"Ready={c_['status']} ({c_['reason']}): {c_['message']}", highlight=False)


# Terminal view: one colour and one sign per phase, so a screen reads at a glance.
PHASE_STYLE = {"Ready": "bold green", "Fetching": "bold cyan", "Verifying": "bold blue",
               "Pending": "yellow", "Draining": "dim yellow", "Failed": "bold red",
               "Suspended": "magenta"}
PHASE_SIGN = {"Ready": "✔", "Fetching": "↓", "Verifying": "≡", "Pending": "○", "Draining": "↘",
              "Failed": "✖", "Suspended": "‖"}
RESULT_STYLE = {"Converged": "bold green", "Progressing": "bold cyan", "Failed": "bold red",
                "Rejected": "bold red"}


def phase_text(phase: str) -> Text:
    return Text(f"{PHASE_SIGN.get(phase, '?')} {phase}", style=PHASE_STYLE.get(phase, ""))


def _short_revision(rev: object) -> str:
    text = str(rev or "-")
    if text.startswith("sha256:"):
        return text[:19]
    return text[:12]


def _bar(done: int, total: int, width: int = 14) -> Text:
    if not total:
        return Text("-", style="dim")
    frac = min(1.0, max(0.0, done / total))
    full = round(frac * width)
    bar = Text("━" * full, style="green" if frac >= 1 else "cyan")
    bar.append("━" * (width - full), style="grey30")
    bar.append(f" {100 * frac:3.0f}% of {format_bytes(total)}")
    return bar


def _rate(value: object) -> str:
    rate = value if isinstance(value, (int, float)) else 0
    return f"{format_bytes(int(rate))}/s" if rate else "-"


def status_view(status: Mapping[str, object]) -> Table:
    """The datasets as a terminal table: phase in colour, progress as a bar, rates, sources."""
    datasets = status.get("datasets") or {}
    assert isinstance(datasets, dict)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    t.add_column("DATASET", no_wrap=True)
    t.add_column("PHASE", no_wrap=True)
    t.add_column("VERSION", overflow="ellipsis", max_width=16)
    t.add_column("PROGRESS", no_wrap=True)
    t.add_column("↓ RATE", justify="right", no_wrap=True)
    t.add_column("↑ RATE", justify="right", no_wrap=True)
    t.add_column("ORIGIN / PEERS", justify="right", no_wrap=True)
    t.add_column("PEERS", justify="right", no_wrap=True)
    t.add_column("PATH", overflow="fold")
    for name, d in sorted(datasets.items()):
        phase = str(d.get("phase"))
        t.add_row(Text(name, style="bold"), phase_text(phase), str(d.get("version") or "-"),
                  _bar(int(d.get("bytesDone") or 0), int(d.get("bytesTotal") or 0)),
                  _rate(d.get("downloadRate")), _rate(d.get("uploadRate")),
                  f"{format_bytes(d.get('bytesFromOrigin') or 0)} / "
                  f"{format_bytes(d.get('bytesFromPeers') or 0)}",
                  str(d.get("peers") or 0), Text(str(d.get("path") or "-"), style="dim"))
    return t


def print_status_tty(status: Mapping[str, object], console: Console) -> None:
    lp = status.get("lastPass") or {}
    assert isinstance(lp, dict)
    result = str(lp.get("result") or "-")
    head = Text()
    head.append(f"node {status.get('node')}", style="bold")
    head.append("  ")
    head.append(result, style=RESULT_STYLE.get(result, ""))
    head.append(f"  revision {_short_revision(status.get('lastAppliedRevision'))}")
    if lp.get("finishedAt"):
        head.append(f"  last pass {lp.get('finishedAt')}", style="dim")
    console.print(head)
    rej = status.get("rejected")
    if isinstance(rej, dict):  # on top: the newest revision is not what this node runs
        console.print(Text(f"✖ revision {_short_revision(rej.get('revision'))} rejected; still "
                           "converging to the last good one:", style="bold red"))
        for e in rej.get("errors", []):
            console.print(Text(f"  {e['file']}:{e['line']}: {e['field']}: {e['message']}",
                               style="red"))
    datasets = status.get("datasets") or {}
    assert isinstance(datasets, dict)
    if not datasets:
        console.print(Text("no dataset is placed on this node", style="dim"))
    else:
        counts: dict[str, int] = {}
        for d in datasets.values():
            counts[str(d.get("phase"))] = counts.get(str(d.get("phase")), 0) + 1
        summary = Text(f"{len(datasets)} datasets: ")
        for i, (phase, n) in enumerate(sorted(counts.items(), key=lambda kv: kv[0] != "Ready")):
            if i:
                summary.append(", ")
            summary.append(f"{n} {phase}", style=PHASE_STYLE.get(phase, ""))
        console.print(summary)
        console.print(status_view(status))
        for name, d in sorted(datasets.items()):
            if d.get("error"):
                style = "red" if d.get("phase") == "Failed" else "yellow"
                console.print(Text(f"{PHASE_SIGN.get(str(d.get('phase')), '!')} {name}: "
                                   f"{d.get('error')}", style=style))
    conditions = cast("list[Mapping[str, object]]", status.get("conditions") or [])
    for c in conditions:
        if c["type"] == "Ready":
            ok = c["status"] == "True"
            console.print(Text(f"Ready={c['status']} ({c['reason']}): {c['message']}",
                               style="green" if ok else "yellow"))


class _LiveProgress:
    """A rich Progress shown only while `enabled` (a terminal): the context both bars share."""

    enabled: bool
    progress: Progress

    def __enter__(self) -> Self:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()


class WaitProgress(_LiveProgress):
    """`wait`'s progress bar on a terminal (stderr): the dataset's bytesDone of bytesTotal
    from the status file, its phase, speed and time left. Nothing at all when not a terminal."""

    def __init__(self, dataset: str, console: Console | None = None) -> None:
        self.console = console or err
        self.enabled = self.console.is_terminal
        self.progress = Progress(TextColumn("{task.fields[name]}"),
                                 TextColumn("{task.fields[phase]}"),
                                 BarColumn(), DownloadColumn(binary_units=True),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 TextColumn("[dim]{task.fields[note]}"),
                                 console=self.console, transient=False)
        self.task = self.progress.add_task("", total=None, name=dataset,
                                           phase="[yellow]waiting[/]", note="")

    def update(self, d: Mapping[str, object], note: str = "") -> None:
        if not self.enabled:
            return
        phase = str(d.get("phase") or "waiting")
        style = PHASE_STYLE.get(phase, "yellow")
        total = d.get("bytesTotal")
        done = d.get("bytesDone")
        self.progress.update(self.task, total=total if isinstance(total, int) and total else None,
                             completed=done if isinstance(done, int) else 0,
                             phase=f"[{style}]{PHASE_SIGN.get(phase, '…')} {phase}[/]", note=note)


class ProgressView(_LiveProgress):
    """Per-dataset progress bars on stderr, only when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.progress = Progress(TextColumn("{task.fields[name]:<20} {task.fields[phase]:<9}"),
                                 BarColumn(), DownloadColumn(binary_units=True),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=err, transient=False)
        self.tasks: dict[str, TaskID] = {}

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
