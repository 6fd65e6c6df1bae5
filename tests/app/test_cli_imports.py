"""`syncbit-reconcile validate` runs in CI of state repos: it must not load the node's heavy stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import reconciler

ROOT = Path(reconciler.__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "desired-state"
HEAVY = ("libtorrent", "aiohttp", "boto3", "huggingface_hub", "prometheus_client")


def imported_modules(*args: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, not an installed copy
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "reconciler", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", proc.stderr, re.M)}


def test_validate_loads_no_libtorrent_nor_aiohttp() -> None:
    modules = imported_modules("validate", str(EXAMPLE))
    assert "reconciler.desired.validate" in modules  # the parse of -X importtime works
    assert "reconciler.core.lockfile" in modules
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == []


def test_plan_loads_no_libtorrent_nor_aiohttp(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"node: node-a\ndesiredState: {EXAMPLE}\nstateDir: {tmp_path / 'state'}\n"
                   f"allowedRoots: [{tmp_path / 'data'}]\n")
    modules = imported_modules("plan", "--config", str(cfg))
    assert "reconciler.core.plan" in modules
    loaded = sorted(m for m in modules if m.split(".")[0] in ("libtorrent", "aiohttp", "boto3",
                                                               "huggingface_hub"))
    assert loaded == []
