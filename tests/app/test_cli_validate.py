"""`syncbit-reconcile validate DIR` (DESIGN §3 validation, §7): for a state repo's own CI.

Exit 0 valid, 1 invalid (one `FILE:LINE:COL: FIELD: MESSAGE` line per error, FILE relative to
DIR), 2 when DIR is not a directory; never a traceback, whatever the files hold.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "desired-state"

ERROR_LINE = re.compile(r"^(?P<file>[^:\s][^:]*):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): "
                        r"(?P<field>\S+): (?P<message>\S.*)$")

NODES = """\
# yaml-language-server: $schema=../schemas/node.schema.json
apiVersion: syncbit/v1
kind: Node
metadata:
  name: node-a
spec:
  peer: "127.0.0.1:6881"
  api: "127.0.0.1:7070"
"""

GOOD_DATASET = """\
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: good
spec:
  version: "1"
  source:
    http:
      baseUrl: https://example.com/x
      files: [a.bin]
      headers:
        Authorization: "Bearer ${ORIGIN_TOKEN}"
  placement:
    all: true
  path: datasets/good
"""

# Line numbers matter below: the expected positions are those of the offending keys/values.
BAD_SCHEMA = """\
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: bad-schema
spec:
  version: "1"
  colour: blue
  source:
    file:
      path: data
  placement:
    replicas: many
  path: datasets/bad
"""

BAD_SYNTAX = """\
apiVersion: syncbit/v1
kind: Node
metadata:
  name: node-b
spec:
  peer: "127.0.0.2:6881
  api: 127.0.0.2:7070
