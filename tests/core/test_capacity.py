"""cache.limit and cache.minFree: which versions go to make room, and refusing what cannot fit."""

from __future__ import annotations

from factories import dataset, node, state
from reconciler.core import capacity as cap
from reconciler.core import transfer as tr
from reconciler.core.plan import make_plan
from reconciler.core.transfer import decide_pass
from reconciler.model.desired import Placement
from reconciler.model.ids import DatasetName, InfoHash
from reconciler.model.observed import ObservedDataset, ObservedVersion

A, B, C, NEW = (InfoHash(c * 64) for c in "abcd")
MiB = 1 << 20


def v(ih: str, version: str, at: float) -> ObservedVersion:
    return ObservedVersion(ih, version, True, 10 * MiB, at)


def setup(keep: int = 3):
    """x: active v3 (C), kept v1 (A, completed first) and v2 (B); v4 (NEW) is desired."""
    s = state([node("n1")], [dataset("x", ih=NEW, version="v4", size=10 * MiB,
                                     keep_versions=keep)])
    observed = {"x": ObservedDataset("x", {A: v(A, "v1", 1.0), B: v(B, "v2", 2.0),
                                           C: v(C, "v3", 3.0)}, C, "/data/ds/x")}
    plan = make_plan(s, "n1", ["/data"], observed)
    return plan, observed


def sizes() -> dict[tuple[str, str], int]:
    return {("x", A): 10 * MiB, ("x", B): 10 * MiB, ("x", C): 10 * MiB}


def test_it_fits_so_nothing_is_evicted():
    plan, observed = setup()
    d = decide_pass(plan, observed, {}, 600, 0.0)
    pool = cap.candidates(plan, observed, sizes(), {}, frozenset(), 10.0)
    out = cap.admit(d, cap.Room(30 * MiB, 1 << 40, 100 * MiB, 0), pool, {NEW: 10 * MiB})
    assert out.effects == d.effects


def test_the_least_recently_active_kept_version_goes_first_never_the_active_one():
    plan, observed = setup()
    d = decide_pass(plan, observed, {}, 600, 0.0)
    pool = cap.candidates(plan, observed, sizes(), {("x", A): 50.0, ("x", B): 20.0},
                          frozenset(), 100.0)
    assert {c.info_hash for c in pool} == {A, B}  # not C (active), not NEW (desired)
    out = cap.admit(d, cap.Room(30 * MiB, 1 << 40, 35 * MiB, 0), pool, {NEW: 10 * MiB})
    evicted = [e.info_hash for e in out.effects if isinstance(e, tr.Evict)]
    assert evicted == [B]  # B was active longer ago than A
    kinds = [type(e).__name__ for e in out.effects]
    assert kinds.index("Evict") < kinds.index("StartJob")


def test_a_dataset_that_cannot_fit_fails_with_the_numbers_and_nothing_is_evicted():
    plan, observed = setup()
    d = decide_pass(plan, observed, {}, 600, 0.0)
    pool = cap.candidates(plan, observed, sizes(), {}, frozenset(), 100.0)
    out = cap.admit(d, cap.Room(30 * MiB, 1 << 40, 15 * MiB, 0), pool, {NEW: 10 * MiB})
    row = out.rows[DatasetName("x")]
    assert row.phase == "Failed"
    assert f"needs {10 * MiB} bytes" in (row.error or "")
    assert f"can free {20 * MiB} bytes" in (row.error or "")
    assert not any(isinstance(e, (tr.Evict, tr.StartJob)) for e in out.effects)
    assert NEW not in out.wanted


def test_min_free_counts_like_the_limit():
    assert cap.shortfall(cap.Room(0, 100, None, 10), 95) == 5
    assert cap.shortfall(cap.Room(0, 100, None, 10), 90) == 0
    assert cap.shortfall(cap.Room(50, 1000, 60, 0), 20) == 10
    assert cap.running_short(9, 10) is not None and cap.running_short(10, 10) is None
    assert cap.min_free_bytes(0.05, 1000) == 50 and cap.min_free_bytes(7, 1000) == 7


def test_an_unplaced_dataset_goes_under_pressure_only_after_its_grace_period():
    s = state([node("n1", 1), node("n2", 2)],
              [dataset("y", Placement(nodes=("n2",)), ih=A),
               dataset("x", Placement(nodes=("n1",)), ih=NEW, size=10 * MiB)])
    observed = {"y": ObservedDataset("y", {A: v(A, "v1", 1.0)}, A, "/data/ds/y", 50.0)}
    plan = make_plan(s, "n1", ["/data"], observed)
    d = decide_pass(plan, observed, {}, 600, 60.0)
    assert cap.candidates(plan, observed, {("y", A): 10 * MiB}, {}, frozenset(), 60.0,
                          grace_period=600) == []  # still draining: not a candidate
    pool = cap.candidates(plan, observed, {("y", A): 10 * MiB}, {}, frozenset(), 60.0)
    assert [(c.dataset, c.last_active) for c in pool] == [("y", 50.0)]
    out = cap.admit(d, cap.Room(10 * MiB, 1 << 40, 15 * MiB, 0), pool, {NEW: 10 * MiB})
    assert [e.info_hash for e in out.effects if isinstance(e, tr.Evict)] == [A]
    assert A not in out.wanted


def test_what_the_pass_evicts_anyway_counts_as_freed():
    plan, observed = setup(keep=2)  # A is beyond keepVersions: the pass evicts it
    d = decide_pass(plan, observed, {}, 600, 0.0)
    assert [e.info_hash for e in d.effects if isinstance(e, tr.Evict)] == [A]
    pool = cap.candidates(plan, observed, sizes(), {}, frozenset(), 100.0)
    out = cap.admit(d, cap.Room(30 * MiB, 1 << 40, 30 * MiB, 0), pool, {NEW: 10 * MiB})
    assert [e.info_hash for e in out.effects if isinstance(e, tr.Evict)] == [A]
    assert any(isinstance(e, tr.StartJob) for e in out.effects)
