"""core/split.py (issue 14 item 2, pure part only): each file on the K target nodes ranked
highest by sha256("<dataset>/<file>/<node>"); adding a node moves only what must move."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.split import file_weight, files_of, holders, short_files, split_files


def test_weight_is_sha256_of_dataset_file_node_big_endian() -> None:
    want = int.from_bytes(hashlib.sha256(b"ckpt/shard-0.bin/gpu-01").digest(), "big")
    assert file_weight("ckpt", "shard-0.bin", "gpu-01") == want


def test_holders_are_the_top_k_by_weight() -> None:
    nodes = [f"n{i}" for i in range(7)]
    want = sorted(nodes, key=lambda n: file_weight("d", "f", n), reverse=True)[:3]
    assert holders("d", "f", nodes, 3) == tuple(want)
    assert set(holders("d", "f", nodes[:2], 3)) == set(nodes[:2])  # fewer targets than K


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.integers(1, 40))
def test_adding_a_node_moves_only_files_onto_it(n: int, k: int, n_files: int) -> None:
    nodes = [f"n{i}" for i in range(n)]
    files = [f"part-{i:03d}" for i in range(n_files)]
    before = split_files("d", files, nodes, k)
    after = split_files("d", files, [*nodes, "new"], k)
    for f in files:
        gained = set(after[f]) - set(before[f])
        assert gained <= {"new"}  # no file moves between old nodes
        lost = set(before[f]) - set(after[f])
        # one out per one in, unless there were fewer targets than copies
        assert len(lost) == (len(gained) if len(before[f]) == k else 0)
        assert len(after[f]) == min(k, n + 1)
    # and removing it again restores exactly the old split
    assert split_files("d", files, nodes, k) == before


def test_files_of_a_node_and_files_short_of_copies() -> None:
    a = {"x": ("n1", "n2"), "y": ("n2", "n3"), "z": ("n3", "n1")}
    assert files_of(a, "n1") == ["x", "z"]
    assert short_files(a, ready=["n1", "n2", "n3"], copies=2) == []
    assert short_files(a, ready=["n1", "n2"], copies=2) == ["y", "z"]


# -- what the executor asks of the rule (issue 14 item 2, wired) ------------------------------

from reconciler.core.offload import Rendezvous  # noqa: E402
from reconciler.core.split import (as_wanted, node_files, piece_bytes, piece_holders,  # noqa: E402
                                   piece_owners, skipped_pieces)

PS = 16 << 10
LOCK_FILES = (("a.bin", 3 * PS + 5), ("b.bin", PS), ("empty", 0), ("c/d.bin", 2 * PS))
#              pieces 0-3               4            none          5-6


def test_node_files_are_the_files_it_ranks_top_k_for() -> None:
    nodes = ["n1", "n2", "n3"]
    names = [p for p, _ in LOCK_FILES]
    for k in (1, 2, 3):
        per = {n: node_files("d", names, nodes, k, n) for n in nodes}
        for f in names:
            assert {n for n in nodes if f in per[n]} == set(holders("d", f, nodes, k))
    assert node_files("d", names, nodes, 1, "not-a-target") == frozenset()


def test_skipped_pieces_are_exactly_the_pieces_of_the_others_files() -> None:
    assert skipped_pieces(LOCK_FILES, PS, {"b.bin"}) == frozenset({0, 1, 2, 3, 5, 6})
    assert skipped_pieces(LOCK_FILES, PS, {"a.bin", "c/d.bin", "empty"}) == frozenset({4})
    assert skipped_pieces(LOCK_FILES, PS, {p for p, _ in LOCK_FILES}) == frozenset()


def test_piece_bytes_count_only_the_files_held() -> None:
    assert piece_bytes(LOCK_FILES, PS, {"a.bin"}) == (PS, PS, PS, 5, 0, 0, 0)
    assert sum(piece_bytes(LOCK_FILES, PS, {"a.bin", "c/d.bin"})) == 3 * PS + 5 + 2 * PS


def test_skipped_pieces_count_as_held_for_the_download_rules() -> None:
    have = (False, True, False, False, False, False, False)
    assert as_wanted(have, frozenset({0, 4})) == (True, True, False, False, True, False, False)
    assert all(as_wanted((False,) * 7, skipped_pieces(LOCK_FILES, PS, set())))


def test_origin_owner_of_every_piece_holds_its_file() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    for k in (1, 2):
        per_piece = piece_holders("d", LOCK_FILES, PS, nodes, k)
        assert len(per_piece) == 7
        own = piece_owners("ih", per_piece, run=2)
        assert all(o in who for o, who in zip(own, per_piece))
        # the same rendezvous order of runs as core/offload.py, over the holders only
        assert own[4] == Rendezvous("ih", per_piece[4]).owner(2)
        # a dead holder's runs go to the other holder (k=2), never to a non-holder
        dead = {own[0]}
        again = piece_owners("ih", per_piece, run=2, dead=dead)
        for p, who in enumerate(per_piece):
            if k == 2 and own[p] in dead:
                assert again[p] in who and again[p] not in dead
            elif own[p] not in dead:
                assert again[p] == own[p]  # only the dead node's runs move
