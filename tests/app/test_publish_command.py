"""`syncbit-reconcile publish`: the dataset's YAML edited (comments kept) or created, never
committed; every refusal leaves the file as it was."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.app.cli import main
from reconciler.desired.validate import load_desired_state
from reconciler.model.desired import DesiredState, NodeSource

NODES = """\
apiVersion: syncbit/v1
kind: Node
metadata: {name: trainer}
spec: {peer: "127.0.0.1:6881", api: "127.0.0.1:7070"}
---
apiVersion: syncbit/v1
kind: Node
metadata: {name: eval-1}
spec: {peer: "127.0.0.2:6881", api: "127.0.0.2:7070"}
"""

CKPT = """\
# The checkpoint the evaluators score.
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: ckpt  # one name for every step
spec:
  version: "step-1100"   # bumped by the training loop
  source:
    node:
      name: trainer
      path: {old}
  placement: {all: true}
  path: ckpt/latest
  lock: locks/ckpt.torrent
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    (root / "nodes.yaml").write_text(NODES)
    (tmp_path / "step-1100").mkdir()
    (tmp_path / "step-1200").mkdir()
    (root / "ckpt.yaml").write_text(CKPT.replace("{old}", str(tmp_path / "step-1100")))
    return root


def state(root: Path) -> DesiredState:
    s = load_desired_state(root, "t", require_locks=False)
    assert isinstance(s, DesiredState), s
    return s


def test_publish_sets_version_and_path_keeping_comments(repo: Path, capsys) -> None:
    new = repo.parent / "step-1200"
    assert main(["publish", "ckpt", str(new), "--version", "step-1200", "--repo", str(repo)]) == 0
    text = (repo / "ckpt.yaml").read_text()
    for comment in ("# The checkpoint the evaluators score.", "# one name for every step",
                    "# bumped by the training loop"):
        assert comment in text, text
    assert 'version: "step-1200"' in text  # quoting kept
    assert "lock:" not in text  # it pinned the previous version's bytes
    d = state(repo).datasets["ckpt"]
    assert (d.version, d.source) == ("step-1200", NodeSource("trainer", str(new)))
    out = capsys.readouterr().out
    assert "step-1100 -> step-1200" in out and "spec.lock removed" in out and "commit" in out


def test_publish_makes_a_relative_path_absolute(repo: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo.parent)
    assert main(["publish", "ckpt", "step-1200", "--version", "s1200", "--repo", str(repo)]) == 0
    assert state(repo).datasets["ckpt"].source == NodeSource("trainer",
                                                             str(repo.parent / "step-1200"))


@pytest.mark.parametrize("args, message", [
    (["ckpt", "{tmp}/step-1200", "--version", "step-1100"],
     "already at version step-1100: a published version is immutable"),
    (["ckpt", "{tmp}/nowhere", "--version", "v2"], "nowhere: no such file or directory"),
    (["other", "{tmp}/step-1200", "--version", "v2"],
     "no dataset other in {repo}; to create it, give --node NAME"),
    (["ckpt", "{tmp}/step-1200", "--version", "v2", "--node", "gpu-99"], "unknown node gpu-99"),
])
def test_refusals_leave_the_file_as_it_was(repo: Path, capsys, args: list[str],
                                           message: str) -> None:
    before = (repo / "ckpt.yaml").read_text()
    argv = [a.format(tmp=repo.parent) for a in args]
    assert main(["publish", *argv, "--repo", str(repo)]) == 1
    assert message.format(repo=repo) in capsys.readouterr().err
    assert (repo / "ckpt.yaml").read_text() == before
    assert sorted(p.name for p in repo.iterdir()) == ["ckpt.yaml", "nodes.yaml"]


def test_a_dataset_with_another_source_is_not_edited(repo: Path, capsys) -> None:
    (repo / "ckpt.yaml").write_text(textwrap.dedent("""\
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: ckpt}
        spec:
          version: "1"
          source: {http: {urls: ["http://127.0.0.1:1/x.bin"]}}
          placement: {all: true}
          path: x
        """))
    assert main(["publish", "ckpt", str(repo.parent / "step-1200"), "--version", "2",
                 "--repo", str(repo)]) == 1
    assert "has a http source" in capsys.readouterr().err


def test_publish_creates_a_new_dataset_with_node(repo: Path) -> None:
    new = repo.parent / "step-1200"
    assert main(["publish", "best", str(new), "--version", "s1200", "--node", "trainer",
                 "--repo", str(repo)]) == 0
    d = state(repo).datasets["best"]
    assert (d.version, d.source, d.path) == ("s1200", NodeSource("trainer", str(new)), "best")
    assert (repo / "best.yaml").read_text().startswith("# Written by syncbit-reconcile publish")


def test_not_a_directory_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["publish", "ckpt", str(tmp_path), "--version", "2",
                 "--repo", str(tmp_path / "none")]) == 1
    assert "not a directory" in capsys.readouterr().err
