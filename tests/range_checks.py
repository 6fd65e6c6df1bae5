"""Checks every `RangeReader` (adapters/sources/threaded.py) must pass, whatever its origin."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from reconciler.adapters.sources import OriginError
from reconciler.adapters.sources.threaded import Reading, Stopped

Read = Callable[[Callable[[memoryview], None], Reading], None]


def check_stop_and_disk_error(read: Read) -> list[int]:
    """`read(into, reading)` reads a range of several buffers: a `stop()` in the first `into`
    ends it with Stopped before a second buffer, and an OSError of `into` (the disk's) comes
    out as itself, not as the origin's error. Returns the sizes `into` saw before the stop."""
    reading = Reading()
    seen: list[int] = []

    def stop_after_first(view: memoryview) -> None:
        seen.append(len(view))
        reading.stop()

    with pytest.raises(Stopped):
        read(stop_after_first, reading)
    assert len(seen) == 1

    def full(view: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space") as e:
        read(full, Reading())
    assert not isinstance(e.value, OriginError)
    return seen
