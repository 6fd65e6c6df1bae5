import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import dataset, node, state
from reconciler.model.desired import Placement
from reconciler.core.placement import datasets_for_node, place, rank_nodes, rendezvous_weight


def test_weight_is_sha256_of_dataset_slash_node_big_endian():
    expected = int.from_bytes(hashlib.sha256(b"llama/gpu-01").digest(), "big")
    assert rendezvous_weight("llama", "gpu-01") == expected


def test_replicas_take_the_highest_ranked_nodes():
    nodes = [node(f"n{i}", i) for i in range(6)]
    s = state(nodes, [dataset("weights", Placement(replicas=2))])
    ranked = sorted((n.name for n in nodes), key=lambda n: -rendezvous_weight("weights", n))
    assert place(s)["weights"].nodes == tuple(ranked[:2])


def test_explicit_nodes_and_all():
    nodes = [node("a", 1), node("b", 2), node("c", 3)]
    s = state(nodes, [dataset("x", Placement(nodes=("c", "a"))), dataset("y", Placement(all=True))])
    a = place(s)
    assert a["x"].nodes == ("c", "a")
    assert set(a["y"].nodes) == {"a", "b", "c"}
    assert datasets_for_node(a, "b") == ["y"]


def test_selector_filters_eligible_nodes():
    nodes = [node("a", 1, labels={"gpu": "h100"}), node("b", 2, labels={"gpu": "a100"}),
             node("c", 3, labels={"gpu": "h100"})]
    s = state(nodes, [dataset("x", Placement(all=True, selector={"gpu": "h100"})),
                      dataset("y", Placement(replicas=5, selector={"gpu": "a100"}))])
    a = place(s)
    assert set(a["x"].nodes) == {"a", "c"}
    assert a["y"].nodes == ("b",)
    assert a["y"].shortfall_reason and "1 of 5" in a["y"].shortfall_reason


def test_nodes_without_room_are_skipped_and_capacity_is_consumed_in_priority_order():
    nodes = [node("a", 1, capacity=1500), node("b", 2, capacity=1500), node("c", 3, capacity=1500)]
    big = dataset("big", Placement(replicas=3), size=1000, priority="critical")
    small = dataset("small", Placement(replicas=3), size=1000, priority="low")
    a = place(state(nodes, [small, big]))
    assert len(a["big"].nodes) == 3
    assert a["small"].nodes == ()
    assert "without room" in (a["small"].shortfall_reason or "")


def test_one_replica_per_storage_group():
    nodes = [node("a", 1, storage_group="nfs1"), node("b", 2, storage_group="nfs1"),
             node("c", 3, storage_group="nfs2")]
    a = place(state(nodes, [dataset("x", Placement(replicas=2))]))
    groups = {next(n for n in nodes if n.name == x).storage_group for x in a["x"].nodes}
    assert groups == {"nfs1", "nfs2"}


names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=2, max_size=12,
                 unique=True)


@settings(max_examples=60, deadline=None)
@given(names, st.integers(1, 5), st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_deterministic_whatever_the_inventory_order(node_names, replicas, ds):
    nodes = [node(n, i) for i, n in enumerate(node_names)]
    a1 = place(state(nodes, [dataset(ds, Placement(replicas=replicas))]))
    a2 = place(state(list(reversed(nodes)), [dataset(ds, Placement(replicas=replicas))]))
    assert a1 == a2
    assert a1[ds].nodes == tuple(rank_nodes(ds, node_names)[:replicas])


@settings(max_examples=60, deadline=None)
@given(names, st.integers(1, 5), st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.data())
def test_adding_or_removing_a_node_moves_only_what_must_move(node_names, replicas, ds, data):
    extra = data.draw(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
        lambda n: n not in node_names))
    before = set(place(state([node(n) for n in node_names],
                             [dataset(ds, Placement(replicas=replicas))]))[ds].nodes)
    after = set(place(state([node(n) for n in [*node_names, extra]],
                            [dataset(ds, Placement(replicas=replicas))]))[ds].nodes)
    # Adding a node: at most one replica moves, and only onto the new node.
    assert after - before <= {extra}
    assert len(before - after) <= 1
    # Removing a node that held nothing moves nothing; removing a holder replaces only it.
    gone = data.draw(st.sampled_from(node_names))
    rest = [n for n in node_names if n != gone]
    after_rm = set(place(state([node(n) for n in rest],
                               [dataset(ds, Placement(replicas=replicas))]))[ds].nodes)
    assert before - {gone} <= after_rm
    assert len(after_rm - before) <= (1 if gone in before else 0)


def test_the_publishing_node_always_holds_what_it_publishes():
    from dataclasses import replace

    from reconciler.core.placement import place_uncached
    from reconciler.model.desired import NodeSource
    nodes = [node(f"n{i}", i, labels={"role": "eval" if i else "train"}) for i in range(5)]
    src = NodeSource("n0", "/data/ckpt/step-1")
    ds = [replace(dataset("ck", Placement(all=True, selector={"role": "eval"})), source=src),
          replace(dataset("r1", Placement(replicas=1)), source=src),
          replace(dataset("ex", Placement(nodes=("n2", "n0"))), source=src)]
    s = state(nodes, ds)
    a = place(s)
    assert a == place_uncached(s)
    # The trainer is not "eval", but holds it, first; the others in rank order.
    assert a["ck"].nodes == ("n0", *rank_nodes("ck", ["n1", "n2", "n3", "n4"]))
    assert a["r1"].nodes[0] == "n0" and len(a["r1"].nodes) in (1, 2)
    assert a["ex"].nodes == ("n0", "n2")
    # Moving the publisher moves it (the cached answer too).
    moved = state(nodes, [replace(ds[0], source=NodeSource("n3", "/x"))])
    assert place(moved)["ck"].nodes == ("n3", *rank_nodes("ck", ["n1", "n2", "n4"]))
