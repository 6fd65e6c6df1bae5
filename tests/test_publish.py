"""Datasets published from a node's disk (`source: {node: {name, path}}`), end to end: three
real nodes, no origin server at all. The publishing node snapshots its checkpoint, builds the
torrent and seeds it; the others fetch the torrent from its API and the bytes from the swarm."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jsonschema

from harness import (NodeHome, StateRepo, dataset_yaml, nodes_yaml, pseudo_random, run_cli,
                     tree_digest, wait_all, write_data)
from test_unlocked import STATUS_SCHEMA
from reconciler.torrent.hybrid import read_lock

NAMES = ["p1", "p2", "p3"]  # p1 publishes
STEP_1200 = {"model.safetensors": pseudo_random(1_700_000, "ckpt-1200"),
             "optimizer.pt": pseudo_random(900_001, "opt-1200"),
             "config.json": b'{"step": 1200}\n'}
TOTAL = sum(map(len, STEP_1200.values()))


def ckpt_yaml(path: Path, version: str = "step-1200") -> str:
    return dataset_yaml("ckpt", {"node": {"name": "p1", "path": str(path)}}, version=version,
                        path="ckpt/latest")


def make_cluster(tmp_path: Path, first_ip: int, path: Path | None = None
                 ) -> tuple[StateRepo, list[NodeHome], Path]:
    """The state repo, the three nodes' homes, and p1's checkpoint directory (`step-1200`
    under p1's only publish root, `<p1>/train`)."""
    train = tmp_path / "p1" / "train"
    src = write_data(train / "step-1200", STEP_1200)
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(NAMES, first_ip=first_ip))
    repo.write("ckpt.yaml", ckpt_yaml(path or src))
    repo.commit("publish step-1200")
    homes = [NodeHome(n, tmp_path / n, repo.root,
                      extra={"publishRoots": [str(train)]} if n == "p1" else {}).write_config()
             for n in NAMES]
    return repo, homes, src


def logs(homes: list[NodeHome], name: str = "once.log") -> str:
    return "\n".join(f"== {h.name}\n" + (h.base / name).read_text()[-4000:]
                     for h in homes if (h.base / name).exists())


def test_a_checkpoint_published_by_one_node_reaches_the_others_byte_exact(tmp_path, daemons):
    repo, homes, src = make_cluster(tmp_path, 231)
    p1, p2, p3 = homes
    original = tree_digest(src)
    pub = daemons(p1)
    pub.wait_phase("ckpt", "Ready", timeout=90)

    # The training job goes on writing: over a published file in place (same inode), and
    # replacing another by rename. Peers still receive the bytes published.
    with open(src / "model.safetensors", "r+b") as f:
        f.write(b"\0" * 4096)
    (src / "new.tmp").write_bytes(b"overwritten")
    os.replace(src / "new.tmp", src / "config.json")
    assert tree_digest(src) != original

    codes = wait_all([h.start_once() for h in (p2, p3)])
    assert codes == [0, 0], logs(homes) + pub.logs()[-4000:]
    for h in homes:
        doc = h.status()
        jsonschema.Draft202012Validator(STATUS_SCHEMA).validate(doc)
        d = doc["datasets"]["ckpt"]
        assert d["phase"] == "Ready" and d["bytesTotal"] == TOTAL, (h.name, d)
        assert d["bytesFromOrigin"] == 0, (h.name, d)  # no origin, no web seed
        assert tree_digest(h.data / "ckpt" / "latest") == original, h.name
    for h in (p2, p3):  # every byte from the swarm: the publisher's snapshot
        d = h.status()["datasets"]["ckpt"]
        assert d["bytesFromPeers"] >= TOTAL, (h.name, d)
        log = (h.base / "once.log").read_text()
        assert "metadata fetched" in log and '"peer": "p1"' in log
        assert "metadata built" not in log
    assert "metadata built" in pub.logs()

    # The same version with other bytes (a new path, version unchanged) is refused, reported
    # in the status on the publisher and on the others; what they hold stays as it was.
    step_1300 = write_data(src.parent / "step-1300", {"model.safetensors": b"other bytes"})
    repo.write("ckpt.yaml", ckpt_yaml(step_1300, version="step-1200"))
    rev = repo.commit("same version, other bytes")
    doc = pub.wait_phase("ckpt", "Failed", revision=rev, timeout=60)
    error = doc["datasets"]["ckpt"]["error"]
    assert "already published" in error and "immutable" in error and "p1" in error, error
    assert '"retry_in": null' in pub.logs()  # for good: step-1300 is not read again and again
    res = p2.once("--timeout", "20")
    assert res.returncode == 1, res.stderr[-3000:]
    d = p2.status()["datasets"]["ckpt"]
    assert d["phase"] == "Failed" and d["error"] == error, d
    assert tree_digest(p2.data / "ckpt" / "latest") == original

    # Back to the published path; `lock` pins it through the publishing node's API (the
    # snapshot's torrent: the files on p1's disk have changed since).
    repo.write("ckpt.yaml", ckpt_yaml(src))
    rev = repo.commit("back to step-1200")
    ih = pub.wait_phase("ckpt", "Ready", revision=rev)["datasets"]["ckpt"]["infoHash"]
    res = repo.lock("ckpt")
    assert res.returncode == 0, res.stderr
    assert read_lock((repo.root / "locks" / "ckpt.torrent").read_bytes(), "t").info_hash == ih
    assert "lock: locks/ckpt.torrent" in (repo.root / "ckpt.yaml").read_text()
    repo.commit("lock step-1200")
    res = p3.once("--timeout", "30")
    assert res.returncode == 0, res.stderr[-3000:]
    assert p3.status()["datasets"]["ckpt"]["infoHash"] == ih

    # The README's walkthrough: the training loop writes the next step, `publish` points the
    # dataset at it (a new version; the lock of the old one goes), a commit, and `wait` gates
    # the evaluator until its node serves it.
    step_1300 = write_data(src.parent / "step-1300", {"model.safetensors": b"step 1300\n"})
    res = run_cli("publish", "ckpt", str(step_1300), "--version", "step-1300",
                  "--repo", str(repo.root))
    assert res.returncode == 0 and "commit" in res.stdout, res.stderr
    repo.commit("ckpt: step-1300")
    proc = p2.start_once()
    res = p2.run("wait", "ckpt", "--timeout", "60")
    assert wait_all([proc]) == [0], logs(homes)
    assert res.returncode == 0, res.stdout + res.stderr
    assert tree_digest(p2.data / "ckpt" / "latest") == tree_digest(step_1300)


