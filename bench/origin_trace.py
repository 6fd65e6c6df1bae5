"""Which bytes did the origin send more than once, to whom, and when?

    python -m bench.origin_trace FILE [--phase K] [--json]

FILE is one cluster's origin log (`bench.swarm --origin-log DIR`, bench/origin.py `--log`): a
first line naming each node's address, then one line per GET. Phase K (default 1) is the part
after the K-th counter reset (1 = the measured download; the `lock` read before it is not
measured). Every byte range sent more than once is split into its copies in the order the
origin started them; the first copy is the one that counts, every later one is excess, and is
classified by who got the first copy (and the copy just before it) and who the repeat, and
whether the first copy was still being sent when the repeat started (in flight) or had been
cut short by the client (aborted: fewer bytes sent than asked for). The times are when the
origin wrote the bytes into its sockets, not when they arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Get:
    node: str
    path: str
    first: int  # first byte asked for
    last: int  # last byte asked for
    sent: int  # body bytes written
    t0: float
    t1: float

    @property
    def stop(self) -> int:
        return self.first + self.sent

    @property
    def aborted(self) -> bool:
        return self.sent < self.last + 1 - self.first

    def sent_at(self, byte: int) -> float:
        """When byte `byte` was written, assuming an even pace over the response."""
        if self.sent <= 0:
            return self.t0
        return self.t0 + (self.t1 - self.t0) * (byte - self.first) / self.sent


def load(path: Path, phase: int = 1) -> tuple[dict[str, Any], list[Get]]:
    """The header line and the GETs after the `phase`-th reset (those before it if 0)."""
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    names: dict[str, str] = head.get("nodes", {})
    resets, gets = 0, []
    for ln in lines[1:]:
        d = json.loads(ln)
        if "reset" in d:
            resets += 1
            continue
        if resets == phase:
            gets.append(Get(names.get(d["ip"], d["ip"]), d["path"], d["first"], d["last"],
                            d["sent"], d["t0"], d["t1"]))
    return head, gets


def overlaps(gets: list[Get], t_origin: float) -> dict[str, Any]:
    """The excess bytes, by (first copy's node, repeat's node) and by kind, plus a timeline
    of the repeats (seconds after `t_origin`)."""
    by_path: dict[str, list[Get]] = defaultdict(list)
    for g in gets:
        if g.sent > 0:
            by_path[g.path].append(g)
    pairs: dict[str, int] = defaultdict(int)
    prev_pairs: dict[str, int] = defaultdict(int)  # by the copy just before the repeat
    kinds: dict[str, int] = defaultdict(int)
    events: list[dict[str, Any]] = []
    total = unique = 0
    for path, gs in by_path.items():
        pts = sorted({g.first for g in gs} | {g.stop for g in gs})
        for a, b in zip(pts, pts[1:]):
            cover = sorted((g for g in gs if g.first <= a and g.stop >= b),
                           key=lambda g: g.sent_at(a))
            if not cover:
                continue
            n = b - a
            total += n * len(cover)
            unique += n
            first = cover[0]
            for i, g in enumerate(cover[1:]):
                pairs[f"{first.node}->{g.node}"] += n
                prev_pairs[f"{cover[i].node}->{g.node}"] += n
                t_rep, t_first_done = g.sent_at(a), first.sent_at(b)
                kind = ("same node" if g.node == first.node else "other node") + (
                    ", first copy in flight" if t_rep < t_first_done else
                    ", first copy done") + (", first aborted" if first.aborted else "")
                kinds[kind] += n
                events.append({"path": path, "first": a, "stop": b, "bytes": n,
                               "to": first.node, "t": round(first.sent_at(a) - t_origin, 2),
                               "again_to": g.node, "again_t": round(t_rep - t_origin, 2),
                               "first_aborted": first.aborted})
    return {"sent": total, "unique": unique, "excess": total - unique,
            "by_pair": dict(sorted(pairs.items(), key=lambda kv: -kv[1])),
            "by_previous_copy": dict(sorted(prev_pairs.items(), key=lambda kv: -kv[1])),
            "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "events": _merge(events)}


def _merge(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent segments of the same pair of requests as one event."""
    out: list[dict[str, Any]] = []
    for e in sorted(events, key=lambda e: (e["path"], e["to"], e["again_to"], e["first"])):
        p = out[-1] if out else None
        if p and (p["path"], p["to"], p["again_to"], p["stop"]) == \
                (e["path"], e["to"], e["again_to"], e["first"]):
            p["stop"], p["bytes"] = e["stop"], p["bytes"] + e["bytes"]
            p["first_aborted"] = p["first_aborted"] or e["first_aborted"]
        else:
            out.append(dict(e))
    return sorted(out, key=lambda e: e["again_t"])


def per_node(gets: list[Get]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"gets": 0, "sent": 0, "aborted": 0,
                                                          "aborted_unsent": 0})
    for g in gets:
        r = out[g.node]
        r["gets"] += 1
        r["sent"] += g.sent
        if g.aborted:
            r["aborted"] += 1
            r["aborted_unsent"] += g.last + 1 - g.first - g.sent
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--phase", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    head, gets = load(a.file, a.phase)
    if not gets:
        print("no GETs in that phase", file=sys.stderr)
        return 1
    t0 = min(g.t0 for g in gets)
    res = overlaps(gets, t0)
    res["per_node"] = per_node(gets)
    res["size"] = head.get("size")
    res["slow"] = head.get("slow")
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    size = head.get("size") or res["unique"]
    print(f"sent {res['sent']} B = {res['sent'] / size:.4f} x size; unique {res['unique']} B; "
          f"excess {res['excess']} B = {res['excess'] / size:.4f} x size; slow node {res['slow']}")
    for n, r in res["per_node"].items():
        print(f"  {n}: {r['gets']} GETs, {r['sent'] / 2**20:.2f} MiB sent, {r['aborted']} cut "
              f"short ({r['aborted_unsent'] / 2**20:.2f} MiB asked and not sent)")
    print("excess by first copy -> repeat:")
    for k, v in res["by_pair"].items():
        print(f"  {k}: {v / 2**20:.2f} MiB")
    print("excess by the copy just before -> repeat:")
    for k, v in res["by_previous_copy"].items():
        print(f"  {k}: {v / 2**20:.2f} MiB")
    print("excess by kind:")
    for k, v in res["by_kind"].items():
        print(f"  {k}: {v / 2**20:.2f} MiB")
    print("repeats (t: s after the first origin byte):")
    for e in res["events"]:
        print(f"  {e['path']} [{e['first']}, {e['stop']}) {e['bytes'] / 2**10:.0f} KiB: "
              f"{e['to']} at {e['t']} s{' (cut short)' if e['first_aborted'] else ''}, "
              f"again {e['again_to']} at {e['again_t']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
