"""One process per stateDir: the lock names its holder and dies with it, even by kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.state_lock import StateDirBusy, StateDirLock

HOLD = ("import sys, time; from pathlib import Path; "
        "from reconciler.adapters.state_lock import StateDirLock; "
        "StateDirLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)")


def hold(state_dir: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(state_dir)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    p = hold(tmp_path / "state")
    try:
        with pytest.raises(StateDirBusy, match=f"PID {p.pid}"):
            StateDirLock(tmp_path / "state").acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    # The kernel dropped the lock with its holder: no stale lock after kill -9.
    with StateDirLock(tmp_path / "state") as lock:
        assert lock.path.read_text().strip().isdigit()


def test_release_lets_the_next_process_in(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path).acquire()
    first.release()
    StateDirLock(tmp_path).acquire().release()
