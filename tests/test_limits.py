"""cache.limit, cache.minFree and a disk that fills, on a small tmpfs (needs root to mount)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, write_data)
from origin_server import OriginServer

MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MiB tmpfs, always unmounted."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)])


class SmallHome(NodeHome):
    """A node whose stateDir and allowed root are on the small filesystem; its config and
    logs are not (a log on a full disk is cut short)."""

    fs: Path = Path("/nonexistent")

    @property
    def state_dir(self) -> Path:
        return self.fs / "state"

    @property
    def data(self) -> Path:
        return self.fs / "data"

    def write_config(self) -> "SmallHome":
        self.extra = {**self.extra, "stateDir": str(self.state_dir),
                      "allowedRoots": [str(self.data)]}
        super().write_config()
        return self


def small_home(base: Path, fs: Path, repo: Path, extra: dict[str, object]) -> SmallHome:
    h = SmallHome("n1", base, repo, extra)
    h.fs = fs
    return h.write_config()


def _versions(home: NodeHome, name: str) -> set[str]:
    d = home.state_dir / "store" / name
    return {p.name for p in d.iterdir() if p.is_dir()} if d.is_dir() else set()


def test_cache_limit_evicts_the_least_recently_active_kept_version_and_refuses_what_cannot_fit(
        tmp_path, small_fs):
    files = {f"a{i}.bin": pseudo_random(4 * MiB, f"a{i}") for i in (1, 2, 3)}
    files["b.bin"] = pseudo_random(8 * MiB, "b")
    root = write_data(tmp_path / "origin", files)
    server = OriginServer(root).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["n1"]))
        home = small_home(tmp_path / "n1", small_fs, repo.root,
                          {"cache": {"limit": "10MiB", "minFree": 0}})
        hashes = []
        for i in (1, 2, 3):
            repo.write("a.yaml", dataset_yaml("a", http_source(server.url, [f"a{i}.bin"]),
                                              version=f"v{i}"))
            assert repo.lock().returncode == 0
            repo.commit(f"a v{i}")
            res = home.once()
            assert res.returncode == 0, res.stderr
            hashes.append(home.status()["datasets"]["a"]["infoHash"])
        # v3 needed room: v1 (kept, beyond nothing: keepVersions 1 keeps one) went, v2 stays.
        assert _versions(home, "a") == {hashes[1], hashes[2]}
        assert "evicted" in res.stderr
        assert tree_digest(home.data / "a") == {"a3.bin": tree_digest(root)["a3.bin"]}

        # b (8 MiB) cannot fit: 8 MiB held, 10 MiB limit, only v2 (4 MiB) may go.
        repo.write("b.yaml", dataset_yaml("b", http_source(server.url, ["b.bin"])))
        assert repo.lock("b").returncode == 0
        repo.commit("b")
        res = home.once()
        assert res.returncode == 1, res.stderr
        b = home.status()["datasets"]["b"]
        assert b["phase"] == "Failed"
        assert f"needs {8 * MiB} bytes" in b["error"] and f"can free {4 * MiB} bytes" in b["error"]
        # Nothing else was damaged: the active version is there, the kept one too.
        assert home.status()["datasets"]["a"]["phase"] == "Ready"
        assert _versions(home, "a") == {hashes[1], hashes[2]}
        assert tree_digest(home.data / "a") == {"a3.bin": tree_digest(root)["a3.bin"]}
    finally:
        server.stop()


def test_a_disk_that_fills_mid_download_fails_no_room_and_resumes_when_space_returns(
        tmp_path, small_fs):
    size = 8 * MiB
    root = write_data(tmp_path / "origin", {"big.bin": pseudo_random(size, "big")})
    server = OriginServer(root, rate=2 * MiB).start()
    filler = small_fs / "filler"
    try:
        repo = StateRepo.locked(tmp_path / "state", ["n1"], {
            "ds.yaml": dataset_yaml("big", http_source(server.url, ["big.bin"]))})
        locked = server.bytes_sent
        home = small_home(tmp_path / "n1", small_fs, repo.root, {"cache": {"minFree": 0}})
        proc = home.start_once(timeout=60)
        try:
            deadline = time.monotonic() + 60
            while server.bytes_sent - locked < 2 * MiB and time.monotonic() < deadline:
                time.sleep(0.1)
            # Another process fills the disk.
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (256 << 10))
                        f.flush()
                except OSError:
                    pass
            rc = proc.wait(90)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        out = (home.base / "once.log").read_text()
        assert rc == 1, out
        assert "Traceback" not in out, out
        st = json.loads(home.status_file.read_text())
        big = st["datasets"]["big"]
        assert big["phase"] == "Failed", (big, out[-4000:])
        assert "no space" in big["error"].lower() or "no room" in big["error"].lower(), big
        assert "No space left" in out or "no room" in out
        # One node alone reads the version directly (engine/direct_read.py): the full disk
        # fails that read first, then libtorrent's writes of what it goes on to fetch.
        assert '"direct": true' in out and "direct read failed" in out, out[-4000:]
        filler.unlink()
        res = home.once()
        assert res.returncode == 0, res.stderr
        assert tree_digest(home.data / "big") == {"big.bin": tree_digest(root)["big.bin"]}
    finally:
        filler.unlink(missing_ok=True)
        server.stop()


def test_min_free_refuses_a_download_that_would_leave_too_little_room(tmp_path, small_fs):
    root = write_data(tmp_path / "origin", {"big.bin": pseudo_random(8 * MiB, "big")})
    server = OriginServer(root).start()
    try:
        repo = StateRepo.locked(tmp_path / "state", ["n1"], {
            "ds.yaml": dataset_yaml("big", http_source(server.url, ["big.bin"]))})
        locked = server.bytes_sent
        home = small_home(tmp_path / "n1", small_fs, repo.root, {"cache": {"minFree": "60%"}})
        res = home.once()
        assert res.returncode == 1
        big = home.status()["datasets"]["big"]
        assert big["phase"] == "Failed" and "cache.minFree" in big["error"], big
        assert server.bytes_sent == locked  # nothing fetched
        home.extra = {"cache": {"minFree": "1MiB"}}
        home.write_config()
        assert home.once().returncode == 0
    finally:
        server.stop()
