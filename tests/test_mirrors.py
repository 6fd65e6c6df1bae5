"""`mirrors`: more origins of the same bytes. Real HTTP origins, a real state repo, the real CLI
(`--once`) with its libtorrent session and web-seed gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, write_data)
from origin_server import OriginServer

BIG = "weights/model-00001.safetensors"
FILES = {BIG: pseudo_random(12 << 20, "m1"),
         "weights/model-00002.safetensors": pseudo_random(333_333, "m2"),
         "config.json": b'{"hidden": 64}\n'}
SIZE = sum(map(len, FILES.values()))


def weights_yaml(primary: str, mirror: str, data: Path) -> str:
    return dataset_yaml("llm-weights", http_source(primary, FILES),
                        mirrors=[http_source(mirror, FILES)], path=f"{data}/models/llm")


@pytest.fixture
def setup(tmp_path):
    primary = OriginServer(write_data(tmp_path / "primary", FILES)).start()
    mirror = OriginServer(write_data(tmp_path / "mirror", FILES)).start()
    running = [primary, mirror]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
    repo.write("datasets.yaml", weights_yaml(primary.url, mirror.url, home.data))
    res = repo.lock()
    assert res.returncode == 0, res.stderr
    repo.commit("initial")
    primary.bytes_sent = mirror.bytes_sent = 0

    def stop(server: OriginServer) -> None:
        server.stop()
        running.remove(server)

    yield home, primary, mirror, stop
    for s in running:
        s.stop()


def test_primary_down_mirror_serves_everything(setup):
    home, primary, mirror, stop = setup
    stop(primary)
    res = home.once(timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    llm = home.data / "models" / "llm"
    assert llm.is_symlink()
    assert tree_digest(llm) == tree_digest(mirror.root)
    d = home.status()["datasets"]["llm-weights"]
    assert d["phase"] == "Ready"
    assert mirror.bytes_sent == SIZE == d["bytesFromOrigin"]


def test_primary_404_for_every_file_mirror_serves_everything(setup):
    home, primary, mirror, _ = setup
    for f in FILES:
        (primary.root / f).unlink()
    res = home.once(timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert tree_digest(home.data / "models" / "llm") == tree_digest(mirror.root)
    assert primary.bytes_sent == 0
    assert mirror.bytes_sent == SIZE


def test_primary_serving_wrong_bytes_is_marked_bad_and_the_mirror_corrects(setup):
    home, primary, mirror, _ = setup
    bad = bytearray(FILES[BIG])
    for i in range(0, len(bad), 16 << 10):  # every block of the file differs, same size
        bad[i] ^= 0xFF
    (primary.root / BIG).write_bytes(bytes(bad))
    res = home.once(timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    llm = home.data / "models" / "llm"
    assert tree_digest(llm) == tree_digest(mirror.root)
    assert (llm / BIG).read_bytes() == FILES[BIG]
    marked = [line for line in out.splitlines() if "origin marked bad" in line]
    assert marked, out
    assert any(primary.url in line and "source" in line for line in marked), marked
    assert not any(mirror.url in line for line in marked), marked
    assert mirror.bytes_sent > 0
    # the primary's bad bytes were requested again, from the mirror
    assert any(BIG in path for _, path, _ in mirror.requests)


def test_all_origins_down_fails_with_every_origin_in_the_error(setup):
    home, primary, mirror, stop = setup
    stop(primary)
    stop(mirror)
    res = home.once("--timeout", "10", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    d = home.status()["datasets"]["llm-weights"]
    assert d["phase"] != "Ready"
    assert "all origins failed" in d["error"], d
    assert "source" in d["error"] and "mirrors[0]" in d["error"]
    assert primary.url in d["error"] and mirror.url in d["error"]
    link = home.data / "models" / "llm"
    assert not link.exists() and not link.is_symlink()
