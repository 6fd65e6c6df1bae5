"""Named points where a test can have the process SIGKILL itself (`SYNCBIT_TEST_CRASH_AT`).

A real `kill -9`, at a moment a test cannot otherwise hit reliably (between two renames of an
activation, in the middle of an eviction). Unset in production: one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys


def crash_point(name: str) -> None:
    if os.environ.get("SYNCBIT_TEST_CRASH_AT") != name:
        return
    sys.stderr.write(f'{{"event": "crash point", "point": "{name}"}}\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
