"""The pure rules for datasets without spec.lock: the key, who builds, the cache."""

from __future__ import annotations

import dataclasses

import pytest

from factories import dataset, node, state, torrent
from reconciler.model.desired import HttpSource
from reconciler.core.pinning import MetadataCache, blocked, decide_pin, metadata_key, with_locks

RANKED = ("n1", "n2", "n3")


def test_key_changes_with_version_and_source_only():
    d = dataset("x", locked=False)
    assert len(metadata_key(d)) == 32
    assert metadata_key(d) == metadata_key(dataclasses.replace(d, path="/elsewhere", priority="high"))
    assert metadata_key(d) != metadata_key(dataclasses.replace(d, version="v9"))
    assert metadata_key(d) != metadata_key(dataclasses.replace(
        d, source=HttpSource(base_url="http://other/", files=("a",))))
    assert metadata_key(d) != metadata_key(dataclasses.replace(d, name="y"))


def test_first_ranked_builds_at_once_when_everyone_answered():
    assert decide_pin("n1", RANKED, {"n2": "unknown", "n3": "waiting"}, 0, 10).kind == "build"


def test_first_ranked_gives_silent_nodes_a_moment_they_may_have_it():
    d = decide_pin("n1", RANKED, {"n2": "unreachable", "n3": "waiting"}, 1.0, 10, settle=3.0)
    assert (d.kind, d.node) == ("wait", "n2")
    assert decide_pin("n1", RANKED, {"n2": "unreachable", "n3": "waiting"}, 3.0, 10).kind == "build"


def test_others_take_from_a_holder_even_ranked_below():
    d = decide_pin("n1", RANKED, {"n2": "waiting", "n3": "has"}, 0, 10)
    assert (d.kind, d.node) == ("take", "n3")


def test_lower_ranked_waits_for_the_first_then_takes_over_when_it_stays_silent():
    answers = {"n1": "unreachable", "n3": "waiting"}
    assert not blocked("n2", RANKED, answers)
    d = decide_pin("n2", RANKED, answers, 3.0, 10.0)
    assert (d.kind, d.node) == ("wait", "n1") and "taking over in 7s" in d.reason
    d = decide_pin("n2", RANKED, answers, 10.0, 10.0)
    assert d.kind == "build" and "n1: unreachable" in d.reason


def test_a_node_above_that_wants_it_too_or_anyone_building_blocks():
    assert blocked("n3", RANKED, {"n1": "unreachable", "n2": "waiting"})
    assert decide_pin("n3", RANKED, {"n1": "unreachable", "n2": "waiting"}, 99, 10).kind == "wait"
    # a returning first-ranked node does not start a second build beside a running one
    assert decide_pin("n1", RANKED, {"n2": "building"}, 99, 10) .kind == "wait"
    # a node below that only waits does not hold the first-ranked back
    assert not blocked("n1", RANKED, {"n2": "waiting", "n3": "waiting"})


def test_failed_or_unknown_above_do_not_block_forever():
    for s in ("failed", "unknown", "unreachable"):
        assert decide_pin("n3", RANKED, {"n1": s, "n2": s}, 10, 10).kind == "build"


def test_cache_roundtrip_and_with_locks(tmp_path):
    d = dataset("x", locked=False)
    s = state([node("n1")], [d, dataset("y")])
    cache = MetadataCache(tmp_path)
    assert cache.locks(s) == {}
    lock = cache.put(d, torrent("x"))
    assert cache.get("x", metadata_key(d)) == torrent("x")
    assert cache.locks(s) == {"x": lock}
    resolved = with_locks(s, cache.locks(s))
    assert resolved.datasets["x"].lock == lock
    assert resolved.datasets["y"] is s.datasets["y"]  # a locked dataset keeps its own lock
    assert with_locks(s, {}) is s


def test_cache_refuses_a_torrent_of_another_dataset_and_odd_names(tmp_path):
    cache = MetadataCache(tmp_path)
    with pytest.raises(ValueError, match="not of dataset 'x'"):
        cache.put(dataset("x", locked=False), torrent("other"))
    with pytest.raises(ValueError):
        cache.put(dataset("x", locked=False), b"not a torrent")
    assert cache.get("../../etc", "0" * 32) is None
    assert cache.get("x", "../x") is None


def test_prune_keeps_the_current_and_a_few_earlier_keys(tmp_path):
    cache = MetadataCache(tmp_path)
    d = dataset("x", locked=False)
    for i in range(7):
        cache.put(dataclasses.replace(d, version=f"v{i}"), torrent("x"))
    cache.put(dataset("gone", locked=False), torrent("gone"))
    current = dataclasses.replace(d, version="v0")
    cache.prune(state([node("n1")], [current]))
    left = {p.stem for p in (tmp_path / "metadata" / "x").iterdir()}
    assert metadata_key(current) in left and len(left) == 5
    assert not (tmp_path / "metadata" / "gone").exists()
