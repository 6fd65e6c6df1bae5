import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.offload import decide_offload, owners, piece_owner

IH = "ab" * 32


def test_every_piece_has_exactly_one_owner_and_owners_agree_on_every_node():
    live = ["n1", "n2", "n3"]
    own = owners(IH, 300, live)
    assert set(own) == set(live)
    counts = Counter(own)
    assert all(60 < c < 140 for c in counts.values()), counts  # roughly even shares
    assert own == owners(IH, 300, list(reversed(live)))


def test_a_dead_owner_loses_only_its_own_pieces():
    before = owners(IH, 500, ["n1", "n2", "n3"])
    after = owners(IH, 500, ["n1", "n3"])
    for b, a in zip(before, after):
        assert a == b or b == "n2"


def test_origin_share_is_owned_missing_pieces_no_peer_has():
    have = [False] * 6
    available = [0, 0, 0, 1, 0, 0]
    own = ["me", "other", "me", "me", "other", "me"]
    d = decide_offload("me", IH, have, available, ["me", "other"], owner_of=own)
    assert d.origin == {0, 2, 5}  # piece 3 is available from a peer
    # The share first; piece 3 from the peer meanwhile; 1 and 4 wait for their owner.
    assert d.priorities == (7, 0, 7, 1, 0, 7)


def test_pieces_held_keep_the_default_priority_while_the_share_is_fetched():
    d = decide_offload("me", IH, [True, False, False], [0, 1, 0], ["me", "other"],
                       owner_of=["other", "other", "me"])
    assert d.origin == {2}
    assert d.priorities == (4, 1, 7)


def test_without_an_origin_share_everything_comes_from_peers():
    d = decide_offload("me", IH, [True, False, False], [0, 1, 2], ["me", "other"],
               owner_of=["me", "me", "other"])
    assert d.origin == frozenset()
    assert d.priorities == (4, 4, 4)


def test_stuck_pieces_are_fetched_from_the_origin_whoever_owns_them():
    d = decide_offload("me", IH, [False, False], [0, 0], ["me", "other"], stuck=[1],
               owner_of=["other", "other"])
    assert d.origin == {1}


def test_alone_a_node_owns_everything():
    d = decide_offload("solo", IH, [False] * 4, [0] * 4, [])
    assert d.origin == {0, 1, 2, 3}


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(1, 200))
def test_union_of_origin_shares_covers_each_missing_piece_once(n, pieces):
    live = [f"n{i}" for i in range(n)]
    shares = [decide_offload(me, IH, [False] * pieces, [0] * pieces, live).origin for me in live]
    all_pieces = [p for s in shares for p in s]
    assert sorted(all_pieces) == list(range(pieces))


def test_piece_owner_is_rendezvous_over_the_live_set():
    live = ["a", "b", "c"]
    import hashlib
    for p in range(20):
        best = max(live, key=lambda n: hashlib.sha256(f"{IH}:{p}:{n}".encode()).digest())
        assert piece_owner(IH, p, live) == best


def test_runs_are_about_a_mebibyte_but_leave_enough_runs_per_node():
    from reconciler.core.offload import run_length
    assert run_length(1024, 32 << 10, 3) == 21  # 1024 pieces / (16 runs x 3 nodes)
    assert run_length(4000, 16 << 20, 8) == 1  # pieces bigger than a run
    assert run_length(100_000, 64 << 10, 2) == 16  # 1 MiB of 64 KiB pieces
    assert run_length(5, 16 << 10, 8) == 1


def test_owners_are_constant_within_a_run():
    own = owners(IH, 100, ["a", "b", "c"], run=10)
    for start in range(0, 100, 10):
        assert len(set(own[start:start + 10])) == 1
    assert own == owners(IH, 100, ["c", "b", "a"], run=10)


# -- issue 16: owners from the targets, re-homing by rank, a bounded overlay -----------------

from reconciler.core.offload import (DEGREE, neighbours, overlay, ranking,  # noqa: E402
                                     watch_list, watched)


