"""Unsatisfiable placement, found from the state repo alone (`validate` prints these as warnings)."""

import dataclasses

from factories import dataset, node, state
from reconciler.core.placement_warnings import placement_warnings
from reconciler.model.desired import Placement, Position, Requirement

H100 = {"gpu": "h100"}
NODES = [node("a", 1, labels=H100), node("b", 2, labels=H100), node("c", 3, labels={"gpu": "a100"})]


def at(line: int) -> dict[str, object]:
    return {"position": Position("datasets/x.yaml", line, 1)}


def test_satisfiable_placement_has_no_warning() -> None:
    s = state(NODES, [dataset("r2", Placement(replicas=2, selector=H100), **at(1)),
                      dataset("all", Placement(all=True), **at(20)),
                      dataset("n", Placement(nodes=("a", "c")), **at(40))])
    assert placement_warnings(s) == []


def test_more_replicas_than_nodes_matching_the_selector() -> None:
    s = state(NODES, [dataset("big", Placement(replicas=3, selector=H100), **at(7))])
    [w] = placement_warnings(s)
    assert (w.file, w.line, w.col, w.field) == ("datasets/x.yaml", 7, 1, "spec.placement.replicas")
    assert "dataset big" in w.message and "replicas: 3" in w.message
    assert "2 of 3 replicas placed: 2 eligible nodes" in w.message and "{gpu: h100}" in w.message
    assert str(w).startswith("datasets/x.yaml:7:1: spec.placement.replicas: ")


def test_more_replicas_than_nodes_without_selector_and_without_room() -> None:
    s = state(NODES, [dataset("four", Placement(replicas=4), **at(1))])
    assert "3 eligible nodes" in placement_warnings(s)[0].message
    small = [node(n.name, i, capacity=10) for i, n in enumerate(NODES, 1)]
    s = state(small, [dataset("wide", Placement(replicas=1), size=1000, **at(1))])
    [w] = placement_warnings(s)
    assert "3 without room" in w.message


def test_one_replica_per_storage_group_counts() -> None:
    shared = [node("a", 1, storage_group="nfs"), node("b", 2, storage_group="nfs")]
    s = state(shared, [dataset("d", Placement(replicas=2), **at(1))])
    assert "1 of 2 replicas placed" in placement_warnings(s)[0].message


def test_all_with_a_selector_matching_no_node() -> None:
    s = state(NODES, [dataset("d", Placement(all=True, selector={"gpu": "b200"}), **at(3))])
    [w] = placement_warnings(s)
    assert w.field == "spec.placement.selector" and "no node" in w.message.lower()
    assert "{gpu: b200}" in w.message


def test_selector_next_to_nodes_is_ignored() -> None:
    s = state(NODES, [dataset("d", Placement(nodes=("a", "c"), selector=H100), **at(5))])
    [w] = placement_warnings(s)
    assert w.field == "spec.placement.selector" and "ignored" in w.message
    assert "would not match c" in w.message


def test_nodes_entry_naming_no_node() -> None:
    s = state(NODES, [dataset("d", Placement(nodes=("a", "gpu-99")), **at(5))])
    [w] = placement_warnings(s)
    assert w.field == "spec.placement.nodes" and "'gpu-99'" in w.message


def test_sorted_by_position_and_pure() -> None:
    s = state(NODES, [dataset("z", Placement(replicas=9), **at(2)),
                      dataset("y", Placement(nodes=("a",), selector=H100), **at(30))])
    first = placement_warnings(s)
    assert [w.line for w in first] == [2, 30]
    assert placement_warnings(s) == first


# -- issue 14: cordons, match expressions, storage groups ---------------------------------------

def test_replicas_short_because_matching_nodes_are_cordoned() -> None:
    nodes = [dataclasses.replace(NODES[0], cordoned=True), *NODES[1:]]
    s = state(nodes, [dataset("d", Placement(replicas=2, selector=H100), **at(4))])
    [w] = placement_warnings(s)
    assert w.field == "spec.placement.replicas" and w.dataset == "d"
    assert "1 of 2 replicas placed: 1 eligible nodes" in w.message
    assert "1 matching node(s) cordoned" in w.message


def test_all_whose_matching_nodes_are_all_cordoned() -> None:
    nodes = [dataclasses.replace(n, cordoned=True) if n.labels == H100 else n for n in NODES]
    s = state(nodes, [dataset("d", Placement(all=True, selector=H100), **at(2))])
    [w] = placement_warnings(s)
    assert w.field == "spec.placement.selector"
    assert "places it on no node: all 2 Node(s) matching selector {gpu: h100} are cordoned" \
        in w.message


def test_explicit_nodes_naming_a_cordoned_node_are_placed_and_warned() -> None:
    nodes = [dataclasses.replace(NODES[0], cordoned=True), *NODES[1:]]
    s = state(nodes, [dataset("d", Placement(nodes=("a", "b")), **at(9))])
    [w] = placement_warnings(s)
    assert (w.line, w.field) == (9, "spec.placement.nodes")
    assert "cordoned node(s) a named in nodes: placed there anyway" in w.message


def test_expressions_are_shown_and_checked_next_to_nodes() -> None:
    exprs = (Requirement("gpu", "NotIn", ("a100",)), Requirement("zone", "DoesNotExist"))
    s = state(NODES, [dataset("d", Placement(replicas=3, match_expressions=exprs), **at(1)),
                      dataset("n", Placement(nodes=("a", "c"), match_expressions=exprs),
                              **at(30))])
    w1, w2 = placement_warnings(s)
    assert "{gpu NotIn (a100), zone DoesNotExist}" in w1.message
    assert "2 of 3 replicas placed: 2 eligible nodes" in w1.message
    assert w2.field == "spec.placement.selector" and "it would not match c" in w2.message


def test_all_with_a_storage_group_whose_members_have_no_room() -> None:
    nodes = [node("a", 1, storage_group="nfs", capacity=10),
             node("b", 2, storage_group="nfs", capacity=10), node("c", 3)]
    s = state(nodes, [dataset("d", Placement(all=True), size=1000, **at(5))])
    messages = [w.message for w in placement_warnings(s)]
    assert any("storage group(s) nfs: no member chosen" in m for m in messages)


def test_more_split_copies_than_target_nodes() -> None:
    s = state(NODES, [dataset("sp", Placement(replicas=2), split=3, **at(7)),
                      dataset("ok", Placement(replicas=2), split=2, **at(9))])
    ws = placement_warnings(s)
    assert [(w.field, w.line, w.dataset) for w in ws] == [("spec.split.copies", 7, "sp")]
    assert "copies: 3 is more than its 2 target node(s)" in ws[0].message