def test_a_path_outside_publish_roots_is_refused_on_every_node(tmp_path, daemons):
    # A symlink inside the publish root that leads out of it: refused as resolved.
    secret = write_data(tmp_path / "p1" / "secret", {"key.pem": b"do not share\n"})
    escape = tmp_path / "p1" / "train" / "escape"
    escape.parent.mkdir(parents=True)
    escape.symlink_to(secret)
    repo, homes, _ = make_cluster(tmp_path, 234, path=escape)
    p1, p2, p3 = homes
    pub = daemons(p1)
    doc = pub.wait_phase("ckpt", "Failed", timeout=60)
    error = doc["datasets"]["ckpt"]["error"]
    assert "node p1" in error and str(escape) in error and "publishRoots" in error, error
    codes = wait_all([h.start_once("--timeout", "20") for h in (p2, p3)], timeout=60)
    assert codes == [1, 1], logs(homes)
    for h in homes:
        d = h.status()["datasets"]["ckpt"]
        assert d["phase"] == "Failed" and d["error"] == error, (h.name, d)
        assert d["bytesDone"] == 0 and not (h.data / "ckpt").exists(), (h.name, d)
    res = repo.lock("ckpt")  # nothing to pin: the refusal, as the nodes report it
    assert res.returncode == 1 and error in res.stderr, res.stderr
    # Not a byte was read or served: nothing of it is in any store.
    for h in homes:
        assert not any(p.is_file() and p.name == "key.pem"
                       for p in (h.state_dir).rglob("*")), h.name


def test_a_publisher_that_lost_its_state_cannot_change_a_published_version(tmp_path, daemons):
    repo, homes, src = make_cluster(tmp_path, 237)
    p1, p2, _ = homes
    original = tree_digest(src)
    pub = daemons(p1)
    first = pub.wait_phase("ckpt", "Ready", timeout=90)["datasets"]["ckpt"]["infoHash"]
    assert wait_all([p2.start_once()]) == [0], logs(homes)
    assert tree_digest(p2.data / "ckpt" / "latest") == original

    # p1 loses its stateDir (a reinstalled node), and the files changed meanwhile: it
    # publishes them again under the same version, having no record of the first time.
    assert pub.stop() == 0
    shutil.rmtree(p1.state_dir)
    (p1.data / "ckpt" / "latest").unlink()
    (src / "model.safetensors").write_bytes(b"retrained")
    pub = daemons(p1)
    ih = pub.wait_phase("ckpt", "Ready", timeout=90)["datasets"]["ckpt"]["infoHash"]
    assert ih != first

    # p2 keeps the torrent it took for step-1200: it stays on the bytes first published.
    res = p2.once("--timeout", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    d = p2.status()["datasets"]["ckpt"]
    assert d["phase"] == "Ready" and d["infoHash"] == first, d
    assert tree_digest(p2.data / "ckpt" / "latest") == original
    assert "metadata fetched" not in res.stderr

    # Even without that torrent (its metadata cache lost), p2 refuses the other bytes for a
    # version it holds, and keeps what it has.
    shutil.rmtree(p2.state_dir / "metadata")
    res = p2.once("--timeout", "20")
    assert res.returncode == 1, res.stderr[-3000:]
    d = p2.status()["datasets"]["ckpt"]
    assert d["phase"] == "Failed", d
    assert "node p1 offers version 'step-1200'" in d["error"] and "immutable" in d["error"], d
    assert tree_digest(p2.data / "ckpt" / "latest") == original
