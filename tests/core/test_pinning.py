"""The pure rules for datasets without spec.lock: the key and who builds."""

from __future__ import annotations

import dataclasses

from factories import dataset
from reconciler.model.desired import HttpSource
from reconciler.core.pinning import blocked, decide_pin, metadata_key

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
