"""Round-based simulation of origin offload and the peer overlay at fleet scale (issue 16).

    python -m bench.offload_sim                      # N = 100, 1,000, 5,000; every scenario
    python -m bench.offload_sim --nodes 1000 --scenario die

It runs the product's own pure rules (reconciler/core/offload.py), not a re-implementation:
`run_length` and `Rendezvous`/`owners` decide who fetches each run from the origin (checked
against `owners` itself, and the per-node origin share against `decide_offload`, on sampled
nodes every round), `overlay` decides who connects to whom, `DEGREE` caps connections.

The model (one dataset, `placement: {all: true}`; see bench/README.md "Fleet scale"):

- P pieces; a round is the time a node needs to send or receive U pieces; the origin sends
  at most O pieces a round in all (fair shares among the nodes asking), a node receives at
  most D = U pieces a round (origin and peers together) and sends at most U.
- A node asks the origin only for missing pieces it owns that none of its connected overlay
  neighbours has (`decide_offload`); pieces nobody it is connected to has wait. After
  `--stuck` rounds without progress, every missing piece without a source is fetched
  (transfer.STUCK_AFTER).
- A node receives from its overlay neighbours only, a piece it got this round is forwarded
  from the next round on (store and forward), pieces are picked in a random order per
  connection (rarest-first is not modelled: pessimistic).
- Liveness: a node that is not running (not started yet, or dead) counts as dead for
  ownership after `detect` rounds (transfer.PEER_REFUSED_FOR: its peer port refuses); its
  runs then move to each run's next-ranked node, and back when it runs again.

Fluid bound in this model: every piece leaves the origin at least once (P/O rounds), every node
receives P pieces (P/D), and all N*P deliveries share the upload capacity O + N*U:
T* = max(P/O, P/D, N*P/(O + N*U)). A late joiner's own bound is max(P/D, T* - join) from its
join.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from dataclasses import dataclass

from reconciler.core import offload
from reconciler.core.transfer import PEER_REFUSED_FOR, STUCK_AFTER

ROUND_SECONDS = 0.5  # the real time a round stands for, to map the product's timeouts


@dataclass
class Result:
    n: int
    scenario: str
    amplification: float
    rounds: int  # until every running node holds every piece
    bound: float
    slowest_ratio: float  # slowest node that started at round 0: finish / bound
    late_ratio: float | None  # slowest late joiner: (finish - join) / max(P/D, T* - join)
    max_degree: int
    diameter: int
    complete: bool
    seconds: float


def _bits(mask: int, rng: random.Random, p: int, limit: int) -> list[int]:
    """Up to `limit` set bits of `mask`, starting at a random position (wrapping)."""
    if mask == 0 or limit <= 0:
        return []
    k = rng.randrange(p)
    full = (1 << p) - 1
    rot = ((mask >> k) | (mask << (p - k))) & full
    out = []
    while rot and len(out) < limit:
        low = rot & -rot
        out.append((low.bit_length() - 1 + k) % p)
        rot ^= low
    return out


def _diameter_from(graph: dict[str, frozenset[str]], start: str) -> int:
    dist = {start: 0}
    frontier = [start]
    while frontier:
        nxt = []
        for a in frontier:
            for b in graph[a]:
                if b not in dist:
                    dist[b] = dist[a] + 1
                    nxt.append(b)
        frontier = nxt
    return max(dist.values()) if len(dist) == len(graph) else -1


def simulate(n: int, scenario: str = "all", pieces: int = 1000, origin: int = 20,
             up: int = 40, piece_size: int = 4 << 20, seed: int = 1,
             detect: int | None = None, stuck: int | None = None, check_every: int = 1,
             max_rounds: int = 2000) -> Result:
    t0 = time.monotonic()
    rng = random.Random(seed)
    detect = detect if detect is not None else round(PEER_REFUSED_FOR / ROUND_SECONDS)
    stuck = stuck if stuck is not None else round(STUCK_AFTER / ROUND_SECONDS)
    ih = hashlib.sha256(f"sim:{n}:{seed}".encode()).hexdigest()
    names = [f"node-{i:05d}" for i in range(n)]
    idx = {m: i for i, m in enumerate(names)}
    full = (1 << pieces) - 1

    # Who starts when, who dies when.
    join = [0] * n
    die = [max_rounds + 1] * n
    pick = rng.sample(range(n), max(1, n // 20))  # 5 % of the nodes
    if scenario == "late":
        for i in pick:
            join[i] = 2 * detect  # well after their peers declared them dead
    elif scenario == "die":
        for i in pick[:max(1, n // 100)]:  # 1 %
            die[i] = pieces // origin // 3  # a third into the origin's work

    # The product's rules: runs, rendezvous order per run, the overlay.
    run = offload.run_length(pieces, piece_size, n)
    runs = -(-pieces // run)
    depth = min(n, 12)
    rv = offload.Rendezvous(ih, names)
    ranks = [[idx[m] for m in rv.top(c, depth)] for c in range(runs)]
    graph = offload.overlay(ih, names)
    nbrs = [[idx[b] for b in sorted(graph[m])] for m in names]  # sorted: set order varies
    max_degree = max(len(v) for v in nbrs)
    assert max_degree <= offload.DEGREE
    diameter = _diameter_from(graph, names[0])

    def run_mask(c: int) -> int:
        lo, hi = c * run, min(pieces, (c + 1) * run)
        return ((1 << (hi - lo)) - 1) << lo

    def owners_masks(dead: set[int]) -> list[int]:
        masks = [0] * n
        dead_names = {names[i] for i in dead}
        full_owners: list[str] | None = None
        for c in range(runs):
            o = next((i for i in ranks[c] if i not in dead), None)
            if o is None:  # every node of the prefix is dead: the product's full rule
                if full_owners is None:
                    full_owners = offload.owners(ih, pieces, names, run, dead_names)
                o = idx[full_owners[c * run]]
            masks[o] |= run_mask(c)
        if n <= 200:  # the prefix shortcut is the product's rule: check it whole
            own = offload.owners(ih, pieces, names, run, dead_names)
            for p in range(pieces):
                assert masks[idx[own[p]]] >> p & 1
        return masks

    have = [0] * n
    last_progress = [0] * n
    done_at: list[int | None] = [None] * n
    from_origin = 0
    dead_known: set[int] = set()
    own = owners_masks(dead_known)
    r = 0
    while r < max_rounds:
        running = [i for i in range(n) if join[i] <= r < die[i]]
        if all(done_at[i] is not None for i in running) and r > 0:
            break
        # Liveness: not running for `detect` rounds (a refused peer port) counts as dead.
        not_running = {i for i in range(n) if not (join[i] <= r < die[i])
                       and r - (0 if r < join[i] else die[i]) >= detect}
        if not_running != dead_known:
            dead_known = not_running
            own = owners_masks(dead_known)
        start = list(have)  # forwardable this round
        is_running = [False] * n
        for i in running:
            is_running[i] = True
        # Origin: owned missing pieces no connected neighbour has (decide_offload).
        asks: dict[int, list[int]] = {}
        for i in running:
            if start[i] == full:
                continue
            avail = 0
            for j in nbrs[i]:
                if is_running[j]:
                    avail |= start[j]
            want = own[i]
            if r - last_progress[i] > stuck:
                want = full  # the stuck fallback: anything without a source
            mask = want & ~start[i] & ~avail & full
            if check_every and (r % check_every == 0) and rng.random() < 20 / n:
                _check_against_product(ih, names, i, start[i], avail, nbrs, is_running, start,
                                       own, mask, pieces, dead_known, stuck_now=want == full)
            if mask:
                asks[i] = _bits(mask, _IN_ORDER, pieces, up)  # web seeds ask in order
        got = [0] * n
        budget = origin
        queue = sorted(asks)
        rng.shuffle(queue)
        while budget > 0 and queue:  # fair shares of the origin
            share = max(1, budget // len(queue))
            nxt = []
            for i in queue:
                take = asks[i][:min(share, budget, up - got[i])]
                asks[i] = asks[i][len(take):]
                for p in take:
                    have[i] |= 1 << p
                got[i] += len(take)
                from_origin += len(take)
                budget -= len(take)
                if asks[i] and got[i] < up and budget > 0:
                    nxt.append(i)
            queue = nxt
        # Peers: each node sends at most `up` a round, a connection first its fair part.
        sent = [0] * n
        order = list(running)
        rng.shuffle(order)
        per_conn = max(1, up // offload.DEGREE)
        for cap in (per_conn, up):
            for i in order:
                if have[i] == full or got[i] >= up:
                    continue
                js = [j for j in nbrs[i] if is_running[j]]
                rng.shuffle(js)
                for j in js:
                    room = min(cap, up - sent[j], up - got[i])
                    if room <= 0:
                        continue
                    for p in _bits(start[j] & ~have[i] & full, rng, pieces, room):
                        have[i] |= 1 << p
                        got[i] += 1
                        sent[j] += 1
                    if got[i] >= up:
                        break
        for i in running:
            if got[i]:
                last_progress[i] = r
            if have[i] == full and done_at[i] is None:
                done_at[i] = r + 1
        r += 1
    running = [i for i in range(n) if join[i] <= r < die[i]]
    complete = all(done_at[i] is not None for i in running)
    bound = max(pieces / origin, pieces / up, n * pieces / (origin + n * up))
    first = [done_at[i] or max_rounds for i in running if join[i] == 0]
    late = [(done_at[i] or max_rounds) - join[i] for i in running if join[i] > 0]
    return Result(n, scenario, from_origin / pieces, max((done_at[i] or max_rounds)
                                                          for i in running),
                  bound, max(first) / bound,
                  max(late) / max(pieces / up, bound - max(join)) if late else None,
                  max_degree, diameter, complete, time.monotonic() - t0)


class _InOrder(random.Random):
    """`_bits` from the lowest piece up: libtorrent's web seed asks for the highest-priority
    pieces in index order."""

    def randrange(self, *args: object, **kw: object) -> int:  # type: ignore[override]
        return 0


_IN_ORDER = _InOrder(0)


def _check_against_product(ih: str, names: list[str], i: int, have: int, avail: int,
                           nbrs: list[list[int]], is_running: list[bool], start: list[int],
                           own: list[int], mask: int, pieces: int, dead: set[int],
                           stuck_now: bool) -> None:
    """The simulated origin share of node i is what decide_offload says for it."""
    have_l = [bool(have >> p & 1) for p in range(pieces)]
    available = [sum(1 for j in nbrs[i] if is_running[j] and start[j] >> p & 1)
                 for p in range(pieces)]
    owner_of = [names[i] if own[i] >> p & 1 else "someone-else" for p in range(pieces)]
    live = [m for k, m in enumerate(names) if k not in dead]
    stuck = [p for p in range(pieces) if not have_l[p] and available[p] == 0] if stuck_now else []
    d = offload.decide_offload(names[i], ih, have_l, available, live, stuck, owner_of)
    assert d.origin == frozenset(p for p in range(pieces) if mask >> p & 1), names[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--scenario", nargs="+", default=["all", "late", "die"],
                    choices=["all", "late", "die"])
    ap.add_argument("--pieces", type=int, default=1000)
    ap.add_argument("--origin", type=int, default=20, help="origin pieces per round, in all")
    ap.add_argument("--up", type=int, default=40, help="a node's pieces per round, each way")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"P={args.pieces} pieces, origin {args.origin}/round, node {args.up}/round each way, "
          f"overlay degree {offload.DEGREE}, detect {round(PEER_REFUSED_FOR / ROUND_SECONDS)} "
          f"rounds, stuck {round(STUCK_AFTER / ROUND_SECONDS)} rounds "
          f"(a round = {ROUND_SECONDS} s)")
    print("| N | scenario | origin x | rounds | fluid bound | slowest / bound | late / own bound "
          "| max conns | diameter | all done | sim s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.nodes:
        for sc in args.scenario:
            res = simulate(n, sc, args.pieces, args.origin, args.up, seed=args.seed)
            late = f"{res.late_ratio:.2f}" if res.late_ratio is not None else "-"
            print(f"| {res.n} | {res.scenario} | {res.amplification:.3f} | {res.rounds} | "
                  f"{res.bound:.0f} | {res.slowest_ratio:.2f} | {late} | {res.max_degree} | "
                  f"{res.diameter} | {'yes' if res.complete else 'NO'} | {res.seconds:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
