"""Parsed documents and per-document validation are remembered across loads (issue 13): the
answer must be exactly what loading from scratch gives, and any edit must be seen."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reconciler.desired.loader import DocumentCache, load_documents
from reconciler.desired.validate import ValidationCache, load_desired_state, validate_documents
from reconciler.desired.loader import read_locks
from reconciler.model.desired import DesiredState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "desired-state"

NODES = "".join(
    f"---\napiVersion: syncbit/v1\nkind: Node\nmetadata:\n  name: n{i}\n  labels: {{gpu: g{i % 3}}}\n"
    f"spec:\n  peer: \"10.0.0.{i + 1}:6881\"\n  api: \"10.0.0.{i + 1}:7070\"\n" for i in range(6))


def dataset_doc(name: str, placement: str = "replicas: 2", version: str = "v1") -> str:
    return (f"---\napiVersion: syncbit/v1\nkind: Dataset\nmetadata:\n  name: {name}\n"
            f"spec:\n  version: \"{version}\"\n  source:\n    s3:\n      bucket: b\n"
            f"  placement:\n    {placement}\n  path: datasets/{name}\n")


def repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nodes.yaml").write_text(NODES)
    (root / "a.yaml").write_text(dataset_doc("alpha") + dataset_doc("beta", "all: true"))
    (root / "b.yaml").write_text(dataset_doc("gamma", "{replicas: 1, selector: {gpu: g1}}"))
    return root


def fresh(root: Path, revision: str = "r") -> DesiredState | list:
    docs = load_documents(root, cache=None)
    return validate_documents(docs.documents, read_locks(root.resolve(), docs.documents),
                              revision, docs.errors, cache=None)


def cached(root: Path, dc: DocumentCache, vc: ValidationCache, revision: str = "r"
           ) -> DesiredState | list:
    docs = load_documents(root, cache=dc)
    return validate_documents(docs.documents, read_locks(root.resolve(), docs.documents),
                              revision, docs.errors, cache=vc)


def _docs(result) -> list[tuple]:
    return [(d.file, d.index, d.line, d.col, d.data) for d in result.documents]


def test_cached_load_equals_uncached_and_reuses_unchanged_files(tmp_path: Path) -> None:
    root = repo(tmp_path / "repo")
    dc = DocumentCache()
    first = load_documents(root, cache=dc)
    assert (dc.hits, dc.misses) == (0, 3)
    second = load_documents(root, cache=dc)
    assert (dc.hits, dc.misses) == (3, 3)
    assert _docs(first) == _docs(second) == _docs(load_documents(root, cache=None))
    assert second.documents[0] is first.documents[0]  # not parsed again


def test_an_edit_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    root = repo(tmp_path / "repo")
    dc, vc = DocumentCache(), ValidationCache()
    before = cached(root, dc, vc)
    assert isinstance(before, DesiredState) and before.datasets["gamma"].version == "v1"
    path = root / "b.yaml"
    st = path.stat()
    path.write_text(path.read_text().replace('"v1"', '"v2"'))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert path.stat().st_size == st.st_size
    after = cached(root, dc, vc)
    assert isinstance(after, DesiredState) and after.datasets["gamma"].version == "v2"
    assert after == fresh(root)


def test_cached_validation_equals_uncached_through_a_series_of_edits(tmp_path: Path) -> None:
    root = repo(tmp_path / "repo")
    dc, vc = DocumentCache(), ValidationCache()
    edits = [
        lambda: None,
        lambda: (root / "a.yaml").write_text(dataset_doc("alpha", "replicas: many")),  # schema
        lambda: (root / "c.yaml").write_text(dataset_doc("alpha")),  # duplicate name
        lambda: (root / "c.yaml").write_text(dataset_doc("delta", "nodes: [n1, nope]")),  # ref
        lambda: (root / "c.yaml").write_text("a: [unclosed\n"),  # syntax
        lambda: (root / "c.yaml").unlink(),
        lambda: (root / "a.yaml").write_text(dataset_doc("alpha") + dataset_doc("beta")),
        lambda: (root / "nodes.yaml").write_text(NODES.replace("name: n1\n", "name: m1\n")),
        lambda: (root / "b.yaml").write_text(dataset_doc("gamma", "nodes: [n1]")),  # n1 gone
        lambda: (root / "nodes.yaml").write_text(NODES),
        lambda: (root / "b.yaml").unlink(),
    ]
    for i, edit in enumerate(edits):
        edit()
        got, want = cached(root, dc, vc, f"r{i}"), fresh(root, f"r{i}")
        assert got == want, f"edit {i}"
        assert cached(root, dc, vc, f"r{i}") == want, f"edit {i}, again"


def test_examples_cached_and_uncached_agree(tmp_path: Path) -> None:
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root)
    want = fresh(root)
    assert isinstance(want, DesiredState) and want.datasets
    dc, vc = DocumentCache(), ValidationCache()
    assert cached(root, dc, vc) == want
    assert cached(root, dc, vc) == want
    assert load_desired_state(root, "r") == want  # the process-wide default caches


def test_a_file_that_becomes_unreadable_is_an_error_not_a_cache_hit(tmp_path: Path) -> None:
    root = repo(tmp_path / "repo")
    dc, vc = DocumentCache(), ValidationCache()
    assert isinstance(cached(root, dc, vc), DesiredState)
    (root / "b.yaml").unlink()
    (root / "b.yaml").mkdir()  # a directory named .yaml: not read, not remembered
    (root / "b.yaml" / "x.yaml").write_text("a: [unclosed\n")
    got = cached(root, dc, vc)
    assert isinstance(got, list) and got == fresh(root)


def test_the_cache_stays_bounded(tmp_path: Path) -> None:
    root = repo(tmp_path / "repo")
    dc, vc = DocumentCache(), ValidationCache()
    for i in range(20):  # bounded: 20 edits
        (root / "b.yaml").write_text(dataset_doc("gamma", version=f"v{i}"))
        assert isinstance(cached(root, dc, vc), DesiredState)
    assert len(dc._entries) <= 2 * 3
    assert len(vc._entries) <= 2 * 9
