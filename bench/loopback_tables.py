"""Console tables of the loopback benchmark (bench/loopback.py); split out of the old
bench/swarm_bench.py unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.loopback import RunResult

MIB = 1 << 20
AMPLIFICATION_GOAL = 1.05
TIME_GOAL = 1.2  # x T_bound


# -- reporting -------------------------------------------------------------------------------------

def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _goal(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" + (" [green]ok[/]" if ratio <= TIME_GOAL else " [red]no[/]")


def print_tables(results: list[RunResult], per_node: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    t = Table(title="Goals. Times in s from the common start of all N processes. T = T_bound = "
                    "S/u_origin. status = status.json said Ready (polled every 0.1 s); log = the "
                    "node's `activated` log line; 1node = the single-node run of the same mode",
              title_justify="left")
    for col in ("run", "rep", "N", "mode", "origin MiB", "amp (<=1.05)", "T", "max status", "med status",
                "max log", "med log", "max/T status", "max/T log (<=1.2)", "max/1node status",
                "max/1node log", "max exit", "peers MiB", "node-origin MiB", "data"):
        t.add_column(col, justify="right")
    for r in results:
        ok_amp = r.amplification <= AMPLIFICATION_GOAL
        t.add_row(
            "1 node" if r.kind == "baseline" else "cluster", str(r.repeat + 1), str(r.n), r.mode,
            f"{r.origin_bytes / MIB:.1f}",
            f"{r.amplification:.3f}" + (" [green]ok[/]" if ok_amp else " [red]no[/]"),
            _f(r.t_bound_s), _f(r.max_ready_s), _f(r.median_ready_s),
            _f(r.max_activated_s), _f(r.median_activated_s),
            _f(r.max_over_t_bound), _goal(r.max_activated_over_t_bound),
            _f(r.max_over_single), _f(r.max_activated_over_single), _f(r.max_exit_s),
            f"{r.peer_bytes / MIB:.1f}", f"{r.origin_bytes_reported / MIB:.1f}",
            ("[green]ok[/]" if r.all_ready else "[red]FAIL[/]") + (" (timeout)" if r.timed_out else ""))
    con.print(t)
    d = Table(title="Where the time goes. start = last node logged `fetching`; 1st B = first "
                    "origin byte; origin MiB/s = origin bytes / (last - first origin byte); "
                    "GETs, KiB/GET, in flight = origin requests, mean size, mean concurrency; "
                    "max node origin/fair = largest bytesFromOrigin of a node / (S/N); "
                    "xfer/T = (max log - 1st B) / T; CPU s = CPU seconds of all node processes (start "
                    "to exit); CPU share = CPU s / (nproc x max log)",
              title_justify="left")
    server = any(r.origin_server_bytes is not None for r in results)
    for col in ("run", "rep", "N", "mode", "start", "1st B", "origin MiB/s", "GETs", "KiB/GET",
                "in flight", "max node origin/fair", "piece KiB", "xfer/T", "CPU s", "CPU share",
                "origin resets", *(["S3 server amp"] if server else [])):
        d.add_column(col, justify="right")
    for r in results:
        d.add_row("1 node" if r.kind == "baseline" else "cluster", str(r.repeat + 1), str(r.n), r.mode,
                  _f(r.max_fetching_s), _f(r.origin_first_byte_s), _f(r.origin_mibps, "{:.1f}"),
                  str(r.origin_requests), _f(r.origin_mean_request_kib, "{:.0f}"),
                  _f(r.origin_mean_in_flight, "{:.1f}"), _f(r.max_node_origin_share),
                  str(r.piece_size // 1024), _f(r.transfer_over_t_bound),
                  f"{r.cpu_s:.1f}", f"{r.cpu_share:.0%}", str(r.origin_resets),
                  *([_f(None if r.origin_server_bytes is None
                        else r.origin_server_bytes / r.dataset_bytes, "{:.3f}")] if server else []))
    con.print(d)
    if per_node:
        p = Table(title="Per node (times in s from the common start; owned = pieces offload.owners() "
                        "gives the node when all N are live)", title_justify="left")
        for col in ("run", "N", "mode", "node", "fetching", "activated", "status Ready", "exit",
                    "code", "owned pieces", "origin MiB", "owned MiB", "peers MiB", "data"):
            p.add_column(col, justify="right")
        for r in results:
            for nr in r.nodes:
                p.add_row("1 node" if r.kind == "baseline" else "cluster", str(r.n), r.mode,
                          nr.name, _f(nr.fetching_s), _f(nr.activated_s), _f(nr.ready_s),
                          _f(nr.exit_s), str(nr.exit_code), str(nr.owned_pieces),
                          f"{nr.bytes_from_origin / MIB:.1f}",
                          f"{nr.owned_pieces * r.piece_size / MIB:.1f}",
                          f"{nr.bytes_from_peers / MIB:.1f}", "ok" if nr.data_ok else "FAIL")
        con.print(p)
    for r in results:
        bad = [nr for nr in r.nodes if not nr.data_ok or nr.ready_s is None
               or (r.mode == "once" and nr.exit_code not in (0, None))]
        for nr in bad:
            con.print(f"[red]{r.kind} {r.mode} N={r.n}: {nr.name} phase={nr.phase} "
                      f"exit={nr.exit_code} data_ok={nr.data_ok} error={nr.error}[/]")
