"""`python -m bench.plan --healthz`: how fast a real daemon's API answers while it runs a cold
pass over a fleet-sized state repo (issue 13's goal: within 1 s).

A daemon (`python -m reconciler`) is started on a generated repo whose addresses are all on
127.0.0.0/8 and whose datasets are suspended (nothing is fetched). After its first pass, every
file is rewritten with new dataset names, so the next pass parses, validates and places
everything again (no cache helps); `/healthz` is asked every 0.2 s meanwhile, and the
latencies of the answers given while a pass was running are reported.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.plan import generate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _passes(log: Path) -> tuple[int, int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count('"event": "pass started"'), text.count('"event": "pass finished"')


def _get(url: str, timeout: float) -> float | None:
    """Seconds until `url` answered 200, None if it did not."""
    t = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return time.monotonic() - t if r.status == 200 else None
    except OSError:
        return None


def healthz_during_cold_pass(datasets: int, nodes: int, files: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-plan-api-") as t:
        tmp = Path(t)
        root = tmp / "repo"
        generate(root, datasets, nodes, files, loopback=True, prefix="ds")
        api = f"127.0.0.1:{_free_port()}"
        cfg = tmp / "node.yaml"
        cfg.write_text(f"node: gpu-00000\ndesiredState: {root}\nstateDir: {tmp / 'state'}\n"
                       f"allowedRoots: [{tmp / 'data'}]\n"
                       f"listen: {{api: \"{api}\", peer: \"127.0.0.1:{_free_port()}\"}}\n")
        log = tmp / "daemon.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "reconciler", "--config", str(cfg)],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "SYNCBIT_LOG_LEVEL": "debug"},
                                    cwd=Path(__file__).resolve().parent.parent)
        try:
            deadline = time.monotonic() + 600
            while _passes(log)[1] < 1:  # bounded by the deadline
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(log.read_text()[-3000:], file=sys.stderr)
                    return 1
                time.sleep(0.5)
            url = f"http://{api}/healthz"
            while _get(url, 5) is None:  # bounded by the deadline
                if time.monotonic() > deadline:
                    return 1
                time.sleep(0.2)
            started_before = _passes(log)[0]
            generate(root, datasets, nodes, files, loopback=True, prefix="dt")  # all new
            during: list[float | None] = []
            quiet_since = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # bounded by the deadline
                started, finished = _passes(log)
                running = started > finished
                latency = _get(url, 30)
                started2, _ = _passes(log)
                if running or started2 > started:
                    during.append(latency)
                    quiet_since = None
                elif started > started_before:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 5:
                        break
                time.sleep(0.2)
            answered = [x for x in during if x is not None]
            if not answered:
                print("no probe fell inside a pass", file=sys.stderr)
                return 1
            within = sum(1 for x in answered if x <= 1.0)
            print(f"/healthz during the cold pass: {len(during)} probes, {len(answered)} "
                  f"answered, {within} within 1 s; median {statistics.median(answered):.3f} s, "
                  f"max {max(answered):.3f} s ({_passes(log)[0] - started_before} passes)")
            return 0
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
