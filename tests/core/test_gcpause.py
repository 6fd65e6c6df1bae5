"""core.gcpause: no collection inside, and what was built there is not walked by the young
collections after it, yet is still collected in full when it is garbage."""

from __future__ import annotations

import gc
import weakref

from reconciler.core.gcpause import gc_paused


class Cell:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_objects_built_in_a_pause_skip_the_young_generations() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        built = [{"i": i} for i in range(50_000)]
    assert gc.isenabled()
    young = {id(o) for g in (0, 1) for o in gc.get_objects(generation=g)}
    assert not any(id(d) in young for d in built)
    assert gc.get_count()[0] < 50_000


def test_a_cycle_built_in_a_pause_is_still_collected() -> None:
    with gc_paused():
        cell = Cell()
    gone = weakref.ref(cell)
    del cell
    gc.collect()
    assert gone() is None


def test_a_collector_that_was_off_stays_off_and_pauses_nest() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with gc_paused():
        with gc_paused():
            pass
        assert not gc.isenabled()  # the inner pause did not resume what it did not pause
    assert gc.isenabled()
