"""Placement for real fleets (issue 14, item 3): `matchExpressions`, `spec.cordoned`, and sizes
from git only, so every node computes the same placement."""

from __future__ import annotations

import dataclasses

import pytest

from factories import dataset, lock, node, state
from reconciler.core.pinning import with_locks
from reconciler.core.placement import (Placer, place, place_uncached, placement_size,
                                       rank_nodes)
from reconciler.model.desired import Placement, Requirement

FLEET = [node("h1", 1, labels={"gpu": "h100", "rack": "r1", "role": "coordinator"}),
         node("h2", 2, labels={"gpu": "h100", "rack": "r1"}),
         node("h3", 3, labels={"gpu": "h100", "rack": "r2"}),
         node("h4", 4, labels={"gpu": "h100", "rack": "r3"}),
         node("a1", 5, labels={"gpu": "a100", "rack": "r2"}),
         node("x1", 6, labels={})]


def eligible(*exprs: Requirement, **labels: str) -> set[str]:
    s = state(FLEET, [dataset("d", Placement(all=True, selector=labels,
                                             match_expressions=exprs))])
    return set(place_uncached(s)["d"].nodes)


@pytest.mark.parametrize("expr, want", [
    (Requirement("gpu", "In", ("h100", "a100")), {"h1", "h2", "h3", "h4", "a1"}),
    (Requirement("gpu", "NotIn", ("h100",)), {"a1", "x1"}),  # NotIn matches a missing key
    (Requirement("role", "Exists"), {"h1"}),
    (Requirement("role", "DoesNotExist"), {"h2", "h3", "h4", "a1", "x1"}),
    (Requirement("rack", "In", ("r9",)), set()),
])
def test_each_operator_as_in_kubernetes(expr: Requirement, want: set[str]) -> None:
    assert eligible(expr) == want


def test_every_h100_except_the_coordinators_rack() -> None:
    assert eligible(Requirement("rack", "NotIn", ("r1",)), gpu="h100") == {"h3", "h4"}


def test_expressions_and_labels_must_all_hold() -> None:
    assert eligible(Requirement("rack", "In", ("r1", "r2")),
                    Requirement("role", "DoesNotExist"), gpu="h100") == {"h2", "h3"}


def test_a_cordoned_node_gets_no_replica_and_its_replica_moves_to_the_next_ranked() -> None:
    nodes = [node(f"n{i}", i) for i in range(1, 7)]
    ranked = rank_nodes("w", [n.name for n in nodes])
    before = place_uncached(state(nodes, [dataset("w", Placement(replicas=2))]))["w"].nodes
    assert before == tuple(ranked[:2])
    fenced = [dataclasses.replace(n, cordoned=True) if n.name == ranked[0] else n for n in nodes]
    after = place_uncached(state(fenced, [dataset("w", Placement(replicas=2))]))["w"].nodes
    assert after == (ranked[1], ranked[2])  # only the cordoned node's replica moved


def test_cordon_moves_only_what_the_node_held() -> None:
    nodes = [node(f"n{i}", i) for i in range(1, 9)]
    datasets = [dataset(f"d{i}", Placement(replicas=2)) for i in range(20)]
    before = place_uncached(state(nodes, datasets))
    fenced = [dataclasses.replace(nodes[0], cordoned=True), *nodes[1:]]
    after = place_uncached(state(fenced, datasets))
    for name, a in before.items():
        if "n1" not in a.nodes:
            assert after[name].nodes == a.nodes
        else:
            assert "n1" not in after[name].nodes and len(after[name].nodes) == 2
            kept = [n for n in a.nodes if n != "n1"]
            assert all(n in after[name].nodes for n in kept)