def test_a_dead_owner_hands_each_run_to_that_runs_next_ranked_node():
    targets = [f"n{i}" for i in range(10)]
    base = owners(IH, 400, targets, run=4)
    after = owners(IH, 400, targets, run=4, dead={"n3", "n7"})
    for p, (b, a) in enumerate(zip(base, after)):
        order = [n for n in ranking(IH, p // 4, targets) if n not in {"n3", "n7"}]
        assert a == order[0]
        assert a == b or b in {"n3", "n7"}
    # the same as rendezvous hashing over the survivors
    assert after == owners(IH, 400, [n for n in targets if n not in {"n3", "n7"}], run=4)


def test_with_every_target_dead_someone_is_still_named():
    assert set(owners(IH, 10, ["a", "b"], dead={"a", "b"})) == {"a"}


def test_ranking_depth_is_a_prefix_of_the_full_order():
    targets = [f"n{i}" for i in range(50)]
    for c in range(20):
        assert ranking(IH, c, targets, 3) == ranking(IH, c, targets)[:3]


def _graph(n: int, degree: int = DEGREE, ih: str = IH) -> dict[str, frozenset[str]]:
    g = overlay(ih, [f"node-{i}" for i in range(n)], degree)
    nodes = sorted(g)
    for me in nodes[:5]:
        assert neighbours(ih, me, nodes, degree) == g[me]
    return g


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 300), st.sampled_from([2, 4, 8, 12]), st.text("0123456789abcdef", min_size=4, max_size=8))
def test_the_overlay_is_symmetric_bounded_and_connected(n, degree, ih):
    g = _graph(n, degree, ih)
    for a, near in g.items():
        assert a not in near
        assert len(near) <= degree
        for b in near:
            assert a in g[b]  # both ends agree on every connection
    seen_, todo = {"node-0"}, ["node-0"]
    while todo:
        for b in g[todo.pop()]:
            if b not in seen_:
                seen_.add(b)
                todo.append(b)
    assert len(seen_) == n  # the ring alone connects it


def test_small_datasets_are_a_full_mesh():
    g = _graph(DEGREE + 1)
    assert all(len(v) == DEGREE for v in g.values())


def test_the_overlay_has_a_short_diameter_at_a_thousand_nodes():
    g = _graph(1000)
    assert all(DEGREE - 2 <= len(v) <= DEGREE for v in g.values())
    dist = {"node-0": 0}
    frontier = ["node-0"]
    while frontier:
        nxt = []
        for a in frontier:
            for b in g[a]:
                if b not in dist:
                    dist[b] = dist[a] + 1
                    nxt.append(b)
        frontier = nxt
    assert len(dist) == 1000 and max(dist.values()) <= 7


def test_a_node_watches_who_it_would_take_runs_over_from():
    targets = [f"n{i}" for i in range(200)]
    w = watched("n5", IH, 3200, targets, depth=3)
    assert "n5" not in w and 0 < len(w) <= 2 * 3200 * 3 // 200 * 2
    for c in range(3200):
        top = ranking(IH, c, targets, 3)
        if "n5" in top:
            assert set(top[:top.index("n5")]) <= w
    small = watch_list("n1", IH, 100, 16384, [f"n{i}" for i in range(8)])
    assert small == {f"n{i}" for i in range(8)} - {"n1"}


def test_beyond_the_window_runs_are_ranked_among_the_next_targets_on_a_ring():
    from reconciler.core.offload import WINDOW, Rendezvous
    targets = [f"n{i}" for i in range(10 * WINDOW)]
    rv = Rendezvous(IH, targets)
    for c in range(50):
        order = list(rv.order(c))
        assert sorted(order) == sorted(targets)  # every target, once
        first = order[:WINDOW]
        assert first == sorted(first, key=lambda n: __import__("hashlib").sha256(
            f"{IH}:{c}:{n}".encode()).digest(), reverse=True)
    base = owners(IH, 2000, targets)
    dead = {"n3", "n77", "n100"}
    after = owners(IH, 2000, targets, dead=dead)
    for p, (b, a) in enumerate(zip(base, after)):
        assert a == next(x for x in rv.order(p) if x not in dead)
        assert a == b or b in dead  # only the dead nodes' runs move
    counts = Counter(base)
    assert len(counts) > 0.9 * len(targets) and max(counts.values()) < 3 * 2000 / len(targets)
    assert owners(IH, 2000, list(reversed(targets))) == base


# -- progress-based takeover of a slow owner's runs -----------------------------------------

from reconciler.core.offload import (BANDS, FROM_PEERS, LAG_RATIO, OWN, Held,  # noqa: E402
                                     Rendezvous, lagging, share_count, share_done,
                                     takeover)

