"""`priority`, `maxActiveDownloads` and `suspend` end to end: a real daemon and libtorrent
session, a real throttled HTTP origin, the real store. Orders only, never durations."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     until, write_data)
from origin_server import OriginServer

LOWS = ["low-a", "low-b", "low-c", "low-d"]
SIZE = 4 << 20


@pytest.fixture
def throttled(tmp_path):
    files = {f"{n}/blob.bin": pseudo_random(SIZE, n) for n in [*LOWS, "crit"]}
    root = write_data(tmp_path / "origin", files)
    server = OriginServer(root, rate=2 << 20).start()
    yield server
    server.stop()


def _ds(server: OriginServer, name: str, priority: str, extra: str = "") -> str:
    return dataset_yaml(name, http_source(f"{server.url}/{name}", ["blob.bin"]),
                        path=f"ds/{name}", extra=f"  priority: {priority}\n{extra}")


def _lock_aside(repo: StateRepo, stage: Path, file: str, text: str) -> None:
    """Lock a new dataset in a copy of the repo (the daemon reads the work tree, which must
    never show the dataset without its lock); `_commit_aside` adds it later in one go."""
    shutil.copytree(repo.root, stage, ignore=shutil.ignore_patterns(".git"))
    copy = StateRepo(stage)
    copy.write(file, text)
    assert copy.lock().returncode == 0


def _commit_aside(repo: StateRepo, stage: Path, file: str) -> str:
    shutil.copytree(stage / "locks", repo.root / "locks", dirs_exist_ok=True)
    shutil.copy(stage / file, repo.root / file)
    return repo.commit(f"add {file}")


def _activated(log: str) -> list[str]:
    """Datasets in the order of their `activated` log lines."""
    out = []
    for line in log.splitlines():
        if '"activated"' in line or "activated " in line:
            m = re.search(r'"dataset": "([^"]+)"', line) or re.search(r"dataset=(\S+)", line)
            if m and m.group(1) not in out:
                out.append(m.group(1))
    return out


def test_a_critical_commit_preempts_low_downloads_and_completes_first(tmp_path, throttled,
                                                                      daemons):
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    repo.write("ds.yaml", "---\n".join(_ds(throttled, n, "low") for n in LOWS))
    assert repo.lock().returncode == 0
    repo.commit("four low datasets")
    _lock_aside(repo, tmp_path / "stage", "crit.yaml", _ds(throttled, "crit", "critical"))
    throttled.bytes_sent = 0  # count only what the node fetches
    home = NodeHome("n1", tmp_path / "n1", repo.root, {"maxActiveDownloads": 2}).write_config()
    d = daemons(home)

    def two_fetching_two_queued() -> bool:
        try:
            ds = home.status()["datasets"]
        except (OSError, ValueError):
            return False
        assert d.proc.poll() is None, d.logs()
        fetching = [n for n in LOWS if ds.get(n, {}).get("phase") == "Fetching"]
        queued = [n for n in LOWS if ds.get(n, {}).get("phase") == "Pending"
                  and (ds[n].get("error") or "").startswith("queued: 2 downloads active")]
        return len(fetching) == 2 and len(queued) == 2

    until(two_fetching_two_queued, 60, "two lows fetching, two queued")
    rev = _commit_aside(repo, tmp_path / "stage", "crit.yaml")
    for n in ["crit", *LOWS]:
        d.wait_phase(n, "Ready", rev, timeout=120)
    logs = d.logs()
    order = _activated(logs)
    # low-b was paused for crit, low-c and low-d were queued: all three finish after crit
    # (low-a kept its slot with a 1/8 share and may finish before or after it).
    assert all(order.index("crit") < order.index(n) for n in ["low-b", "low-c", "low-d"]), order
    assert "paused" in logs and "resumed" in logs, logs[-3000:]
    # A paused download resumed without fetching its verified pieces again.
    assert throttled.bytes_sent <= 5 * SIZE * 1.15 + (1 << 20), throttled.bytes_sent
    doc = home.status()
    assert all(doc["datasets"][n]["bytesDone"] == SIZE for n in ["crit", *LOWS])
    print(json.dumps({"activated": order, "origin_bytes": throttled.bytes_sent}))


def test_suspend_stops_a_download_keeps_its_partial_data_and_resumes_without_refetching(
        tmp_path, daemons):
    size = 8 << 20
    root = write_data(tmp_path / "origin", {"big/blob.bin": pseudo_random(size, "big")})
    server = OriginServer(root, rate=1 << 20).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["n1"]))
        text = _ds(server, "big", "normal")
        repo.write("ds.yaml", text)
        assert repo.lock().returncode == 0
        repo.commit("big")
        server.bytes_sent = 0
        home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
        d = daemons(home)

        d.wait_partly_fetched("big", size)
        assert '"direct": true' in d.logs()  # the only download: read directly, then stopped
        locked = (repo.root / "ds.yaml").read_text()
        repo.write("ds.yaml", locked + "  suspend: true\n")
        rev = repo.commit("suspend big")
        doc = d.wait_phase("big", "Suspended", rev)
        sent = server.bytes_sent
        assert 0 < sent < size
        staged = list((home.state_dir / "staging" / "big").glob("*/big/blob.bin"))
        assert len(staged) == 1 and staged[0].stat().st_size > 0  # partial data kept
        assert not (home.data / "ds" / "big").exists()  # nothing activated
        assert doc["datasets"]["big"]["phase"] == "Suspended"
        # Still Suspended on the next passes: nothing fetched, nothing evicted.
        repo.write("other.txt", "a change that triggers a pass\n")
        rev = repo.commit("another pass")
        doc = d.wait_phase("big", "Suspended", rev)
        assert staged[0].exists()
        repo.write("ds.yaml", locked)
        rev = repo.commit("resume big")
        d.wait_phase("big", "Ready", rev, timeout=90)
        # What was verified before the suspension was not fetched again (pieces in flight
        # at the stop may repeat).
        assert server.bytes_sent <= size + sent // 2 + (1 << 20), (server.bytes_sent, sent)
        print(json.dumps({"before_suspend": sent, "total": server.bytes_sent}))
    finally:
        server.stop()


def test_once_with_a_download_limit_starts_critical_first_and_it_completes_first(tmp_path,
                                                                                 throttled):
    """All declared together, `--once`, `bandwidth.download` set: the critical dataset and the
    first low start, the critical one gets 8/9 of the limit and is activated first; the other
    lows wait (queued) and follow in name order."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    repo.write("ds.yaml", "---\n".join([*(_ds(throttled, n, "low") for n in LOWS),
                                        _ds(throttled, "crit", "critical")]))
    assert repo.lock().returncode == 0
    repo.commit()
    throttled.bytes_sent = 0
    home = NodeHome("n1", tmp_path / "n1", repo.root,
                    {"maxActiveDownloads": 2, "bandwidth": {"download": "3MiB"}}).write_config()
    proc = home.start_once(timeout=150)
    try:
        assert proc.wait(170) == 0, (home.base / "once.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = (home.base / "once.log").read_text()
    order = _activated(log)
    assert order[0] == "crit", order
    assert order[1:] == LOWS, order  # queued lows start in name order as slots free
    fetching = [json.loads(line)["dataset"] for line in log.splitlines()
                if line.startswith("{") and json.loads(line).get("event") == "fetching"]
    assert fetching[:2] == ["crit", "low-a"], fetching
    assert 5 * SIZE <= throttled.bytes_sent <= 5 * SIZE + (1 << 20)
    print(json.dumps({"activated": order, "started": fetching}))
