#!/usr/bin/env python
"""Markdown tables from a bench/loopback.py results file (as pasted into bench/README.md).

"amp" is what the origin sent / dataset bytes, "status amp" the nodes' summed `bytesFromOrigin`
(what their gateways relayed) / dataset bytes, "S3 server amp" SeaweedFS's own count (--source s3).

    python bench/report.py bench/results/<timestamp>.json [--per-node]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MIB = 1 << 20


def f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def run_name(r: dict) -> str:
    return "1 node" if r["kind"] == "baseline" else "cluster"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--per-node", action="store_true")
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    runs = doc["runs"]
    rep = doc["params"]["repeat"] > 1
    params = doc["params"]
    rate = params["origin_rate"]
    print(f"source {params.get('source', 'http')}, {params['size_bytes'] / MIB:g} MiB, origin "
          + (f"{rate / MIB:g} MiB/s" if rate else "unthrottled"))
    print()
    server = any(r.get("origin_server_bytes") is not None for r in runs)

    head = ["run", *(["rep"] if rep else []), "N", "mode", "origin MiB", "amp", "status amp",
            "T_bound",
            "max Ready status", "med Ready status", "max Ready log", "med Ready log",
            "max/T status", "max/T log", "max/1node log", "max exit", "peers MiB", "data"]
    if server:
        head.insert(head.index("status amp") + 1, "S3 server amp")
    rows = [[run_name(r), *([str(r["repeat"] + 1)] if rep else []), str(r["n"]), r["mode"],
             f"{r['origin_bytes'] / MIB:.1f}", f"{r['amplification']:.3f}",
             f"{r['origin_bytes_reported'] / r['dataset_bytes']:.3f}",
             *([f(None if r.get("origin_server_bytes") is None
                  else r["origin_server_bytes"] / r["dataset_bytes"], "{:.3f}")] if server else []),
             f(r["t_bound_s"]),
             f(r["max_ready_s"]), f(r["median_ready_s"]), f(r["max_activated_s"]),
             f(r["median_activated_s"]), f(r["max_over_t_bound"]),
             f(r["max_activated_over_t_bound"]), f(r["max_activated_over_single"]),
             f(r["max_exit_s"]), f"{r['peer_bytes'] / MIB:.1f}",
             "ok" if r["all_ready"] else "FAIL"] for r in runs]
    print(table(head, rows))
    print()
    head = ["run", *(["rep"] if rep else []), "N", "mode", "start", "1st origin B", "last origin B",
            "origin MiB/s", "GETs", "KiB/GET", "max node origin/fair", "xfer/T", "CPU s",
            "CPU share"]
    rows = [[run_name(r), *([str(r["repeat"] + 1)] if rep else []), str(r["n"]), r["mode"],
             f(r["max_fetching_s"]), f(r["origin_first_byte_s"]), f(r["origin_last_byte_s"]),
             f(r["origin_mibps"], "{:.1f}"), str(r["origin_requests"]),
             f(r["origin_mean_request_kib"], "{:.0f}"), f(r["max_node_origin_share"]),
             f(r["transfer_over_t_bound"]), f"{r['cpu_s']:.1f}", f"{r['cpu_share']:.0%}"]
            for r in runs]
    print(table(head, rows))
    if args.per_node:
        print()
        head = ["run", "N", "mode", "node", "fetching", "activated", "status Ready", "exit",
                "owned MiB", "origin MiB", "peers MiB"]
        rows = [[run_name(r), str(r["n"]), r["mode"], n["name"], f(n["fetching_s"]),
                 f(n["activated_s"]), f(n["ready_s"]), f(n["exit_s"]),
                 f"{n['owned_pieces'] * r['piece_size'] / MIB:.1f}",
                 f"{n['bytes_from_origin'] / MIB:.1f}", f"{n['bytes_from_peers'] / MIB:.1f}"]
                for r in runs if r["n"] > 1 for n in r["nodes"]]
        print(table(head, rows))


if __name__ == "__main__":
    main()
