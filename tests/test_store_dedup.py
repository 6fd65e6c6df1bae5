"""The content-addressed store end to end: real libtorrent, a real origin, the real store.

One inode per unique file (its v2 pieces root) across datasets and versions; a file the store
holds already is linked before libtorrent's check, never fetched again; a rollout moves only
the changed files and a rollback moves nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, write_data)
from origin_server import OriginServer

SHARED = pseudo_random(400_000, "shared")
A_ONLY = pseudo_random(250_000, "a-only")
B_ONLY = pseudo_random(150_000, "b-only")
SLACK = 64 * 1024  # "a few pieces": what libtorrent may fetch beyond the changed bytes


@pytest.fixture
def origin(tmp_path):
    root = write_data(tmp_path / "origin", {
        "a/shared.bin": SHARED, "a/a-only.bin": A_ONLY,
        "b/shared.bin": SHARED, "b/b-only.bin": B_ONLY,
        "m/f1.bin": pseudo_random(300_000, "f1"), "m/f2.bin": pseudo_random(300_000, "f2"),
        "m/f3.bin": pseudo_random(300_000, "f3")})
    server = OriginServer(root).start()
    yield server
    server.stop()


def _node(tmp_path: Path) -> tuple[StateRepo, NodeHome]:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    home = NodeHome("n1", tmp_path / "n1", repo.root, {"gracePeriod": "0s"}).write_config()
    return repo, home


def _ds(origin: OriginServer, name: str, sub: str, files: list[str], version: str = "v1") -> str:
    return dataset_yaml(name, http_source(f"{origin.url}/{sub}/", files), version=version,
                        path=name)


def _commit(repo: StateRepo, origin: OriginServer, text: str, msg: str) -> None:
    repo.write("datasets.yaml", text)
    res = repo.lock()
    assert res.returncode == 0, res.stderr
    repo.commit(msg)
    origin.bytes_sent = 0  # count only what the node fetches from here on


def _once(home: NodeHome) -> None:
    res = home.once()
    assert res.returncode == 0, res.stdout + res.stderr


def _objects(home: NodeHome) -> list[Path]:
    return sorted(p for p in (home.state_dir / "objects").glob("*/*") if p.is_file())


def test_two_datasets_share_one_inode_and_the_second_fetches_only_its_own_file(tmp_path, origin):
    repo, home = _node(tmp_path)
    alpha = _ds(origin, "alpha", "a", ["shared.bin", "a-only.bin"])
    beta = _ds(origin, "beta", "b", ["shared.bin", "b-only.bin"])
    _commit(repo, origin, alpha, "alpha")
    _once(home)
    assert origin.bytes_sent == len(SHARED) + len(A_ONLY)

    _commit(repo, origin, alpha + "---\n" + beta, "beta")
    _once(home)
    # beta's shared.bin came from the store: the origin sent only b-only.bin
    print("second dataset, origin bytes:", origin.bytes_sent)
    assert origin.bytes_sent == len(B_ONLY)
    a, b = home.data / "alpha", home.data / "beta"
    assert tree_digest(b) == tree_digest(origin.root / "b")
    sa, sb = (a / "shared.bin").stat(), (b / "shared.bin").stat()
    assert sa.st_ino == sb.st_ino and sa.st_dev == sb.st_dev
    assert sa.st_nlink == 3  # alpha, beta and the object
    objs = _objects(home)
    assert len(objs) == 3  # shared, a-only, b-only: one inode each
    assert any(o.stat().st_ino == sa.st_ino for o in objs)
    for f in [*a.rglob("*"), *b.rglob("*")]:
        if f.is_file():
            assert not f.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), f

    # Evicting alpha keeps the object beta links; evicting beta too leaves no orphan.
    _commit(repo, origin, beta, "drop alpha")
    _once(home)
    assert not a.exists()
    assert (b / "shared.bin").stat().st_nlink == 2
    assert len(_objects(home)) == 2  # a-only's object was orphaned and removed
    repo.write("datasets.yaml", "")
    repo.commit("drop beta")
    _once(home)
    assert not b.exists()
    assert _objects(home) == []


def test_rollout_fetches_only_the_changed_file_and_rollback_fetches_nothing(tmp_path, origin):
    repo, home = _node(tmp_path)
    files = ["f1.bin", "f2.bin", "f3.bin"]
    _commit(repo, origin, _ds(origin, "model", "m", files), "v1")
    _once(home)
    link = home.data / "model"
    v1_target = os.readlink(link)
    v1_digest = tree_digest(link)

    old_f2 = (origin.root / "m" / "f2.bin").read_bytes()
    new_f2 = pseudo_random(310_000, "f2-v2")
    (origin.root / "m" / "f2.bin").write_bytes(new_f2)
    _commit(repo, origin, _ds(origin, "model", "m", files, "v2"), "v2")
    _once(home)
    assert home.status()["datasets"]["model"]["version"] == "v2"
    assert tree_digest(link) == tree_digest(origin.root / "m")
    print("rollout, origin bytes:", origin.bytes_sent)
    # Only the changed file moved (plus at most a few pieces).
    assert len(new_f2) <= origin.bytes_sent <= len(new_f2) + SLACK, origin.bytes_sent
    v2_target = os.readlink(link)
    assert v2_target != v1_target and Path(v1_target).is_dir()  # keepVersions: 1
    for f in ("f1.bin", "f3.bin"):
        assert (Path(v1_target) / f).stat().st_ino == (Path(v2_target) / f).stat().st_ino

    # Rollback: the kept version is activated again by one rename; nothing is fetched.
    (origin.root / "m" / "f2.bin").write_bytes(old_f2)
    _commit(repo, origin, _ds(origin, "model", "m", files, "v1"), "rollback")
    _once(home)
    print("rollback, origin bytes:", origin.bytes_sent)
    assert origin.bytes_sent == 0
    assert os.readlink(link) == v1_target
    assert tree_digest(link) == v1_digest
    assert home.status()["datasets"]["model"]["phase"] == "Ready"


def test_a_stored_file_changed_behind_the_store_is_never_written_through_its_links(
        tmp_path, origin):
    repo, home = _node(tmp_path)
    alpha = _ds(origin, "alpha", "a", ["shared.bin", "a-only.bin"])
    _commit(repo, origin, alpha, "alpha")
    _once(home)
    a_shared = home.data / "alpha" / "shared.bin"
    os.chmod(a_shared, 0o644)  # root could anyway; a consumer could not
    with open(a_shared, "r+b") as f:
        f.seek(100_000)
        f.write(b"X" * 100)
    corrupt = a_shared.read_bytes()

    _commit(repo, origin, alpha + "---\n" + _ds(origin, "beta", "b", ["shared.bin", "b-only.bin"]),
            "beta")
    _once(home)
    b = home.data / "beta"
    assert tree_digest(b) == tree_digest(origin.root / "b")  # fetched, not the bad object
    assert origin.bytes_sent == len(SHARED) + len(B_ONLY)
    # libtorrent never wrote into the shared inode (it would have "repaired" alpha's file)
    assert a_shared.read_bytes() == corrupt
    assert (b / "shared.bin").stat().st_ino != a_shared.stat().st_ino
    assert any(o.stat().st_ino == (b / "shared.bin").stat().st_ino for o in _objects(home))
