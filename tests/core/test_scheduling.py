"""The scheduling rule (core/scheduling.py) and how a pass applies it (core/transfer.py)."""

from __future__ import annotations

from factories import dataset, node, state
from reconciler.core import transfer as tr
from reconciler.core.plan import make_plan
from reconciler.core.scheduling import (MIN_RATE, Candidate, Pause, Resume, Running, choose_active,
                                        rate_caps)
from reconciler.core.transfer import Stage, decide_pass
from reconciler.model.ids import DatasetName, InfoHash


def ih(i: int) -> InfoHash:
    return InfoHash(f"{i:064x}")


def c(i: int, prio: str, running: bool = False) -> Candidate:
    return Candidate(ih(i), DatasetName(f"d{i:02d}"), prio, running)


def test_at_most_max_active_run_in_priority_then_name_order():
    s = choose_active([c(3, "low"), c(1, "low"), c(2, "high"), c(4, "normal")], 2)
    assert s.active == (ih(2), ih(4))
    assert set(s.waiting) == {ih(1), ih(3)}
    assert s.waiting[ih(1)] == "queued: 2 downloads active (maxActiveDownloads 2)"


def test_no_cap_runs_everything():
    assert len(choose_active([c(i, "low") for i in range(10)], 0).active) == 10


def test_a_critical_download_preempts_the_lowest_running_one():
    running = [c(i, "low", running=True) for i in range(10)]
    s = choose_active([*running, c(99, "critical")], 10)
    assert s.active[0] == ih(99) and len(s.active) == 10
    assert list(s.waiting) == [ih(9)]  # the last low by name is paused
    assert s.waiting[ih(9)].startswith("paused:")


def test_running_downloads_keep_their_slot_against_waiting_ones_of_the_same_priority():
    s = choose_active([c(5, "normal", running=True), c(1, "normal")], 1)
    assert s.active == (ih(5),) and s.waiting[ih(1)].startswith("queued:")


def test_rate_caps_share_a_limit_by_weight_and_never_cap_the_top_priority():
    caps = rate_caps([Running(ih(1), "critical", MIN_RATE), Running(ih(2), "low", 0),
                      Running(ih(3), "normal", 0)], 11 * 1024 * 1024)
    assert caps[ih(1)] == 0
    assert caps[ih(2)] == 1024 * 1024 and caps[ih(3)] == 2 * 1024 * 1024
    # the critical one is not receiving yet: nothing is capped (work-conserving)
    assert set(rate_caps([Running(ih(1), "critical", 0), Running(ih(2), "low", 0)],
                         1 << 20).values()) == {0}


def test_equal_priorities_are_never_capped():
    assert rate_caps([Running(ih(1), "low", 5), Running(ih(2), "low", 5)], 1000) == \
        {ih(1): 0, ih(2): 0}


def test_without_a_limit_the_measured_total_is_shared_by_weight():
    mib = 1024 * 1024
    caps = rate_caps([Running(ih(1), "critical", 8 * mib), Running(ih(2), "low", mib)], 0)
    assert caps == {ih(1): 0, ih(2): mib}
    # the top is idle (waiting for peers): nobody is capped
    assert rate_caps([Running(ih(1), "critical", 0), Running(ih(2), "low", mib)], 0) == \
        {ih(1): 0, ih(2): 0}
    # a cap never goes below the floor
    assert rate_caps([Running(ih(1), "high", MIN_RATE), Running(ih(2), "low", 0)], 0)[ih(2)] \
        == MIN_RATE


# -- through a pass ---------------------------------------------------------------------------


def _state(prios: dict[str, str]):  # type: ignore[no-untyped-def]
    ds = [dataset(n, ih=f"{i + 1:064x}", priority=p) for i, (n, p) in enumerate(prios.items())]
    return state([node("n1")], ds)


def test_a_pass_starts_only_max_active_and_the_rest_wait_with_a_reason():
    s = _state({"a": "low", "b": "low", "c": "low", "z": "critical"})
    plan = make_plan(s, "n1", ["/data"], {})
    d = decide_pass(plan, {}, {}, 600, 0.0, max_active=2)
    started = [e.target.name for e in d.effects if isinstance(e, tr.StartJob)]
    assert started == ["z", "a"]
    row = d.rows[DatasetName("c")]
    assert row.phase == "Pending" and row.error == "queued: 2 downloads active (maxActiveDownloads 2)"
    assert set(d.wanted) == {ih(1), ih(2), ih(3), ih(4)}


def test_a_critical_commit_pauses_a_running_low_first_and_resumes_it_later():
    s = _state({"a": "low", "b": "low", "z": "critical"})
    plan = make_plan(s, "n1", ["/data"], {})
    jobs = {ih(1): Stage.FETCHING, ih(2): Stage.FETCHING}
    d = decide_pass(plan, {}, jobs, 600, 0.0, max_active=2)
    assert d.effects[0] == Pause(ih(2), d.effects[0].reason)  # type: ignore[union-attr]
    assert [e.target.name for e in d.effects if isinstance(e, tr.StartJob)] == ["z"]
    assert d.rows[DatasetName("b")].keep  # in the session, with its pieces
    # z is verifying now: it no longer takes a slot, b resumes
    jobs = {ih(1): Stage.FETCHING, ih(2): Stage.FETCHING, ih(3): Stage.VERIFYING}
    d = decide_pass(plan, {}, jobs, 600, 0.0, max_active=2, paused=frozenset({ih(2)}))
    assert Resume(ih(2)) in d.effects
    assert not any(isinstance(e, (Pause, tr.StartJob)) for e in d.effects)


def test_a_failed_download_is_retried_after_those_never_tried_and_shows_its_failure():
    s = _state({"a": "high", "b": "low", "c": "low"})
    plan = make_plan(s, "n1", ["/data"], {})
    d = decide_pass(plan, {}, {ih(1): Stage.FAILED}, 600, 0.0, max_active=1)
    assert [e.target.name for e in d.effects if isinstance(e, tr.StartJob)] == ["b"]
    assert not any(isinstance(e, tr.DropJob) for e in d.effects)
    row = d.rows[DatasetName("a")]
    assert row.phase == "Failed" and row.keep  # the status keeps its error
    d = decide_pass(plan, {}, {ih(1): Stage.FAILED}, 600, 0.0, max_active=3)
    assert tr.DropJob(ih(1)) in d.effects  # a free slot: retried


def test_a_suspended_download_in_flight_is_no_longer_wanted_and_nothing_is_evicted():
    """The shell drops an unwanted torrent from the session; its partial data stays in
    staging, since a suspended dataset's plan evicts nothing."""
    s = state([node("n1")], [dataset("x", ih=f"{1:064x}", suspend=True)])
    from reconciler.model.observed import ObservedDataset, ObservedVersion
    observed = {"x": ObservedDataset("x", {ih(1): ObservedVersion(ih(1), "v1", False, 1000)},
                                     None, None, None)}
    d = decide_pass(make_plan(s, "n1", ["/data"], observed), observed,
                    {ih(1): Stage.FETCHING}, 600, 0.0, max_active=2)
    assert d.rows[DatasetName("x")].phase == "Suspended"
    assert d.wanted == {}
    assert not any(isinstance(e, (tr.Evict, tr.StartJob, Resume)) for e in d.effects)
