"""`spec.split: {copies: K}` with real processes (issue 14 item 2): three `--once` nodes on
their own loopback addresses, one HTTP origin; each node ends up with exactly the files the
rendezvous rule gives it, byte-exact, and its status counts only those."""

from __future__ import annotations

import hashlib

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     run_cli, tree_digest, until, wait_all)
from reconciler.core.split import holders

NODES = ["s1", "s2", "s3"]
# Files of several sizes, two in a subdirectory: pieces of one file never hold another's.
FILES = {f"shard-{i:02d}.bin": pseudo_random((300 << 10) + 4099 * i, f"s{i}") for i in range(7)}
FILES |= {"meta/index.json": b'{"shards": 7}\n', "meta/tokenizer.txt": b"a b c\n" * 1000}
TOTAL = sum(map(len, FILES.values()))
DIGESTS = {f: hashlib.sha256(b).hexdigest() for f, b in FILES.items()}


def _holding(homes: list[NodeHome], revision: str, want: dict[str, dict[str, str]]) -> bool:
    """Every node in `homes` has applied `revision`, its split dataset `sp` is Ready, and its
    path shows exactly the files `want` gives it."""
    for h in homes:
        doc = h.status()
        d = doc["datasets"].get("sp") or {}
        if doc.get("lastAppliedRevision") != revision or d.get("phase") != "Ready" \
                or tree_digest(h.data / "shards" / "sp") != want[h.name]:
            return False
    return True


@pytest.fixture
def origin(origins):
    return origins(FILES, rate=8 << 20)


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

    want = DIGESTS
    for name, k in (("one", 1), ("two", 2)):
        held: dict[str, list[str]] = {f: [] for f in FILES}
        for h in homes:
            mine = {f for f in FILES if h.name in holders(name, f, NODES, k)}
            got = tree_digest(h.data / "shards" / name)
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


def test_adding_a_node_moves_only_the_files_that_must_move(tmp_path, origin, daemons):
    """Three daemons hold a `copies: 1` split; a fourth node joins the inventory: it gets
    exactly the files it now ranks first for, the others keep theirs and drop only those,
    and `status --cluster` counts the files short of their copies."""
    docs = nodes_yaml([*NODES, "s4"], first_ip=81).split("---\n")
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", "---\n".join(docs[:3]))
    repo.write("sp.yaml", dataset_yaml("sp", http_source(origin.url, FILES), path="shards/sp",
                                       extra="  split: {copies: 1}\n"))
    assert repo.lock().returncode == 0
    rev1 = repo.commit("three nodes")
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config()
             for n in [*NODES, "s4"]]
    want = DIGESTS

    def expected(nodes: list[str]) -> dict[str, dict[str, str]]:
        return {n: {f: want[f] for f in FILES if holders("sp", f, nodes, 1) == (n,)}
                for n in nodes}

    ds = [daemons(h) for h in homes[:3]]
    for d in ds:
        d.wait_phase("sp", "Ready", rev1, timeout=90)
    before = expected(NODES)
    assert {h.name: tree_digest(h.data / "shards" / "sp") for h in homes[:3]} == before
    res = run_cli("status", "--cluster", "--config", str(homes[0].config))
    assert res.returncode == 0, res.stderr
    assert f"split sp: 0/{len(FILES)} files with fewer than 1 copies" in res.stdout, res.stdout

    origin.bytes_sent = 0
    repo.write("nodes.yaml", "---\n".join(docs))
    rev2 = repo.commit("a fourth node")
    ds.append(daemons(homes[3]))
    after = expected([*NODES, "s4"])

    until(lambda: _holding(homes, rev2, after), 90,
          "every node holds exactly its files of the new split")
    for h in homes[:3]:
        assert set(after[h.name]) <= set(before[h.name])  # an old node only loses files
        d = h.status()["datasets"]["sp"]
        size = sum(len(FILES[f]) for f in after[h.name])
        assert (d["bytesTotal"], d["bytesDone"]) == (size, size), d
    moved = {f for n in NODES for f in set(before[n]) - set(after[n])}
    assert moved == set(after["s4"])  # exactly what the new node gains
    for h in homes:
        assert tree_digest(h.state_dir / "staging") == {}  # nothing left behind
    moved_bytes = sum(len(FILES[f]) for f in moved)
    # what moved came from the old holders or, once they had dropped it, from the origin:
    # never more than the moved files themselves (the old nodes fetch nothing)
    print(f"moved {len(moved)} files, {moved_bytes} B; origin sent {origin.bytes_sent} B")
    assert origin.bytes_sent <= 1.3 * moved_bytes, (origin.bytes_sent, moved_bytes)

    # A restart seeds the stored split version again (not in seed mode: it would offer the
    # others' files): still Ready, same files, nothing fetched, no error.
    sent = origin.bytes_sent
    assert ds[1].stop() == 0
    again = daemons(homes[1])
    again.wait_phase("sp", "Ready", rev2, timeout=60)
    assert tree_digest(homes[1].data / "shards" / "sp") == after["s2"]
    assert origin.bytes_sent == sent
    assert '"level": "error"' not in again.logs()

    # The fourth node leaves: the old nodes gain back exactly the files they had, fetched in
    # staging and moved into the active directory only once verified; s4 drains (it keeps
    # seeding during gracePeriod), so they come from it rather than from the origin.
    sent = origin.bytes_sent
    repo.write("nodes.yaml", "---\n".join(docs[:3]))
    rev3 = repo.commit("the fourth node leaves")

    until(lambda: _holding(homes[:3], rev3, before), 90, "the old split back on the three nodes")
    for h in homes[:3]:
        assert tree_digest(h.state_dir / "staging") == {}  # nothing left behind
    print(f"gained back {moved_bytes} B; origin sent {origin.bytes_sent - sent} B")
    assert origin.bytes_sent - sent <= 1.3 * moved_bytes


def test_unlocked_split_dataset_shows_only_each_nodes_files(tmp_path, origin):
    """Without a lock in git, the first-ranked node reads the source once into staging to
    build the torrent; the split applies once the torrent is known, and the files that node
    read but does not hold never reach its `path`."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(NODES, first_ip=91))
    repo.write("un.yaml", dataset_yaml("un", http_source(origin.url, FILES), path="shards/un",
                                       extra="  split: {copies: 1}\n"))
    repo.commit()
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in NODES]
    procs = [h.start_once(timeout=120) for h in homes]
    codes = wait_all(procs)
    assert codes == [0, 0, 0], [(h.base / "once.log").read_text() for h in homes]
    want = DIGESTS
    for h in homes:
        mine = {f for f in FILES if holders("un", f, NODES, 1) == (h.name,)}
        assert tree_digest(h.data / "shards" / "un") == {f: want[f] for f in mine}, h.name
        assert tree_digest(h.state_dir / "staging") == {}
        d = h.status()["datasets"]["un"]
        assert d["bytesTotal"] == sum(len(FILES[f]) for f in mine), d
