"""Fuzzing the desired-state loader and validator (issue 11 item 10): whatever the bytes of
the files, the result is a model or a list of `ValidationError`s, never an exception.

Bounded: few examples, no deadline (a 2-core CI machine), each test well under 10 s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reconciler.desired.loader import parse_documents, read_locks
from reconciler.desired.validate import load_desired_state, validate_documents
from reconciler.model.desired import DesiredState, ValidationError

pytestmark = pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")

FRAGMENTS = [
    "apiVersion: syncbit/v1", "kind: Node", "kind: Dataset", "kind: [Node]", "metadata:",
    "  name: gpu-01", "  name: x", "  name: {a: 1}", "  labels: {gpu: h100}", "  labels: [1]",
    "spec:", "  peer: \"10.0.0.1:6881\"", "  api: \"10.0.0.1:7070\"", "  peer: 99999",
    "  capacity: 2TiB", "  capacity: -1", "  capacity: 1e400", "  cordoned: yes",
    "  version: \"1\"", "  version: 2001-12-14", "  source:", "    http:",
    "      baseUrl: https://h/x/", "      files: [a, ../b, /c]", "      urls: [\"http://h/\"]",
    "      headers: {A: \"${X\"}", "    file: {path: ../../etc}", "    s3: {bucket: b}",
    "    hf: {repo: a/b, include: [\"*\"]}", "  mirrors: [{http: {urls: []}}]",
    "  placement:", "    nodes: [gpu-01, nope]", "    replicas: 0", "    replicas: 1e3",
    "    all: true", "    selector: {matchExpressions: [{key: a, operator: In}]}",
    "  path: models/x", "  path: /abs", "  lock: locks/x.torrent", "  lock: ../x",
    "  lock: [1]", "  priority: urgent", "  keepVersions: -1", "  split: {copies: 0}",
    "---", "...", "- item", "? [a, b]", ": c", "&a {x: *a}", "*a", "!!binary aGk=",
    "!custom {x: 1}", "%YAML 1.1", "%TAG ! tag:x,2000:", "\t", "'", "\"\\x\"", "<<: *a",
    "<<: {a: 1}", "k: !!timestamp 9999-99-99", "k: !!int 0x", "k: !!float nan",
    "k: 0o777777777777777777777777777777777", "k: 1_000", "k: =", "k: @", "# comment",
    "", " ", "é: ü", "k: \u2028", "k: \x85", "{", "[", "}", "]", ",", "k: |", "k: >-",
    "  folded", "k: !!set {a, b}", "k: !!omap [a: 1]", "k: !!pairs [a: 1]",
]

yaml_ish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("\n".join)
raw_bytes = st.binary(max_size=400)


def check(result: DesiredState | list[ValidationError]) -> None:
    if isinstance(result, DesiredState):
        return
    assert result, "a rejection lists at least one error"
    for e in result:
        assert isinstance(e, ValidationError)
        assert e.file and e.line >= 1 and e.col >= 1 and e.field and e.message
        assert "\n" not in str(e), "validate prints one error per line"


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.YAMLWarning")  # floats like 1e400
@settings(max_examples=250, deadline=None)
@given(yaml_ish)
def test_parse_and_validate_yaml_ish(text: str) -> None:
    docs, errors = parse_documents(text, "f.yaml")
    check(validate_documents(docs, {}, "r", errors))
    check(validate_documents(docs, {}, "r", errors, require_locks=False))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_parse_and_validate_any_text(text: str) -> None:
    docs, errors = parse_documents(text, "f.yaml")
    check(validate_documents(docs, {}, "r", errors))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.dictionaries(st.sampled_from(["a.yaml", "sub/b.yml", "locks/x.torrent",
                                              "c.YAML", "d.txt"]),
                             st.one_of(raw_bytes, yaml_ish.map(str.encode)), max_size=4))
def test_load_desired_state_on_random_files(files: dict[str, bytes]) -> None:
    root = Path(tempfile.mkdtemp(prefix="syncbit-fuzz-"))
    try:
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        check(load_desired_state(root, "r"))
        check(load_desired_state(root, "r", require_locks=False))
    finally:
        shutil.rmtree(root)


def test_lock_bytes_reach_validation_from_a_real_file(tmp_path: Path) -> None:
    """The fuzz above writes `locks/x.torrent`; make sure a document naming it reads it."""
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "x.torrent").write_bytes(b"d4:infod6:lengthi-1eee")
    docs, _ = parse_documents("kind: Dataset\nspec: {lock: locks/x.torrent}\n", "a.yaml")
    assert read_locks(tmp_path, docs)["locks/x.torrent"].data == b"d4:infod6:lengthi-1eee"
