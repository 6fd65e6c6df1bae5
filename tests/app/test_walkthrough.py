"""The README's walkthrough, run as written (`examples/walkthrough.sh`): an empty state repo to
a dataset Ready on three daemons. Bounded: `wait --timeout`, a deadline on the whole script, and
every process of its session stopped at the end whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "walkthrough.sh"
HOSTS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_walkthrough_script_runs_as_written(tmp_path: Path) -> None:
    env = dict(os.environ,
               WORK=str(tmp_path / "walk"),
               SYNCBIT=f"{sys.executable} -m reconciler",
               PYTHONPATH=str(ROOT),
               HOSTS=" ".join(HOSTS),
               PEER_PORTS=" ".join(str(free_port(h)) for h in HOSTS),
               API_PORTS=" ".join(str(free_port(h)) for h in HOSTS),
               TIMEOUT="120")
    env.pop("SYNCBIT_CONFIG", None)
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    leftover = True
    try:
        out, _ = proc.communicate(timeout=420)
        time.sleep(0.5)  # let the kernel reap what the script stopped
        leftover = _alive(proc.pid)  # the script has exited: anything left is a daemon
    finally:  # the daemons are in the script's session: none outlives the test
        if _alive(proc.pid):
            os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "walk").glob("node-*.log")))
    assert proc.returncode == 0, out + "\n--- logs ---\n" + logs
    for i in (1, 2, 3):
        assert f"tiny-corpus: Ready at {tmp_path}/walk/data-{i}/tiny-corpus (version 1)" in out
        assert f"node-{i}: identical" in out
        assert f"node-{i}.yaml: valid node config" in out
    assert "3/3 nodes reachable, 1/1 datasets Ready" in out
    assert "Traceback" not in out + logs
    assert not leftover, "a process of the walkthrough outlived it"
