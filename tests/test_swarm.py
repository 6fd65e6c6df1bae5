"""Several nodes, one swarm: simultaneous `--once` runs on distinct loopback addresses share a
bandwidth-limited origin, peers come only from the inventory, a killed node's share is taken
over. Origin bytes are counted by the origin server itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, assert_origin_offload, dataset_yaml, http_source,
                     nodes_yaml, pseudo_random, tree_digest, wait_all)
from origin_server import OriginServer

SIZE = 12 << 20
FILES = {"model-1.safetensors": pseudo_random(SIZE - (4 << 20) - 777, "m1"),
         "model-2.safetensors": pseudo_random(4 << 20, "m2"), "config.json": b"{}" * 388}


def make_cluster(tmp_path: Path, origin: OriginServer, names: list[str], first_ip: int = 31
                 ) -> tuple[StateRepo, list[NodeHome]]:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=first_ip))
    repo.write("ds.yaml", dataset_yaml("weights", http_source(origin.url, FILES),
                                       path="models/weights"))
    assert repo.lock().returncode == 0
    repo.commit()
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in names]
    return repo, homes



@pytest.fixture
def origin(origins):
    return origins(FILES, rate=8 << 20)


def test_three_simultaneous_once_runs_share_the_origin(tmp_path, origin):
    repo, homes = make_cluster(tmp_path, origin, ["n1", "n2", "n3"])
    origin.bytes_sent = 0
    procs = [h.start_once(timeout=120) for h in homes]
    codes = wait_all(procs)
    logs = [(h.base / "once.log").read_text() for h in homes]
    assert codes == [0, 0, 0], logs
    expected = tree_digest(origin.root)
    for h in homes:
        assert tree_digest(h.data / "models" / "weights") == expected
        d = h.status()["datasets"]["weights"]
        assert d["phase"] == "Ready"
    total = sum(map(len, FILES.values()))
    # Generous bound (the ratio itself is measured in bench/): without sharding every node
    # pulls most of the dataset from the origin (about 2-3x).
    assert origin.bytes_sent <= 1.3 * total, origin.bytes_sent / total
    from_peers = sum(h.status()["datasets"]["weights"]["bytesFromPeers"] for h in homes)
    assert from_peers > 0


def test_killed_node_does_not_leave_its_share_unfetched(tmp_path, origin):
    repo, homes = make_cluster(tmp_path, origin, ["k1", "k2", "k3"], first_ip=41)
    origin.bytes_sent = 0
    procs = [h.start_once(timeout=120) for h in homes]
    try:
        deadline = time.monotonic() + 60
        while origin.bytes_sent < SIZE // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[0].kill()  # k1 dies mid-transfer, its origin share unfinished
        codes = wait_all(procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    logs = [(h.base / "once.log").read_text() for h in homes[1:]]
    assert codes == [0, 0], logs
    expected = tree_digest(origin.root)
    for h in homes[1:]:
        assert tree_digest(h.data / "models" / "weights") == expected


def test_fast_nodes_take_over_a_slow_nodes_share_and_do_not_wait_for_it(tmp_path, origin,
                                                                         daemons):
    """A node whose libtorrent download is capped at 1/16 of the origin's rate owns a quarter of
    the runs; it lags, and the others, their own shares done, take its runs (progress-based
    takeover, core/offload.py) and are Ready while it is still fetching, with each byte still
    leaving the origin about once."""
    names = ["f1", "f2", "f3", "slow"]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=51))
    repo.write("ds.yaml", dataset_yaml("weights", http_source(origin.url, FILES),
                                       path="models/weights"))
    assert repo.lock().returncode == 0
    repo.commit()
    cap = {"bandwidth": {"download": "512KiB", "upload": "512KiB"}}
    homes = [NodeHome(n, tmp_path / n, repo.root, dict(cap) if n == "slow" else {}).write_config()
             for n in names]
    origin.bytes_sent = 0
    ds = [daemons(h) for h in homes]
    fast = [d.wait_phase("weights", "Ready", timeout=90) for d in ds[:3]]
    # 12 MiB at 512 KiB/s takes the slow node 24 s or more: the others did not wait for it
    assert ds[3].phase("weights") != "Ready", [d["datasets"]["weights"] for d in fast]
    takers = [d for d in ds[:3] if "taking over runs of slower owners" in d.logs()]
    assert takers, ds[0].logs()
    slow = ds[3].wait_phase("weights", "Ready", timeout=120)
    expected = tree_digest(origin.root)
    for h in homes:
        assert tree_digest(h.data / "models" / "weights") == expected
    statuses = [d["datasets"]["weights"] for d in [*fast, slow]]
    # The duplicate is bounded by what the slow node had in flight when the takers judged it
    # lagging (about one 1 MiB run: 1.03x of 64 MiB in bench.swarm, up to 1.08x of these
    # 12 MiB in 4 runs here).
    assert_origin_offload(statuses, sum(map(len, FILES.values())), origin.bytes_sent,
                          "the origin", bound=1.15)