def test_cordoned_nodes_are_left_out_of_all_but_an_explicit_nodes_list_applies() -> None:
    nodes = [node("a", 1, cordoned=True), node("b", 2), node("c", 3)]
    a = place_uncached(state(nodes, [dataset("every", Placement(all=True)),
                                     dataset("pinned", Placement(nodes=("a", "b")))]))
    assert set(a["every"].nodes) == {"b", "c"}
    assert a["pinned"].nodes == ("a", "b")


def test_a_cordoned_storage_group_member_leaves_the_copy_to_another_member() -> None:
    nodes = [node("a", 1, storage_group="nfs"), node("b", 2, storage_group="nfs")]
    first = place_uncached(state(nodes, [dataset("x", Placement(replicas=1))]))["x"].nodes
    fenced = [dataclasses.replace(n, cordoned=n.name == first[0]) for n in nodes]
    again = place_uncached(state(fenced, [dataset("x", Placement(replicas=1))]))["x"].nodes
    assert again and again != first


def test_all_reports_a_storage_group_with_no_member_chosen() -> None:
    nodes = [node("a", 1, storage_group="nfs", capacity=10),
             node("b", 2, storage_group="nfs", capacity=10), node("c", 3)]
    a = place_uncached(state(nodes, [dataset("x", Placement(all=True), size=1000)]))["x"]
    assert a.nodes == ("c",) and a.unserved_groups == ("nfs",)


# -- sizes from git only ------------------------------------------------------------------------

def test_placement_size_is_the_git_lock_else_spec_size_else_zero() -> None:
    locked = dataset("a", size=700)
    assert placement_size(locked) == 700
    assert placement_size(dataclasses.replace(locked, size=5)) == 700  # the lock is exact
    unlocked = dataset("b", locked=False)
    assert placement_size(unlocked) == 0
    assert placement_size(dataclasses.replace(unlocked, size=4096)) == 4096
    pinned = dataclasses.replace(unlocked, lock=lock("b", size=900), pinned_lock=True)
    assert placement_size(pinned) == 0
    assert placement_size(dataclasses.replace(pinned, size=4096)) == 4096


@pytest.mark.parametrize("declared", [None, 800])
def test_a_node_holding_the_unlocked_torrent_and_one_without_place_alike(
        declared: int | None) -> None:
    """The bug of issue 14: the holder counted the torrent's bytes against capacity, the
    others counted 0, so they disagreed. Both now place from git alone."""
    nodes = [node(f"n{i}", i, capacity=1500) for i in range(1, 5)]
    big = dataclasses.replace(dataset("big", Placement(replicas=2), locked=False),
                              size=declared)
    other = dataset("other", Placement(replicas=4), size=1000, priority="low")
    git = state(nodes, [big, other])
    holder = with_locks(git, {"big": lock("big", size=1200)})  # a node that pinned it
    assert holder.datasets["big"].lock is not None and holder.datasets["big"].pinned_lock
    assert place_uncached(holder) == place_uncached(git)
    assert Placer().place(holder) == Placer().place(git) == place_uncached(git)
    # and the shared remembering placer answers the same whichever it saw first
    assert place(holder) == place(git) == place(holder)
    room = 4 if declared is None else 2  # a declared 800 B leaves no room for `other`'s 1000
    assert len(place_uncached(git)["other"].nodes) == room


def test_remembered_answers_follow_cordon_expressions_and_spec_size() -> None:
    placer = Placer()
    nodes = [node(f"n{i}", i, labels={"rack": f"r{i % 2}"}, capacity=1000)
             for i in range(1, 7)]
    d = dataset("d", Placement(replicas=3), locked=False)
    states = [state(nodes, [d]),
              state([dataclasses.replace(nodes[0], cordoned=True), *nodes[1:]], [d]),
              state(nodes, [dataclasses.replace(d, placement=Placement(
                  replicas=3, match_expressions=(Requirement("rack", "NotIn", ("r0",)),)))]),
              state(nodes, [dataclasses.replace(d, size=2000)])]
    for s in [*states, *reversed(states)]:
        assert placer.place(s) == place_uncached(s)
