"""Activation never writes outside the allowed roots through a symlink, and never replaces a
symlink the store did not make (`--once` end to end; adapters/safepath.py)."""

from __future__ import annotations

import os

import pytest

from harness import NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, write_data
from origin_server import OriginServer

FILES = {"config.json": b'{"hidden": 64}\n', "w.bin": b"w" * 50_000}


@pytest.fixture
def node(tmp_path):
    root = write_data(tmp_path / "origin", FILES)
    server = OriginServer(root).start()
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"]))
    home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
    home.data.mkdir(parents=True)
    yield repo, home, server
    server.stop()


def _declare(repo: StateRepo, server: OriginServer, path: str) -> None:
    repo.write("ds.yaml", dataset_yaml("m", http_source(server.url, list(FILES)), path=path))
    assert repo.lock().returncode == 0
    repo.commit()


def test_a_directory_symlink_inside_a_root_leading_out_of_it_is_refused(tmp_path, node):
    repo, home, server = node
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, home.data / "escape")
    _declare(repo, server, "escape/model")
    res = home.once()
    assert res.returncode != 0
    d = home.status()["datasets"]["m"]
    assert d["phase"] == "Failed"
    assert str(home.data / "escape" / "model") in d["error"] and str(home.data) in d["error"]
    assert "outside the allowed roots" in d["error"]
    assert list(outside.iterdir()) == []  # nothing written outside the root


def test_a_foreign_symlink_at_spec_path_is_never_replaced(tmp_path, node):
    repo, home, server = node
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.symlink(theirs, home.data / "model")
    _declare(repo, server, "model")
    res = home.once()
    assert res.returncode != 0
    d = home.status()["datasets"]["m"]
    assert d["phase"] == "Failed"
    assert str(home.data / "model") in d["error"] and "not in this node's store" in d["error"]
    assert os.readlink(home.data / "model") == str(theirs)  # left as it was


def test_a_symlink_the_store_made_is_switched_and_a_root_symlink_itself_is_fine(tmp_path, node):
    """An allowed root that is itself a symlink (resolved on both sides) is not an escape."""
    repo, home, server = node
    alias = tmp_path / "alias"
    os.symlink(home.data, alias)
    home.extra["allowedRoots"] = [str(alias)]
    home.write_config()
    _declare(repo, server, "model")
    res = home.once()
    assert res.returncode == 0, res.stderr
    assert (alias / "model" / "config.json").read_bytes() == FILES["config.json"]
    res = home.once()  # our own symlink is ours to keep or switch
    assert res.returncode == 0, res.stderr
