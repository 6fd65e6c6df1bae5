"""`spec.split: {copies: K}` with real processes (issue 14 item 2): three `--once` nodes on
their own loopback addresses, one HTTP origin; each node ends up with exactly the files the
rendezvous rule gives it, byte-exact, and its status counts only those."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     write_data, wait_all)
from origin_server import OriginServer
from reconciler.core.split import holders

NODES = ["s1", "s2", "s3"]
# Files of several sizes, two in a subdirectory: pieces of one file never hold another's.
FILES = {f"shard-{i:02d}.bin": pseudo_random((300 << 10) + 4099 * i, f"s{i}") for i in range(7)}
FILES |= {"meta/index.json": b'{"shards": 7}\n', "meta/tokenizer.txt": b"a b c\n" * 1000}
TOTAL = sum(map(len, FILES.values()))


def _files_under(root: Path) -> dict[str, str]:
    """Every regular file under `root` (relative path -> sha256); none at all if absent."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "origin", FILES), rate=8 << 20).start()
    yield server
    server.stop()


def test_split_copies_1_and_2_over_three_nodes(tmp_path, origin):
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(NODES, first_ip=71))
    for name, k in (("one", 1), ("two", 2)):
        repo.write(f"{name}.yaml", dataset_yaml(name, http_source(origin.url, FILES),
                                               path=f"shards/{name}",
                                               extra=f"  split: {{copies: {k}}}\n"))
    assert repo.lock().returncode == 0
    repo.commit()
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in NODES]
    origin.bytes_sent = 0
    procs = [h.start_once(timeout=120) for h in homes]
    codes = wait_all(procs)
    logs = [(h.base / "once.log").read_text() for h in homes]
    assert codes == [0, 0, 0], logs

    want = {f: hashlib.sha256(b).hexdigest() for f, b in FILES.items()}
    for name, k in (("one", 1), ("two", 2)):
        held: dict[str, list[str]] = {f: [] for f in FILES}
        for h in homes:
            mine = {f for f in FILES if h.name in holders(name, f, NODES, k)}
            got = _files_under(h.data / "shards" / name)
            # exactly its files, nothing else (no other node's file, no part file), verified
            assert got == {f: want[f] for f in mine}, (name, h.name)
            d = h.status()["datasets"][name]
            size = sum(len(FILES[f]) for f in mine)
            assert (d["phase"], d["bytesTotal"], d["bytesDone"]) == ("Ready", size, size), d
            for f in got:
                held[f].append(h.name)
        # every file on exactly K nodes, none lost
        assert all(len(nodes) == k for nodes in held.values()), held
    # Each file of each dataset comes from the origin about once (the second holder of a
    # `copies: 2` file takes it from the first); without the split every node would fetch
    # or receive all of both. Generous bound: the ratio itself is not what this test is for.
    assert origin.bytes_sent <= 1.3 * 2 * TOTAL, origin.bytes_sent / (2 * TOTAL)
