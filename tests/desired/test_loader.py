"""The YAML layer: files found, documents split, positions kept, syntax errors reported."""

import os
import textwrap
from pathlib import Path

import pytest

from reconciler.desired.loader import load_documents, parse_documents


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_reads_yaml_and_yml_recursively_skipping_hidden(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "kind: A\n")
    write(tmp_path, "sub/deeper/b.yml", "kind: B\n")
    write(tmp_path, "c.YAML", "kind: C\n")
    write(tmp_path, "notes.txt", "kind: not yaml\n")
    write(tmp_path, ".git/config.yaml", "kind: hidden dir\n")
    write(tmp_path, "sub/.hidden.yaml", "kind: hidden file\n")
    write(tmp_path, ".github/workflows/ci.yml", "kind: hidden dir\n")
    result = load_documents(tmp_path)
    assert result.errors == []
    assert result.files == ["a.yaml", "c.YAML", "sub/deeper/b.yml"]
    assert [(d.file, d.data["kind"]) for d in result.documents] == [
        ("a.yaml", "A"), ("c.YAML", "C"), ("sub/deeper/b.yml", "B")]


def test_root_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "rev-abc"
    write(real, "a.yaml", "kind: A\n")
    link = tmp_path / "current"
    link.symlink_to(real)
    result = load_documents(link)
    assert [d.file for d in result.documents] == ["a.yaml"]


def test_symlinked_directories_inside_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "x.yaml", "kind: X\n")
    root = tmp_path / "root"
    write(root, "a.yaml", "kind: A\n")
    (root / "linked").symlink_to(outside)
    assert [d.file for d in load_documents(root).documents] == ["a.yaml"]


def test_symlinked_file_pointing_outside_is_an_error(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside.yaml", "kind: X\n")
    root = tmp_path / "root"
    write(root, "a.yaml", "kind: A\n")
    (root / "b.yaml").symlink_to(outside)
    result = load_documents(root)
    assert [d.file for d in result.documents] == ["a.yaml"]
    assert [(e.file, e.field, e.message) for e in result.errors] == [
        ("b.yaml", "(file)", "symlink points outside the state repo")]


def test_many_documents_per_file_with_positions(tmp_path: Path) -> None:
    write(tmp_path, "multi.yaml", """
        # leading comment
        kind: First
        ---
        ---
        # only a comment: an empty document
        ---
        kind: Second
        nested:
          key: value
        --- {kind: Third}
        ...
        ---
        """)
    docs = load_documents(tmp_path).documents
    assert [d.data["kind"] for d in docs] == ["First", "Second", "Third"]
    assert [(d.line, d.col) for d in docs] == [(2, 1), (7, 1), (10, 5)]
    assert [d.index for d in docs] == [0, 1, 2]
    second = docs[1].data
    assert second["nested"].lc.key("key") == (8, 2)  # 0-based inside ruamel


def test_yaml_syntax_error_has_position_and_other_documents_survive(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", """
        kind: Good
        ---
        kind: Bad
        spec:
          files: [a, b
          other: 1
        ---
        kind: AlsoGood
        """)
    result = load_documents(tmp_path)
    assert [d.data["kind"] for d in result.documents] == ["Good", "AlsoGood"]
    [error] = result.errors
    assert (error.file, error.line, error.field) == ("bad.yaml", 6, "(yaml)")
    assert error.message.startswith("invalid YAML: ")
    assert "flow sequence" in error.message
    assert "line 5" in error.message


def test_mapping_values_not_allowed(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "kind: a: b\n")
    [error] = load_documents(tmp_path).errors
    assert (error.line, error.col, error.field) == (1, 8, "(yaml)")
    assert "mapping values are not allowed here" in error.message


def test_duplicate_key_is_an_error_at_the_second_key(tmp_path: Path) -> None:
    write(tmp_path, "dup.yaml", """
        kind: Dataset
        spec:
          version: "1"
          version: "2"
        """)
    result = load_documents(tmp_path)
    assert result.documents == []
    [error] = result.errors
    assert (error.file, error.line, error.col, error.field) == ("dup.yaml", 4, 3, "(yaml)")
    assert error.message == "duplicate key 'version': each key may appear only once in a mapping"


def test_tab_indentation_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "tab.yaml").write_text("kind: A\nspec:\n\tx: 1\n")
    [error] = load_documents(tmp_path).errors
    assert (error.line, error.col) == (3, 1)
    assert "'\\t'" in error.message


def test_not_utf8_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("kind: A\nname: caf\xe9\n".encode("latin-1"))
    [error] = load_documents(tmp_path).errors
    assert (error.file, error.line, error.col, error.field) == ("latin1.yaml", 2, 10, "(file)")
    assert "not valid UTF-8" in error.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfkind: A\n")
    result = load_documents(tmp_path)
    assert result.errors == []
    assert result.documents[0].data["kind"] == "A"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.yaml", "kind: A\n")
    path.chmod(0)
    try:
        [error] = load_documents(tmp_path).errors
    finally:
        path.chmod(0o644)
    assert (error.file, error.field) == ("secret.yaml", "(file)")
    assert "cannot read file" in error.message


def test_unreadable_file_is_an_error_even_as_root(tmp_path: Path) -> None:
    # A dangling symlink fails to read the way a permission problem does, even for root.
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing-target.yaml")
    [error] = load_documents(tmp_path).errors
    assert (error.file, error.line, error.col, error.field) == ("dangling.yaml", 1, 1, "(file)")
    assert error.message.startswith("cannot read file: ")


def test_missing_root(tmp_path: Path) -> None:
    [error] = load_documents(tmp_path / "nope").errors
    assert error.field == "(file)"
    assert "does not exist" in error.message


def test_document_markers_inside_text_are_not_split() -> None:
    text = textwrap.dedent("""
        kind: A
        note: |
          ---- not a marker (four dashes)
          --- indented, not a marker
        ---
        kind: B
        """).lstrip("\n")
    docs, errors = parse_documents(text, "x.yaml")
    assert errors == []
    assert [d.data["kind"] for d in docs] == ["A", "B"]
    assert docs[0].data["note"].startswith("---- not a marker")


def test_directive_before_document() -> None:
    docs, errors = parse_documents("%YAML 1.2\n---\nkind: A\n", "x.yaml")
    assert errors == []
    assert [(d.data["kind"], d.line) for d in docs] == [("A", 3)]