"""


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def make_repo(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / rel).write_bytes(content)
        else:
            (root / rel).write_text(content)
    return root


def error_lines(stdout: str) -> list[re.Match[str]]:
    lines = stdout.splitlines()
    assert lines, "no error lines printed"
    matches = [ERROR_LINE.match(line) for line in lines]
    bad = [line for line, m in zip(lines, matches) if m is None]
    assert not bad, f"lines not in FILE:LINE:COL: FIELD: MESSAGE form: {bad}"
    return matches  # type: ignore[return-value]


def test_example_state_repo_is_valid() -> None:
    r = run_cli("validate", EXAMPLE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid (3 nodes, 7 datasets)" in r.stdout
    assert "Traceback" not in r.stderr


def test_example_copy_outside_git_is_valid_with_content_revision(tmp_path: Path) -> None:
    copy = tmp_path / "state"
    shutil.copytree(EXAMPLE, copy)
    r = run_cli("validate", copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"at revision sha256:[0-9a-f]{64}$", r.stdout.strip()), r.stdout


def test_valid_repo_with_env_header_needs_no_env(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"nodes.yaml": NODES, "ds/good.yaml": GOOD_DATASET})
    env = {k: v for k, v in os.environ.items() if k != "ORIGIN_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(root)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_broken_files_one_line_per_error(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {
        "nodes.yaml": NODES,
        "ds/good.yaml": GOOD_DATASET,
        "ds/bad-schema.yaml": BAD_SCHEMA,
        "more/nodes-b.yml": BAD_SYNTAX,
        ".git/ignored.yaml": "this: [is not even: valid",  # hidden: never read
    })
    r = run_cli("validate", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = error_lines(r.stdout)
    assert {m["file"] for m in errors} == {"ds/bad-schema.yaml", "more/nodes-b.yml"}
    for m in errors:
        assert not Path(m["file"]).is_absolute() and str(tmp_path) not in m.group(0)
        assert (root / m["file"]).is_file()
    by_field = {(m["file"], m["field"]): m for m in errors}
    # The unknown key, at the key.
    colour = [m for m in errors if m["file"] == "ds/bad-schema.yaml" and "colour" in m.group(0)]
    assert len(colour) == 1 and (colour[0]["line"], colour[0]["col"]) == ("7", "3")
    # The wrong type, at the value.
    replicas = by_field[("ds/bad-schema.yaml", "spec.placement.replicas")]
    assert (replicas["line"], replicas["col"]) == ("12", "15")
    # The syntax error names the file and a line inside it.
    syntax = [m for m in errors if m["file"] == "more/nodes-b.yml"]
    assert len(syntax) == 1 and syntax[0]["field"] == "(yaml)"
    assert 6 <= int(syntax[0]["line"]) <= 8
    # Sorted by file, line, column; the count is reported.
    keys = [(m["file"], int(m["line"]), int(m["col"])) for m in errors]
    assert keys == sorted(keys)
    assert f"{len(errors)} error(s)" in r.stderr


def test_file_is_relative_to_dir_from_any_working_directory(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "a" / "repo", {"nodes.yaml": NODES,
                                               "sub/bad.yaml": BAD_SCHEMA})
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    r = run_cli("validate", os.path.relpath(root, elsewhere), cwd=elsewhere)
    assert r.returncode == 1
    assert {m["file"] for m in error_lines(r.stdout)} == {"sub/bad.yaml"}


@pytest.mark.parametrize("what", ["missing", "file"])
def test_dir_that_is_not_a_directory(tmp_path: Path, what: str) -> None:
    target = tmp_path / "nope"
    if what == "file":
        target.write_text(NODES)
    r = run_cli("validate", target)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_usage_error_exits_2() -> None:
    r = run_cli("validate")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


BROKEN = {
    "invalid-yaml": {"x.yaml": "apiVersion: syncbit/v1\nkind: [Node\nmetadata: }\n"},
    "tab-indent": {"x.yaml": "apiVersion: syncbit/v1\nkind: Node\nmetadata:\n\tname: a\n"},
    "binary-garbage": {"x.yaml": bytes(range(256)) * 8 + os.urandom(2048)},
    "not-utf8": {"x.yaml": "kind: N\u00f6de\n".encode("latin-1")},
    "deep-nesting": {"x.yaml": "[" * 20000},
    "alias-loop": {"x.yaml": "&a [*a, *a]\n"},
    "bad-tag": {"x.yaml": "a: !!binary 'not base64!'\nb: !!timestamp 2026-99-99\n"},
    "scalar-document": {"x.yaml": "just a string\n---\n42\n---\n- a list\n"},
    "empty-directory": {},
    "empty-file": {"x.yaml": ""},
    "only-comments": {"x.yaml": "# nothing here\n---\n...\n"},
    "yml-directory": {"dir.yaml/nodes.yaml": NODES, "dir.yaml/more.yml": b"\xff\xfe\x00"},
    "bad-lock": {"nodes.yaml": NODES,
                 "d.yaml": GOOD_DATASET + "  lock: locks/good.torrent\n",
                 "locks/good.torrent": b"d4:infod6:lengthi-1eee"},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_no_traceback_on_broken_content(tmp_path: Path, case: str) -> None:
    root = make_repo(tmp_path / "repo", BROKEN[case])
    r = run_cli("validate", root)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, r.stdout + r.stderr
    for m in error_lines(r.stdout):
        assert m["file"] == "." or (root / m["file"]).exists()


def test_control_characters_give_one_line_per_error(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"x.yaml": "kind: Node\x00\x07\n"})
    r = run_cli("validate", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    error_lines(r.stdout)


def test_the_remote_source_examples_validate_and_are_placed_nowhere() -> None:
    from reconciler.desired.validate import load_desired_state
    from reconciler.core.placement import place

    state = load_desired_state(EXAMPLE, "x")
    remote = {n: d for n, d in state.datasets.items() if n.startswith("weights-")}
    assert {d.source.type for d in remote.values()} == {"http", "s3", "hf"}
    assert any(d.mirrors for d in remote.values())
    assert all(d.lock is None for d in remote.values())  # pinned by the first node to read them
    placed = place(state)
    assert all(placed[n].nodes == () for n in remote), {n: placed[n] for n in remote}


def test_the_publishing_example_validates_with_the_example_inventory(tmp_path: Path) -> None:
    import shutil

    from reconciler.core.placement import place
    from reconciler.desired.validate import load_desired_state
    from reconciler.model.desired import NodeSource

    shutil.copy(EXAMPLE / "nodes.yaml", tmp_path / "nodes.yaml")
    shutil.copy(EXAMPLE.parent / "publishing" / "ckpt.yaml", tmp_path / "ckpt.yaml")
    state = load_desired_state(tmp_path, "x")
    assert not isinstance(state, list), "\n".join(map(str, state))
    assert state.datasets["ckpt"].source == NodeSource("node-a", "/data/ckpt/step-1200")
    assert place(state)["ckpt"].nodes[0] == "node-a"
