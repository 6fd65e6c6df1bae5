"""Pausing Python's cyclic garbage collector during the allocation-heavy steps of a pass.

A cold pass over 10,000 datasets x 1,000 nodes (issue 13) builds about a million containers
and millions of short-lived hash objects; every 700 allocations start a collection, and every
so often one walks the whole heap: measured 1.2-1.5 s of a 4.1-4.5 s pass, for nothing, since
documents, the model and placement's rankings hold no reference cycles (reference counting
frees them). The pause is process-wide and only a hint: whoever paused a running collector
turns it back on (concurrent pauses may end one another's early, which costs only time), and
a collector that was off stays off.

Turning it back on, everything the process holds is moved to the oldest generation first
(`gc.freeze()` then `gc.unfreeze()`: two list splices, no walk). Otherwise the first young
collection after the pause walked every object built inside it: 0.22-0.30 s of a 2.6-3.3 s
cold pass, holding the GIL, on whichever thread allocated next (the event loop's, often).
Full collections still come by CPython's own rule, and find any cycle, however old.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside, unless another pause running meanwhile ended."""
    resume = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if resume:
            gc.freeze()  # what was built inside goes to the oldest generation (two list
            gc.unfreeze()  # splices), so the next young collection does not walk it all
            gc.enable()
