"""`place` remembers its last answer and each dataset's ranking (issue 13): whatever the
sequence of revisions, it must answer exactly what placing from scratch answers."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import dataset, node, state
from reconciler.core.placement import Placer, place, place_uncached, rank_nodes, rendezvous_weight
from reconciler.model.desired import DesiredState, Placement, Requirement

LABELS = ({}, {"gpu": "h100"}, {"gpu": "a100"}, {"gpu": "h100", "zone": "z1"})
EXPRESSIONS = ((), (Requirement("zone", "NotIn", ("z1",)),), (Requirement("gpu", "Exists"),),
               (Requirement("zone", "DoesNotExist"), Requirement("gpu", "In", ("h100", "b200"))))


def random_state(rng: random.Random, n_nodes: int, n_datasets: int) -> DesiredState:
    nodes = [node(f"n{i}", i % 250 + 1, labels=dict(rng.choice(LABELS)),
                  capacity=rng.choice((None, None, 3000, 10_000)),
                  storage_group=rng.choice((None, None, None, "nfs-a", "nfs-b")),
                  cordoned=rng.random() < 0.15)
             for i in range(n_nodes)]
    datasets = []
    for i in range(n_datasets):
        selector = dict(rng.choice(LABELS))
        kind = rng.random()
        exprs = rng.choice(EXPRESSIONS)
        if kind < 0.5:
            p = Placement(replicas=rng.randint(0, 4), selector=selector, match_expressions=exprs)
        elif kind < 0.8:
            p = Placement(all=True, selector=selector, match_expressions=exprs)
        else:
            p = Placement(nodes=tuple(rng.sample([n.name for n in nodes] + ["ghost"],
                                                 min(2, n_nodes))))
        datasets.append(dataset(f"d{i}", p, size=rng.choice((0, 500, 2000)),
                                locked=rng.random() < 0.8,
                                priority=rng.choice(("low", "normal", "high", "critical")),
                                pinned_lock=rng.random() < 0.1))
        if rng.random() < 0.2:
            datasets[-1] = dataclasses.replace(datasets[-1], size=rng.choice((0, 700, 2500)))
    return state(nodes, datasets)


def edit(rng: random.Random, s: DesiredState) -> DesiredState:
    """One random change of what placement reads."""
    nodes, datasets = dict(s.nodes), dict(s.datasets)
    what = rng.randrange(9)
    if what == 0 and datasets:
        name = rng.choice(sorted(datasets))
        d = datasets[name]
        datasets[name] = dataclasses.replace(d, placement=dataclasses.replace(
            d.placement, selector=dict(rng.choice(LABELS))))
    elif what == 1 and nodes:
        name = rng.choice(sorted(nodes))
        nodes[name] = dataclasses.replace(nodes[name], labels=dict(rng.choice(LABELS)))
    elif what == 2 and nodes:
        del nodes[rng.choice(sorted(nodes))]
    elif what == 3:
        nodes[f"new{rng.randrange(1000)}"] = node("new", 7, labels=dict(rng.choice(LABELS)))
    elif what == 4 and datasets:
        name = rng.choice(sorted(datasets))
        datasets[name] = dataclasses.replace(datasets[name], priority=rng.choice(("low", "high")))
    elif what == 6 and nodes:
        name = rng.choice(sorted(nodes))
        nodes[name] = dataclasses.replace(nodes[name], cordoned=not nodes[name].cordoned)
    elif what == 7 and datasets:
        name = rng.choice(sorted(datasets))
        d = datasets[name]
        datasets[name] = dataclasses.replace(d, placement=dataclasses.replace(
            d.placement, match_expressions=rng.choice(EXPRESSIONS)))
    elif what == 8 and datasets:
        name = rng.choice(sorted(datasets))
        datasets[name] = dataclasses.replace(datasets[name], size=rng.choice((None, 0, 2500)))
    elif datasets:
        name = rng.choice(sorted(datasets))
        datasets[name] = dataclasses.replace(
            datasets[name], lock=dataclasses.replace(datasets[name].lock, total_bytes=9000)
            if datasets[name].lock else None)
    # `node("new", ...)` is named "new": keep the dict key and the name in step
    nodes = {k: (v if v.name == k else dataclasses.replace(v, name=k)) for k, v in nodes.items()}
    return dataclasses.replace(s, nodes=nodes, datasets=datasets)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 12), st.integers(0, 25))
def test_remembering_placer_equals_placing_from_scratch(seed: int, n_nodes: int,
                                                        n_datasets: int) -> None:
    rng = random.Random(seed)
    placer = Placer()
    s = random_state(rng, n_nodes, n_datasets)
    for _ in range(8):  # bounded: a few revisions in a row, some unchanged
        assert placer.place(s) == place_uncached(s)
        assert placer.place(s) == place_uncached(s)  # the remembered answer
        if rng.random() < 0.8:
            s = edit(rng, s)


def test_the_remembered_answer_is_a_copy() -> None:
    s = state([node("a", 1), node("b", 2)], [dataset("x", Placement(replicas=1))])
    first = place(s)
    first["x"] = None  # type: ignore[assignment]
    assert place(s)["x"] is not None


def test_an_equal_state_built_anew_hits_and_a_new_size_misses() -> None:
    placer = Placer()
    nodes = [node(f"n{i}", i, capacity=1500) for i in range(1, 4)]
    s1 = state(nodes, [dataset("x", Placement(replicas=3), size=1000),
                       dataset("y", Placement(replicas=3), size=1000)])
    s2 = state(list(nodes), [dataset("x", Placement(replicas=3), size=1000),
                             dataset("y", Placement(replicas=3), size=100)], revision="rev2")
    assert placer.place(s1) == place_uncached(s1)
    assert placer.place(s2) == place_uncached(s2) != place_uncached(s1)


def test_fast_ranking_is_the_rendezvous_order() -> None:
    names = [f"gpu-{i:03d}" for i in range(200)] + ["ünïcode", ""]
    want = sorted(names, key=lambda n: rendezvous_weight("llama/7b", n), reverse=True)
    assert rank_nodes("llama/7b", names) == want
