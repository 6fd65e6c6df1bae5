"""A node that is a locked version's only target reads it straight from the source into
staging, hashing it as it is written (core.transfer.read_directly), instead of through
libtorrent's web seed; real HTTP origins, a real state repo, the real CLI (`--once`).

A read that makes the lock's info-hash is seeded without libtorrent's check; one that does not
leaves its files where libtorrent checks them, and only what is bad is fetched again (through
the gateway, mirrors included). With another target node, the swarm shares the reading: no
direct read. A read paused by the scheduler, or handed over when another download starts,
leaves what it wrote for libtorrent, which fetches only the rest (the daemon tests below;
kills mid-read: tests/test_crash.py, tests/test_once.py)."""

from __future__ import annotations

import json

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, wait_all, write_data)
from origin_server import OriginServer

BIG = "weights/model-00001.safetensors"
SMALL = "weights/model-00002.safetensors"
FILES = {BIG: pseudo_random(6 << 20, "d1"), SMALL: pseudo_random(1 << 20, "d2"),
         "config.json": b'{"hidden": 64}\n'}
SIZE = sum(map(len, FILES.values()))


def events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.fixture
def origins(tmp_path):
    primary = OriginServer(write_data(tmp_path / "primary", FILES)).start()
    mirror = OriginServer(write_data(tmp_path / "mirror", FILES)).start()
    yield primary, mirror
    primary.stop()
    mirror.stop()


def cluster(tmp_path, primary: OriginServer, mirror: OriginServer | None, nodes: list[str],
            ) -> tuple[StateRepo, list[NodeHome]]:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(nodes, first_ip=121))
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in nodes]
    mirrors = [http_source(mirror.url, FILES)] if mirror is not None else []
    repo.write("ds.yaml", dataset_yaml("llm", http_source(primary.url, FILES), mirrors=mirrors,
                                       path="llm"))
    res = repo.lock()
    assert res.returncode == 0, res.stderr
    repo.commit()
    primary.bytes_sent = 0
    primary.requests.clear()
    if mirror is not None:
        mirror.bytes_sent = 0
        mirror.requests.clear()
    return repo, homes


def test_the_only_target_reads_the_source_once_and_seeds_it_unchecked(tmp_path, origins):
    primary, _ = origins
    _, [home] = cluster(tmp_path, primary, None, ["n1"])
    res = home.once(timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert tree_digest(home.data / "llm") == tree_digest(primary.root)
    fetching = [e for e in events(out) if e.get("event") == "fetching"]
    assert [e.get("direct") for e in fetching] == [True, None], fetching
    assert fetching[1].get("built_here") is True, fetching  # seeded without libtorrent's check
    d = home.status()["datasets"]["llm"]
    assert d["phase"] == "Ready"
    assert primary.bytes_sent == SIZE == d["bytesFromOrigin"]
    assert d["bytesFromPeers"] == 0


def test_a_source_with_one_wrong_file_costs_only_that_file_again(tmp_path, origins):
    primary, mirror = origins
    _, [home] = cluster(tmp_path, primary, mirror, ["n1"])
    bad = bytearray(FILES[BIG])
    bad[len(bad) // 2] ^= 0xFF  # one byte of one piece
    (primary.root / BIG).write_bytes(bytes(bad))
    res = home.once(timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert tree_digest(home.data / "llm") == tree_digest(mirror.root)
    warned = [e for e in events(out) if e.get("event", "").startswith("direct read differs")]
    assert len(warned) == 1, out
    # libtorrent kept every good piece the direct read wrote: the good files were read once,
    # from the source, and only the bad piece came again (from the mirror, or the source and
    # then the mirror once the source was marked bad).
    assert [p for m, p, _ in primary.requests if m == "GET" and p.endswith(SMALL)] != []
    assert not any(m == "GET" and (p.endswith(SMALL) or p.endswith("config.json"))
                   for m, p, _ in mirror.requests), mirror.requests
    again = primary.bytes_sent + mirror.bytes_sent - SIZE
    assert 0 < again <= len(FILES[BIG]) // 2, (primary.bytes_sent, mirror.bytes_sent)
    assert mirror.bytes_sent > 0


def test_two_target_nodes_share_the_reading_through_the_swarm(tmp_path, origins):
    primary, _ = origins
    _, homes = cluster(tmp_path, primary, None, ["n1", "n2"])
    codes = wait_all([h.start_once(timeout=90) for h in homes], timeout=100)
    logs = [(h.base / "once.log").read_text() for h in homes]
    assert codes == [0, 0], logs
    for h, log in zip(homes, logs):
        assert tree_digest(h.data / "llm") == tree_digest(primary.root)
        assert not any(e.get("direct") for e in events(log)), log


def _two_datasets(tmp_path, server: OriginServer, config: dict | None = None
                  ) -> tuple[StateRepo, NodeHome, str]:
    """`big` (normal) and `crit` (critical, suspended: the daemon leaves it alone until the
    test lifts that), both locked, one node; returns crit's locked text without suspend."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    repo.write("big.yaml", dataset_yaml("big", http_source(f"{server.url}/big", ["blob.bin"]),
                                        extra="  priority: normal\n"))
    repo.write("crit.yaml", dataset_yaml("crit", http_source(f"{server.url}/crit", ["blob.bin"]),
                                         extra="  priority: critical\n"))
    assert repo.lock().returncode == 0
    crit = (repo.root / "crit.yaml").read_text()
    repo.write("crit.yaml", crit + "  suspend: true\n")
    repo.commit("big, and crit suspended")
    server.bytes_sent = 0
    return repo, NodeHome("n1", tmp_path / "n1", repo.root, config or {}).write_config(), crit


@pytest.mark.parametrize("max_active", [1, None])
def test_a_direct_read_stops_for_another_download_and_libtorrent_keeps_what_it_wrote(
        tmp_path, daemons, max_active):
    """maxActiveDownloads 1: the critical dataset pauses the direct read; by default (room for
    both): the direct read hands over to libtorrent, which shares bandwidth by priority. Either
    way the bytes read before are kept, not fetched again."""
    size = 8 << 20
    root = write_data(tmp_path / "origin", {"big/blob.bin": pseudo_random(size, "big"),
                                            "crit/blob.bin": pseudo_random(1 << 20, "crit")})
    server = OriginServer(root, rate=2 << 20).start()
    try:
        repo, home, crit = _two_datasets(
            tmp_path, server, {"maxActiveDownloads": max_active} if max_active else None)
        d = daemons(home)
        d.wait_partly_fetched("big", size)
        assert '"direct": true' in d.logs()
        repo.write("crit.yaml", crit)
        rev = repo.commit("crit wanted")
        d.wait_phase("crit", "Ready", rev, timeout=60)
        d.wait_phase("big", "Ready", rev, timeout=90)
        logs = d.logs()
        if max_active == 1:
            assert "paused" in logs and "resumed" in logs, logs[-3000:]
            order = [e.get("dataset") for e in events(logs) if e.get("event") == "activated"]
            assert order.index("crit") < order.index("big"), order
        else:
            assert "direct read handed over to libtorrent" in logs, logs[-3000:]
        assert tree_digest(home.data / "big") == tree_digest(root / "big")
        assert tree_digest(home.data / "crit") == tree_digest(root / "crit")
        # What the direct read wrote was checked and kept (chunks in flight at the stop
        # may come again).
        print(json.dumps({"max_active": max_active, "origin_bytes": server.bytes_sent}))
        assert server.bytes_sent <= size + (1 << 20) + (1 << 20), server.bytes_sent
    finally:
        server.stop()
