"""kill -9 at every stage of a version's life, then a restart: nothing verified is fetched
again, leftovers are cleaned, and spec.path never points at incomplete data."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, pseudo_random,
                     tree_digest, write_data)
from origin_server import OriginServer

MiB = 1 << 20
SIZE = 6 * MiB
SLACK = 1 * MiB  # what was in flight at the kill: one web-seed request (urlseed_max_request_bytes)


def _link_is_complete(home: NodeHome, name: str) -> None:
    """spec.path is absent, or a symlink into a version whose metadata says complete."""
    link = home.data / name
    if not link.is_symlink():
        assert not link.exists()
        return
    target = Path(os.readlink(link))
    version_dir = target.parent
    meta = json.loads((version_dir.parent / f"{version_dir.name}.json").read_text())
    assert meta["complete"] is True


def _saved_totals(home: NodeHome) -> int:
    for meta in (home.state_dir / "staging" / "d").glob("*.json"):
        try:
            return int(json.loads(meta.read_text()).get("bytesFromOrigin", 0))
        except ValueError:
            return 0
    return 0


def _no_orphans(home: NodeHome) -> None:
    left = [str(p) for p in home.state_dir.rglob(".*")
            if p.name.endswith(".tmp") or p.name.startswith(".build-")]
    assert left == []


@pytest.fixture
def world(tmp_path):
    # a.bin completes early (file_completed_alert: resume data and byte totals are saved)
    files = {"a.bin": pseudo_random(1 * MiB, "a"), "b.bin": pseudo_random(SIZE - MiB, "b")}
    root = write_data(tmp_path / "origin", files)
    server = OriginServer(root, rate=2 * MiB).start()
    try:
        repo = StateRepo.locked(tmp_path / "state", ["n1"], {"ds.yaml": dataset_yaml(
            "d", http_source(server.url, sorted(files)), extra="  keepVersions: 0\n")})
        home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
        yield root, server, repo, home
    finally:
        server.stop()


def _run_until_killed(home: NodeHome, point: str | None, server: OriginServer, start: int) -> str:
    env = {"SYNCBIT_TEST_CRASH_AT": point} if point else None
    proc = home.start_once(timeout=60, env=env)
    try:
        if point is None:  # during the download: kill once a third has arrived and the
            # byte totals were saved (when a.bin completed)
            deadline = time.monotonic() + 60
            while (server.bytes_sent - start < SIZE // 3 or not _saved_totals(home)) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    out = (home.base / "once.log").read_text()
    assert rc == -signal.SIGKILL, out[-3000:]
    return out


@pytest.mark.parametrize("point", [None, "verifying", "moving", "completing", "activating"])
def test_killed_at_any_point_of_a_download_resumes_without_refetching(world, point):
    root, server, repo, home = world
    start = server.bytes_sent
    out = _run_until_killed(home, point, server, start)
    if point is not None:
        assert f'"point": "{point}"' in out
    else:  # the only target reads the source directly, each chunk written as it arrives
        assert '"direct": true' in out, out[-3000:]
    first = server.bytes_sent - start
    saved = _saved_totals(home)
    _link_is_complete(home, "d")
    res = home.once()
    assert res.returncode == 0, res.stderr
    again = server.bytes_sent - start - first
    print(f"point={point} first={first} restart={again} size={SIZE}")
    if point is None:
        assert first + again <= SIZE + SLACK, (first, again)
    else:
        assert again <= SLACK, (first, again)  # everything was on disk, verified
    assert tree_digest(home.data / "d") == tree_digest(root)
    _no_orphans(home)
    st = home.status()["datasets"]["d"]
    assert st["phase"] == "Ready"
    if point is None:  # the totals survived the kill: what was saved, plus the restart's
        assert 0 < saved <= first
        assert st["bytesFromOrigin"] >= saved + again - SLACK, (st, saved, again)
        assert st["bytesFromOrigin"] <= first + again, (st, first, again)


def test_killed_during_an_eviction_finishes_it_on_restart(world):
    root, server, repo, home = world
    assert home.once().returncode == 0
    old = home.status()["datasets"]["d"]["infoHash"]
    v2 = write_data(root.parent / "origin2", {"big.bin": pseudo_random(SIZE, "v2")})
    server.root = v2
    repo.write("ds.yaml", dataset_yaml("d", http_source(server.url, ["big.bin"]), version="v2",
                                       extra="  keepVersions: 0\n"))
    assert repo.lock().returncode == 0
    repo.commit("v2")
    out = _run_until_killed(home, "evicting", server, server.bytes_sent)
    assert '"point": "evicting"' in out
    _link_is_complete(home, "d")
    before = server.bytes_sent
    res = home.once()
    assert res.returncode == 0, res.stderr
    assert server.bytes_sent - before <= SLACK
    assert not (home.state_dir / "store" / "d" / old).exists()
    assert tree_digest(home.data / "d") == tree_digest(v2)
    _no_orphans(home)


def test_a_file_changed_in_staging_during_a_clean_stop_is_read_back_and_fetched_again(tmp_path):
    """After a clean stop libtorrent trusts its resume data and hashes nothing on disk, so the
    finished download's verification reads back the files it had then (core/transfer.py
    `unhashed_files`): one changed in place meanwhile (same size, same mtime) is caught,
    re-checked and fetched again, never activated."""
    files = {"a.bin": pseudo_random(1 * MiB, "a"), "b.bin": pseudo_random(5 * MiB, "b")}
    root = write_data(tmp_path / "origin", files)
    server = OriginServer(root).start()
    try:
        repo = StateRepo.locked(tmp_path / "state", ["n1"], {"ds.yaml": dataset_yaml(
            "d", http_source(server.url, sorted(files)), extra="  keepVersions: 0\n")})
        home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
        # b.bin gone from the origin: the first run gets a.bin only, and cannot finish
        (root / "b.bin").rename(tmp_path / "b.bin.away")
        # SIGINT: the run is cancelled and closes the session cleanly (resume data saved,
        # the clean-stop mark written), once a.bin is complete in staging
        proc = home.start_once(timeout=60)
        a: Path | None = None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                found = list((home.state_dir / "staging" / "d").glob("*/d/a.bin"))
                if found and found[0].read_bytes() == files["a.bin"]:
                    a = found[0]
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log = (home.base / "once.log").read_text()
        assert a is not None, log[-3000:]
        assert (home.state_dir / "resume" / "clean-stop").exists(), log[-3000:]
        assert home.status()["datasets"]["d"]["phase"] != "Ready"
        assert list((home.state_dir / "resume").glob("*.resume")), log[-3000:]
        (tmp_path / "b.bin.away").rename(root / "b.bin")
        st = a.stat()
        data = bytearray(a.read_bytes())
        data[4321] ^= 0xFF
        a.write_bytes(bytes(data))
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
        res = home.once(timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        out = res.stdout + res.stderr
        assert '"read_back": 1' in out or '"read_back": 2' in out, out[-3000:]
        assert "verification found bad files" in out, out[-3000:]
        assert tree_digest(home.data / "d") == tree_digest(root)
        assert home.status()["datasets"]["d"]["phase"] == "Ready"
    finally:
        server.stop()
