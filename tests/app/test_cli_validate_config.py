"""`validate --config P` (a node config) and placement warnings in `validate DIR` (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_cli_validate import EXAMPLE, ERROR_LINE, make_repo, run_cli

NODES = """\
apiVersion: syncbit/v1
kind: Node
metadata: {name: node-a, labels: {gpu: h100}}
spec: {peer: "127.0.0.1:6881", api: "127.0.0.1:7070"}
---
apiVersion: syncbit/v1
kind: Node
metadata: {name: node-b, labels: {gpu: h100}}
spec: {peer: "127.0.0.2:6881", api: "127.0.0.2:7070"}
---
apiVersion: syncbit/v1
kind: Node
metadata: {name: node-c, labels: {gpu: a100}}
spec: {peer: "127.0.0.3:6881", api: "127.0.0.3:7070"}
"""


def dataset(name: str, placement: str) -> str:
    return f"""\
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: {name}
spec:
  version: "1"
  source: {{file: {{path: data}}}}
  placement: {placement}
  path: datasets/{name}
"""


GOOD_CONFIG = """\
node: node-a
desiredState: state
allowedRoots: [/tmp/syncbit-test-data]
cache: {limit: 1GiB}
"""

# Line 5: a size that is not one; line 7: a key the schema does not know.
BAD_CONFIG = """\
node: node-a
desiredState: state
allowedRoots: [/tmp/syncbit-test-data]
cache:
  limit: lots
bandwidth: {download: 0}
colour: blue
"""


def test_good_node_config(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(GOOD_CONFIG)
    r = run_cli("validate", "--config", tmp_path / "config.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid node config (node node-a" in r.stdout
    assert r.stderr == ""


def test_example_node_configs_are_valid() -> None:
    for n in "abc":
        r = run_cli("validate", "--config", EXAMPLE.parent / f"node-{n}.yaml")
        assert r.returncode == 0, r.stdout + r.stderr


def test_bad_node_config_names_file_line_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BAD_CONFIG)
    r = run_cli("validate", "--config", cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    matches = [ERROR_LINE.match(line) for line in lines]
    assert lines and all(matches), lines
    by_field = {m["field"]: m for m in matches if m}
    assert Path(by_field["cache.limit"]["file"]) == cfg
    assert by_field["cache.limit"]["line"] == "5" and "lots" in by_field["cache.limit"]["message"]
    colour = [m for m in matches if m and "colour" in m.group(0)]
    assert colour and colour[0]["line"] == "7"
    assert f"{len(lines)} error(s)" in r.stderr


def test_config_syntax_error_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("node: node-a\ndesiredState: [state\n")
    r = run_cli("validate", "--config", cfg)
    assert r.returncode == 1 and ERROR_LINE.match(r.stdout.splitlines()[0]), r.stdout
    assert "(yaml)" in r.stdout
    r = run_cli("validate", "--config", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_config_and_state_repo_together(tmp_path: Path) -> None:
    make_repo(tmp_path / "state", {"nodes.yaml": NODES, "d.yaml": dataset("d", "{all: true}")})
    (tmp_path / "config.yaml").write_text(BAD_CONFIG)
    r = run_cli("validate", tmp_path / "state", "--config", tmp_path / "config.yaml")
    assert r.returncode == 1  # the state repo is valid, the config is not
    assert "valid (3 nodes, 1 datasets)" in r.stdout
    (tmp_path / "config.yaml").write_text(GOOD_CONFIG)
    r = run_cli("validate", tmp_path / "state", "--config", tmp_path / "config.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


WARNING = re.compile(r"^warning: (?P<file>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+): "
                     r"(?P<field>\S+): (?P<message>.+)$")


@pytest.mark.parametrize("placement, field, words", [
    ("{replicas: 3, selector: {gpu: h100}}", "spec.placement.replicas",
     ["replicas: 3", "2 eligible nodes", "{gpu: h100}"]),
    ("{replicas: 4}", "spec.placement.replicas", ["replicas: 4", "3 eligible nodes"]),
    ("{nodes: [node-a, node-c], selector: {gpu: h100}}", "spec.placement.selector",
     ["ignored", "node-c"]),
    ("{all: true, selector: {gpu: b200}}", "spec.placement.selector", ["no Node", "b200"]),
])
def test_unsatisfiable_placement_is_a_warning(tmp_path: Path, placement: str, field: str,
                                              words: list[str]) -> None:
    root = make_repo(tmp_path / "state", {"nodes.yaml": NODES,
                                          "ds/ok.yaml": dataset("ok", "{replicas: 2}"),
                                          "ds/x.yaml": "# a comment first\n" + dataset("x", placement)})
    r = run_cli("validate", root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid (3 nodes, 2 datasets)" in r.stdout and "warning" not in r.stdout
    warnings = [WARNING.match(line) for line in r.stderr.splitlines()]
    assert len(warnings) == 1 and warnings[0], r.stderr
    w = warnings[0]
    assert (w["file"], w["line"], w["field"]) == ("ds/x.yaml", "2", field)
    assert "dataset x" in w["message"]
    for word in words:
        assert word in w["message"], w["message"]


def test_nodes_entry_naming_no_node_is_an_error(tmp_path: Path) -> None:
    """Stricter than a warning, and so already before issue 15: a typo in `nodes:` rejects the
    revision (file, line, field), so no node silently drops the dataset."""
    root = make_repo(tmp_path / "state", {"nodes.yaml": NODES,
                                          "x.yaml": dataset("x", "{nodes: [node-a, gpu-99]}")})
    r = run_cli("validate", root)
    assert r.returncode == 1
    [m] = [ERROR_LINE.match(line) for line in r.stdout.splitlines()]
    assert m and m["field"] == "spec.placement.nodes[1]" and "gpu-99" in m["message"]
