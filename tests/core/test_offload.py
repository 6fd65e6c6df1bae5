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
