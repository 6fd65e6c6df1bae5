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
