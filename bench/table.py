"""Console tables of a bench.swarm results document (rich if installed, else plain text).

Works on the JSON document (not on live objects) so that a saved run prints the same again:

    python -m bench.table bench/results/<file>-swarm.json
    python -m bench.table --markdown bench/results/*-swarm.json   # the README's results rows
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / MIB:.1f}"


class _Plain:
    """The subset of rich.table.Table used here, as fixed-width text."""

    def __init__(self, title: str) -> None:
        self.title, self.cols, self.rows = title, [], []  # type: ignore[var-annotated]

    def add_column(self, name: str, **_: object) -> None:
        self.cols.append(name)

    def add_row(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def render(self) -> str:
        w = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
             for i, c in enumerate(self.cols)]
        line = lambda cells: "  ".join(c.rjust(w[i]) for i, c in enumerate(cells))  # noqa: E731
        return "\n".join([self.title, line(self.cols), *(line(r) for r in self.rows)])


def _table(title: str, cols: list[str]) -> Any:
    try:
        from rich.table import Table
        t: Any = Table(title=title, title_justify="left")
    except ImportError:
        t = _Plain(title)
    for c in cols:
        t.add_column(c, justify="right")
    return t


def _show(t: Any) -> None:
    if isinstance(t, _Plain):
        print(t.render())
        return
    from rich.console import Console
    Console(width=160).print(t)


def summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    p, s = doc["params"], doc["summary"]
    m = doc["runs"][0]
    rows = [("nodes", str(s["nodes"])),
            ("dataset", f"{_mib(s['bytes'])} MiB in {p['files']} files"
             if s.get("datasets", 1) == 1 else
             f"{s['datasets']} datasets of {p['files']} files, {_mib(s['bytes'])} MiB together"
             + (", --once" if p.get("once") else "")),
            ("links", f"origin {_mib(p['origin_rate'])} MiB/s, nodes {_mib(p['node_rate'])} MiB/s"
                      + (f", slow node 1/{p['slow_node']:g}" if p["slow_node"] else "")),
            ("origin per connection", (f"{p['origin_conn_rate'] / 1024:.0f} KiB/s"
                                       if p["origin_conn_rate"] else "uncapped")
             + f", first byte +{p['origin_latency_ms']:g} ms"),
            ("stagger", f"{p['stagger']:g} s"),
            ("T_lb (fluid lower bound)", f"{s['lower_bound_seconds']:.2f} s"),
            ("seconds (all Ready)", _f(s["seconds"])),
            ("seconds / T_lb", _f(s["lower_bound_ratio"])),
            ("origin amplification", _f(s["origin_amplification"], "{:.3f}")),
            ("origin busy", _f(m["first"]["origin_bytes"] / (p["origin_rate"] * s["seconds"])
                               if s["seconds"] else None, "{:.0%}")
             + " of its uplink while converging"),
            ("first origin byte", _f(m["first"]["origin_first_byte_s"]) + " s"),
            ("naive curl (max node)", _f(s["naive_seconds"])),
            ("aria2c -x16 (max node)", _f(s["aria2_seconds"]))]
    if s.get("datasets", 1) > 1:
        ph = m["first"]
        amps = sorted(ph["origin_by_dataset"].get(d, 0) / b
                      for d, b in ph["dataset_bytes"].items())
        conns = [max((c for _, c in n.get("peer_conns") or []), default=0) for n in ph["nodes"]]
        rows += [("origin per dataset", f"{amps[0]:.3f}-{amps[-1]:.3f}, "
                  f"{sum(a > 1.05 for a in amps)} of {len(amps)} above 1.05"),
                 ("peer connections per node (max)", f"{min(conns)}-{max(conns)}")]
    if "slow_node" in doc:
        sn = doc["slow_node"]
        rows += [("others' max, with slow node", _f(sn["others_with_slow_s"])),
                 ("max, slow node absent (N-1)", _f(sn["others_without_slow_s"])),
                 ("ratio with / without", _f(sn["ratio"], "{:.3f}"))]
    ro = m.get("rollout")
    if ro:
        per = [n["wire_down"] / ro["size"] for n in ro["nodes"]]
        rows += [("rollout: changed", f"{_mib(ro['size'])} MiB"),
                 ("rollout: seconds (all Ready)", _f(ro["seconds"])),
                 ("rollout: T_lb", _f(m["rollout_lower_bound_seconds"])),
                 ("rollout: origin sent / changed", _f(ro["origin_bytes"] / ro["size"], "{:.3f}")),
                 ("rollout: node received / changed", f"{min(per):.2f}-{max(per):.2f}"
                                                      " (link bytes; see per-node)")]
    return rows


EVENTS = ("daemon starting", "fetching", "origin shares", "verified", "activated")


def _events_table(label: str, ph: dict[str, Any]) -> Any:
    """When each node logged the steps that matter (s from the common start)."""
    t = _table(f"{label}: {ph['version']}: first log line of each step (s from the common start)",
               ["node", *EVENTS, "Ready (status)"])
    for n in ph["nodes"]:
        ev = n.get("events") or {}
        t.add_row(n["name"], *(_f(ev.get(e)) for e in EVENTS), _f(n["ready_s"]))
    return t


def timeline(ph: dict[str, Any], step: float = 2.0) -> str:
    """The origin's throughput (MiB/s) per `step` s window, with the most responses it had in
    flight in that window when recorded: was the scarce link busy, and through how many
    connections?"""
    out, t0, b0, most = [], 0.0, 0, 0
    for point in ph.get("origin_series") or []:
        t, b = point[0], point[1]
        most = max(most, point[2] if len(point) > 2 else 0)
        if t - t0 >= step:
            out.append(f"{t0:.0f}-{t:.0f}s {(b - b0) / (t - t0) / MIB:.1f}"
                       + (f" ({most})" if most else ""))
            t0, b0, most = t, b, 0
    return "origin MiB/s per window (max responses in flight): " + ", ".join(out)


def print_run(doc: dict[str, Any]) -> None:
    t = _table("bench.swarm summary", ["what", "value"])
    for k, v in summary_rows(doc):
        t.add_row(k, v)
    _show(t)
    for run in doc["runs"]:
        for key in ("first", "rollout"):
            ph = run.get(key)
            if not ph:
                continue
            t = _table(f"{run['label']}: {ph['version']} ({_mib(ph['size'])} MiB to every node)."
                       " Times in s from the common start; status = the node's status.json; "
                       "link = bytes on its veth (IP, incl. headers)",
                       ["node", "MiB/s", "start", "Ready", "Ready-start", "status origin MiB",
                        "status peers MiB", "link down MiB", "link up MiB", "down/size", "data"])
            for n in ph["nodes"]:
                took = None if n["ready_s"] is None or n["start_s"] is None \
                    else n["ready_s"] - n["start_s"]
                t.add_row(n["name"] + (" (slow)" if n["name"] in run["slow"] else ""),
                          _mib(n["down"]), _f(n["start_s"]), _f(n["ready_s"]), _f(took),
                          _mib(n["bytes_from_origin"]), _mib(n["bytes_from_peers"]),
                          _mib(n["wire_down"]), _mib(n["wire_up"]),
                          _f(n["wire_down"] / ph["size"]), "ok" if n["data_ok"] else "FAIL")
            _show(t)
            _show(_events_table(run["label"], ph))
            print(timeline(ph, max(2.0, (ph["seconds"] or 0) / 20)))  # about 20 windows
        for b in run["baselines"]:
            print(f"{run['label']}: baseline {b['tool']}: max {_f(b['seconds'])} s, per node "
                  f"{b['per_node']}, origin sent {_mib(b['origin_bytes'])} MiB, "
                  f"{'ok' if b['ok'] else 'FAIL'}")


def scenario(doc: dict[str, Any]) -> str:
    """A short name of what a run measured, from its parameters."""
    p = doc["params"]
    parts = []
    if p["slow_node"]:
        parts.append(f"slow node 1/{p['slow_node']:g}")
    if p["stagger"]:
        parts.append(f"stagger {p['stagger']:g} s")
    if p["rollout"]:
        parts.append(f"rollout {p['rollout']:.0%}")
    if p["origin_conn_rate"] or p["origin_latency_ms"]:
        parts.append(f"origin {p['origin_conn_rate'] // 1024} KiB/s per conn, "
                     f"+{p['origin_latency_ms']:g} ms")
    return ", ".join(parts) or "all at once"


MARKDOWN_HEAD = ["results file", "scenario", "N", "S MiB", "T_lb s", "seconds", "ratio", "amp",
                 "naive s", "aria2 s", "first origin B s", "origin busy", "extra"]


def markdown_row(name: str, doc: dict[str, Any]) -> list[str]:
    """One row of the README's results table."""
    s, p, m = doc["summary"], doc["params"], doc["runs"][0]
    extra = []
    if "slow_node" in doc:
        sn = doc["slow_node"]
        extra.append(f"others {_f(sn['others_with_slow_s'])} s with slow node / "
                     f"{_f(sn['others_without_slow_s'])} s without = {_f(sn['ratio'])}")
    if m.get("rollout"):
        ro = m["rollout"]
        per = [n["wire_down"] / ro["size"] for n in ro["nodes"]]
        extra.append(f"rollout {_mib(ro['size'])} MiB: {_f(ro['seconds'])} s (T_lb "
                     f"{_f(m['rollout_lower_bound_seconds'])}), origin/changed "
                     f"{ro['origin_bytes'] / ro['size']:.2f}, node received/changed "
                     f"{min(per):.2f}-{max(per):.2f}")
    if p["stagger"]:
        took = [n["ready_s"] - n["start_s"] for n in m["first"]["nodes"]
                if n["ready_s"] is not None and n["start_s"] is not None]
        extra.append("per node Ready-start " + "/".join(f"{t:.1f}" for t in took) + " s")
    busy = (m["first"]["origin_bytes"] / (p["origin_rate"] * s["seconds"])
            if s["seconds"] else None)
    return [name, scenario(doc), str(s["nodes"]), _mib(s["bytes"]),
            _f(s["lower_bound_seconds"], "{:.1f}"), _f(s["seconds"], "{:.1f}"),
            _f(s["lower_bound_ratio"]), _f(s["origin_amplification"], "{:.3f}"),
            _f(s["naive_seconds"], "{:.1f}"), _f(s["aria2_seconds"], "{:.1f}"),
            _f(m["first"]["origin_first_byte_s"], "{:.1f}"), _f(busy, "{:.0%}"),
            "; ".join(extra)]


def main(argv: list[str]) -> None:
    """`python -m bench.table FILE` prints a saved run; `--markdown FILE...` one README row
    per file."""
    if argv[:1] == ["--markdown"]:
        print("| " + " | ".join(MARKDOWN_HEAD) + " |")
        print("|" + "|".join("---" for _ in MARKDOWN_HEAD) + "|")
        for f in argv[1:]:
            row = markdown_row(Path(f).name.removesuffix("-swarm.json"),
                               json.loads(Path(f).read_text()))
            print("| " + " | ".join(row) + " |")
        return
    for f in argv:
        print_run(json.loads(Path(f).read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