NODES = ["a", "b", "c", "slow"]
RUN = 4
RUNS = 32


def _setup() -> tuple[Rendezvous, list[str]]:
    own = owners(IH, RUNS * RUN, NODES, RUN)
    return Rendezvous(IH, NODES), own


def _bits(own: list[str], node: str, runs_done: int = 10**9) -> tuple[bool, ...]:
    """`node`'s bitfield once it holds its own share (its first `runs_done` runs of it)."""
    mine = sorted({p // RUN for p, o in enumerate(own) if o == node})[:runs_done]
    return tuple(p // RUN in mine for p in range(len(own)))


def _view(own: list[str], me: str, peer_have: dict[str, tuple[bool, ...]]
          ) -> tuple[tuple[bool, ...], list[int]]:
    have = _bits(own, me)
    available = [sum(h[p] for h in peer_have.values()) for p in range(len(own))]
    return have, available


def test_a_node_with_its_share_done_takes_the_untouched_runs_of_a_slow_owner():
    rv, own = _setup()
    slow_runs = sorted({p // RUN for p, o in enumerate(own) if o == "slow"})
    # the slow node fetched its first two runs; the others are done
    peers = {n: _bits(own, n) for n in ("b", "c")} | {"slow": _bits(own, "slow", 2)}
    taken = {}
    for me in ("a", "b", "c"):
        ph = {n: (_bits(own, n) if n != "slow" else peers["slow"]) for n in NODES if n != me}
        have, available = _view(own, me, ph)
        assert share_done(me, own, have)
        taken[me] = takeover(me, rv, own, RUN, have, available, ph, laggards={"slow"})
    # every untouched run of the slow owner has exactly one taker; started runs stay its own
    # (it lags, so it fetches only those: see the next tests for an owner keeping up)
    got = sorted(c for t in taken.values() for c in t)
    assert got == slow_runs[2:]
    # the taker of each run is the first done node of its order after the owner
    for me, runs in taken.items():
        for c in runs:
            order = [x for x in rv.order(c) if x != "slow"]
            assert order[0] == me


def test_nothing_is_taken_from_an_owner_that_started_every_run_or_from_the_unseen():
    rv, own = _setup()
    ph = {n: _bits(own, n) for n in ("b", "c")} | {"slow": _bits(own, "slow")}
    have, available = _view(own, "a", ph)
    assert takeover("a", rv, own, RUN, have, available, ph) == frozenset()
    # an owner whose bitfield this node does not see (not a connected neighbour): no takeover
    ph = {n: _bits(own, n) for n in ("b", "c")}
    have, available = _view(own, "a", ph)
    assert takeover("a", rv, own, RUN, have, available, ph) == frozenset()


def test_only_laggards_and_stalled_owners_lose_runs_and_a_dead_owner_is_left_to_rehoming():
    rv, own = _setup()
    slow_runs = sorted({p // RUN for p, o in enumerate(own) if o == "slow"})
    # b and c are still fetching their own shares (one run each) and keep pace: a, the only
    # one done, takes none of theirs, but every untouched run of the lagging slow owner
    ph = {"b": _bits(own, "b", 1), "c": _bits(own, "c", 1), "slow": _bits(own, "slow", 0)}
    have, available = _view(own, "a", ph)
    assert takeover("a", rv, own, RUN, have, available, ph) == frozenset()
    got = takeover("a", rv, own, RUN, have, available, ph, laggards={"slow"})
    assert got == frozenset(slow_runs)
    # a stalled owner's too, all but the band it may be fetching
    got = takeover("a", rv, own, RUN, have, available, ph, stalled={"b"})
    b_left = [c for c in range(RUNS) if own[c * RUN] == "b" and not available[c * RUN]]
    assert got <= set(b_left) and got
    # a dead owner's runs move by `owners(..., dead=...)` instead
    assert not takeover("a", rv, own, RUN, have, available, ph, dead={"slow"},
                        laggards={"slow"}) & set(slow_runs)


def test_an_owner_fetches_front_to_back_and_a_taker_from_the_far_end():
    own = ["me"] * 12 + ["slow"] * 12
    d = decide_offload("me", IH, [False] * 24, [0] * 24, ["me", "slow"], owner_of=own, run=2)
    prio = d.priorities[:12]
    assert list(prio) == sorted(prio, reverse=True) and prio[0] == OWN
    assert min(prio) == OWN - BANDS + 1 > FROM_PEERS
    assert set(d.priorities[12:]) == {0}  # the slow owner's runs wait
    # my share done: runs 6..11 (the slow owner's) taken, the far end first
    d = decide_offload("me", IH, [True] * 12 + [False] * 12, [0] * 24, ["me", "slow"],
                       owner_of=own, run=2, taken={6, 7, 8, 9, 10, 11})
    assert d.origin == frozenset(range(12, 24))
    prio = d.priorities[12:]
    assert list(prio) == sorted(prio) and prio[-1] == OWN
    # a piece of a taken run that a peer already has comes from that peer
    d = decide_offload("me", IH, [True] * 12 + [False] * 12, [0] * 23 + [1], ["me", "slow"],
                       owner_of=own, run=2, taken={11})
    assert d.origin == {22} and d.priorities[23] == FROM_PEERS


def test_the_band_an_owner_may_be_fetching_can_be_taken_once_it_stalls():
    rv, own = _setup()
    slow_runs = sorted({p // RUN for p, o in enumerate(own) if o == "slow"})
    bits = {n: _bits(own, n) for n in ("a", "b", "c")} | {"slow": _bits(own, "slow", 0)}
    got: set[int] = set()
    for me in ("a", "b", "c"):
        peers = {n: h for n, h in bits.items() if n != me}
        have, available = _view(own, me, peers)
        got |= takeover(me, rv, own, RUN, have, available, peers, stalled={"slow"})
    assert got == set(slow_runs)


def test_an_owner_keeping_pace_keeps_its_runs_until_it_stalls():
    rv, own = _setup()
    b_runs = sorted({p // RUN for p, o in enumerate(own) if o == "b"})
    # b holds as many of its pieces as c and slow do of theirs: b is not lagging
    k = 3
    bits = {"a": _bits(own, "a"), "b": _bits(own, "b", k),
            "c": _bits(own, "c", k), "slow": _bits(own, "slow", k)}
    peers = {n: h for n, h in bits.items() if n != "a"}
    assert not lagging("b", Held.count(own, bits))
    have, available = _view(own, "a", peers)
    assert takeover("a", rv, own, RUN, have, available, peers) == frozenset()
    # once its bitfield stops growing, even the band it may be fetching is taken
    got = takeover("a", rv, own, RUN, have, available, peers, stalled={"b"})
    assert got == set(b_runs[k:])


def test_a_lagging_owner_leaves_its_share_to_the_takers():
    own = ["me"] * 12 + ["peer"] * 12
    bits = {"me": [True, False] + [False] * 22, "peer": [False] * 12 + [True] * 12}
    assert lagging("me", Held.count(own, bits))
    assert not lagging("peer", Held.count(own, bits))
    d = decide_offload("me", IH, bits["me"], [0] * 12 + [1] * 12, ["me", "peer"],
                       owner_of=own, run=2, lag=True)
    assert d.origin == frozenset()  # the rest, run 0 included, is left to the takers
    # ... which take every run of it with a piece nobody has, started or not
    rv = Rendezvous(IH, ["me", "peer"])
    peer_view = {"me": tuple(bits["me"])}
    got = takeover("peer", rv, own, 2, tuple(bits["peer"]), [int(h) for h in bits["me"]],
                   peer_view, laggards={"me"})
    assert got == frozenset(range(6))
    # nobody has made progress yet: nobody lags; a small share done first is not a lead
    assert not lagging("me", Held.count(own, {"me": [False] * 24, "peer": [False] * 24}))
    small = ["me"] * 20 + ["peer"] * 4
    assert not lagging("me", Held.count(small, {"me": [True] * 4 + [False] * 20,
                                                "peer": [False] * 20 + [True] * 4}))


def test_a_node_on_a_slow_link_lags_though_its_own_share_keeps_pace():
    """Its peers' bitfields fill from the origin and from each other; its own only as fast as
    its link: under a third of their count in all is behind, whatever its own share shows."""
    own = [n for n in ("a", "b", "c", "slow") for _ in range(10)]
    mine = {n: [o == n and i % 10 < 4 for i, o in enumerate(own)] for n in ("a", "b", "c")}
    # a, b, c hold 4 of their own 10 and 8 of each other's; slow 3 of its own and nothing else
    fast = {n: [h or (o in ("a", "b", "c") and o != n and i % 10 < 8)
                for i, (h, o) in enumerate(zip(mine[n], own))] for n in ("a", "b", "c")}
    slow = [o == "slow" and i % 10 < 3 for i, o in enumerate(own)]
    bits = {**fast, "slow": slow}
    assert share_count("slow", own, slow) >= LAG_RATIO * share_count("a", own, fast["a"])
    assert lagging("slow", Held.count(own, bits))
    assert not any(lagging(n, Held.count(own, bits)) for n in ("a", "b", "c"))
    # the same pace with as much from its peers as they have: not behind
    even = {**fast, "slow": [h or (o != "slow" and i % 10 < 6) for i, (h, o)
                             in enumerate(zip(slow, own))]}
    assert not lagging("slow", Held.count(own, even))
    # nobody has much yet (the median under an even share / LAG_MIN_PART): nobody lags
    early = {n: [i == own.index(n) for i in range(len(own))] for n in ("a", "b", "c")}
    assert not lagging("slow", Held.count(own, {**early, "slow": [False] * len(own)}))


# -- a node done earlier takes a laggard's runs first ----------------------------------------

from reconciler.core.offload import PRECEDENCE, ahead_of  # noqa: E402


def test_a_node_done_later_leaves_a_laggards_runs_to_the_node_done_first_for_a_while():
    rv, own = _setup()
    slow_runs = {p // RUN for p, o in enumerate(own) if o == "slow"}
    done = {n: _bits(own, n) for n in ("a", "b", "c")}
    slow = _bits(own, "slow", 0)
    # t=1: only a is done; it takes every run of the lagging owner
    ph = {"b": _bits(own, "b", 1), "c": _bits(own, "c", 1), "slow": slow}
    have, available = _view(own, "a", ph)
    first = takeover("a", rv, own, RUN, have, available, ph, laggards={"slow"},
                     done_at={"a": 1.0}, now=1.0)
    assert first == slow_runs
    # t=2: b is done too, and sees a done since 1: it takes none of them ...
    ph = {"a": done["a"], "c": _bits(own, "c", 1), "slow": slow}
    have, available = _view(own, "b", ph)
    at = {"a": 1.0, "b": 2.0}
    assert takeover("b", rv, own, RUN, have, available, ph, laggards={"slow"},
                    done_at=at, now=2.0 + PRECEDENCE - 0.1) == frozenset()
    # ... unless the node done first is gone (dead or not connected) ...
    assert takeover("b", rv, own, RUN, have, available, ph, dead={"a"}, laggards={"slow"},
                    done_at=at, now=2.5)
    gone = {n: h for n, h in ph.items() if n != "a"}
    have2, available2 = _view(own, "b", gone)
    assert takeover("b", rv, own, RUN, have2, available2, gone, laggards={"slow"},
                    done_at=at, now=2.5)
    # ... or until PRECEDENCE has passed (a may not see the owner): then as without `done_at`
    late = takeover("b", rv, own, RUN, have, available, ph, laggards={"slow"},
                    done_at=at, now=2.0 + PRECEDENCE)
    assert late == takeover("b", rv, own, RUN, have, available, ph, laggards={"slow"}) != set()
    # done in the same moment: nobody defers, the rendezvous order splits the runs
    assert takeover("b", rv, own, RUN, have, available, ph, laggards={"slow"},
                    done_at={"a": 2.0, "b": 2.0}, now=2.5) == late


@settings(max_examples=300, deadline=None)
@given(real=st.tuples(st.floats(0, 5), st.floats(0, 5)),
       delay=st.tuples(st.floats(0, 2), st.floats(0, 2)),
       phase=st.tuples(st.floats(0, 1), st.floats(0, 1)), tick=st.floats(0.05, 1))
def test_two_done_nodes_never_both_defer_to_each_other(
        real: tuple[float, float], delay: tuple[float, float],
        phase: tuple[float, float], tick: float) -> None:
    """Each node sees its own share done at its first tick after it is, and the other's at
    its first tick after the news arrives (`delay` later): whatever the timing, one of them
    takes the runs; a run nobody takes would wait for the stuck fallback."""
    import math

    def seen_at(node: int, t: float) -> float:  # `node`'s first tick at or after t
        return phase[node] + tick * max(0, math.ceil((t - phase[node]) / tick))

    names = ("a", "b")
    views = []
    for me in (0, 1):
        other = 1 - me
        at = {names[me]: seen_at(me, real[me]),
              names[other]: seen_at(me, real[other] + delay[me])}
        views.append(ahead_of(names[me], at, max(at.values()), (), {names[other]: ()}))
    assert not ("b" in views[0] and "a" in views[1])


# -- pieces only slow peers hold -------------------------------------------------------------

from reconciler.core.offload import SLOW_HELD_AFTER, slow_held  # noqa: E402


def test_pieces_a_slow_peer_holds_for_a_while_come_from_the_origin_by_one_done_node():
    rv, own = _setup()
    n = len(own)
    slow_pieces = [p for p, o in enumerate(own) if o == "slow"][:3 * RUN]
    held = tuple(p in slow_pieces for p in range(n))
    done = {"a", "b", "c"}
    views = {}
    for me in ("a", "b", "c"):
        ph = {x: _bits(own, x) for x in ("a", "b", "c") if x != me} | {"slow": held}
        have = _bits(own, me)
        since = [0.0 if held[p] and not have[p] else math.inf for p in range(n)]
        views[me] = slow_held(me, rv, RUN, have, ph, done, since, now=SLOW_HELD_AFTER)
        # not yet: a peer with a normal uplink sends it within a second
        assert not slow_held(me, rv, RUN, have, ph, done, since, now=SLOW_HELD_AFTER - 0.1)
    # each such piece by exactly one of the done nodes: the first of its run's order
    got = sorted(p for v in views.values() for p in v)
    assert got == sorted(slow_pieces)
    for me, pieces in views.items():
        for p in pieces:
            assert next(x for x in rv.order(p // RUN) if x != "slow") == me
    # a done node that holds it is no taker (the next one is), nor a node not done, a
    # laggard or a dead one
    me = "a"
    since = [0.0 if held[p] else math.inf for p in range(n)]
    for who in ("b", "c"):
        bits = tuple(x or y for x, y in zip(_bits(own, who), held))
        ph = {x: _bits(own, x) for x in ("b", "c")} | {who: bits, "slow": held}
        mine = slow_held(me, rv, RUN, _bits(own, me), ph, done, since, now=10.0)
        assert mine == {p for p in slow_pieces if next(
            x for x in rv.order(p // RUN) if x not in ("slow", who)) == me}
    ph = {"b": _bits(own, "b"), "c": _bits(own, "c"), "slow": held}
    for kw in ({"done": {"a"}}, {"done": done, "laggards": {"b", "c"}},
               {"done": done, "dead": {"b", "c"}}):
        kw = {"dead": (), "laggards": ()} | kw
        alone = slow_held(me, rv, RUN, _bits(own, me), ph, kw["done"], since, 10.0,
                          kw["dead"], kw["laggards"])
        assert alone == set(slow_pieces)
    # and decide_offload fetches them from the origin though a peer has them
    have = _bits(own, me)
    available = [sum(h[p] for h in ph.values()) for p in range(n)]
    d = decide_offload(me, IH, have, available, NODES, owner_of=own, run=RUN, slow=alone)
    assert d.origin == alone and all(d.priorities[p] > FROM_PEERS for p in alone)


# -- a node that joins late lags at once ------------------------------------------------------

from reconciler.core.offload import LATE_FRACTION, joined_late  # noqa: E402


def test_a_node_joining_a_swarm_that_holds_half_the_data_lags_at_once():
    n = 40
    half = [i < n * LATE_FRACTION for i in range(n)]
    assert joined_late("new", Held.count((), {"new": [False] * n, "a": half, "b": [True] * n}))
    # what it has from its peers already (a restart, a previous version) counts
    assert not joined_late("new", Held.count((), {"new": [i < 10 for i in range(n)],
                                                  "a": half}))
    # peers under half: a start-up delay may explain it, so LAG_AFTER applies (`lagging`)
    under = [i < n * LATE_FRACTION - 1 for i in range(n)]
    assert not joined_late("new", Held.count((), {"new": [False] * n, "a": under}))
    # alone, or not among the bitfields: nothing to judge by
    assert not joined_late("new", Held.count((), {"new": [False] * n}))
    assert not joined_late("new", Held.count((), {"a": half}))
