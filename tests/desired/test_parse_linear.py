"""`parse_documents` with one parser per file (issue 11 item 10): many documents load right,
and positions are exactly those of the former parser-per-document implementation.

No timing is asserted; `bench`-style numbers are in the issue note.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings, strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.desired.loader import _split_documents, parse_documents
from reconciler.desired.validate import validate_documents
from reconciler.model.desired import DesiredState

pytestmark = pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")


def nodes_text(n: int) -> str:
    return "".join(
        f"---\napiVersion: syncbit/v1\nkind: Node\nmetadata:\n  name: node-{i}\n"
        f"  labels: {{gpu: h100}}\nspec:\n  peer: \"10.0.{i // 250}.{i % 250}:6881\"\n"
        f"  api: \"10.0.{i // 250}.{i % 250}:7070\"\n"
        for i in range(n))


def test_two_thousand_documents_in_one_file() -> None:
    docs, errors = parse_documents(nodes_text(2000), "nodes.yaml")
    assert errors == []
    assert len(docs) == 2000
    assert [d.index for d in docs] == list(range(2000))
    assert [d.data["metadata"]["name"] for d in docs] == [f"node-{i}" for i in range(2000)]
    assert [(d.line, d.col) for d in docs] == [(2 + 9 * i, 1) for i in range(2000)]
    last = docs[-1].data
    assert last["spec"].lc.key("api") == (9 * 1999 + 8, 2)  # 0-based, as ruamel keeps them
    state = validate_documents(docs, {}, "r")
    assert isinstance(state, DesiredState)
    assert len(state.nodes) == 2000


def test_a_syntax_error_among_many_documents_keeps_its_line() -> None:
    text = nodes_text(500) + "---\nkind: [unclosed\n" + nodes_text(1).replace("node-0", "tail")
    docs, errors = parse_documents(text, "nodes.yaml")
    assert len(docs) == 501 and docs[-1].data["metadata"]["name"] == "tail"
    [error] = errors
    assert error.line == 500 * 9 + 3  # the line after the unclosed flow sequence's start


def _reference(text: str, file: str) -> tuple[list[tuple[int, int, Any]], list[tuple[int, int]]]:
    """The former implementation: a new parser per chunk fed `first_line` newlines first."""
    docs: list[tuple[int, int, Any]] = []
    errors: list[tuple[int, int]] = []
    for first_line, chunk in _split_documents(text):
        yaml = YAML(typ="rt", pure=True)
        yaml.allow_duplicate_keys = False
        try:
            loaded = list(yaml.load_all("\n" * first_line + chunk))
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            errors.append((mark.line + 1, mark.column + 1) if mark else (first_line + 1, 1))
            continue
        except (ValueError, TypeError, OverflowError, RecursionError):
            errors.append((first_line + 1, 1))
            continue
        for data in loaded:
            if data is None:
                continue
            lc = getattr(data, "lc", None)
            line = lc.line + 1 if lc is not None and lc.line is not None else first_line + 1
            col = lc.col + 1 if lc is not None and lc.col is not None else 1
            docs.append((line, col, _positions(data)))
    return docs, errors


def _positions(data: Any, depth: int = 0) -> Any:
    """Every `.lc` position in a loaded tree (keys and items), for comparison."""
    if depth > 20:
        return None
    lc = getattr(data, "lc", None)
    if isinstance(data, dict):
        return (lc.line, lc.col, sorted((str(k), tuple(v)) for k, v in lc.data.items()),
                [_positions(v, depth + 1) for v in data.values()])
    if isinstance(data, list):
        return (lc.line, lc.col, sorted(tuple(v) for v in lc.data.values()),
                [_positions(v, depth + 1) for v in data])
    return repr(data)


LINES = st.sampled_from([
    "---", "--- ", "--- {a: 1}", "...", "a: 1", "b: [1, 2", "  c: d", "- x", "- {y: z}",
    "# comment", "", "%YAML 1.2", "k: &anc v", "r: *anc", "q: &other [1]", "key: 'quoted", "'", "t: |", "  text",
    "\ttab: 1", "dup: 1", "dup: 2", "? complex", ": value", "s: 2001-12-14t21:59:43.10-05:00",
    "x: !!binary aGVsbG8=", "n: ~", "a: b: c", "- - nested", "  - deeper", "---\r",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=30), st.sampled_from(["\n", "\r\n"]))
@example(lines=["---", "...", "..."], newline="\n")  # libyaml: nothing; ruamel: an error
def test_positions_match_the_parser_per_document_implementation(lines: list[str],
                                                                newline: str) -> None:
    text = newline.join(lines) + newline
    docs, errors = parse_documents(text, "f.yaml")
    ref_docs, ref_errors = _reference(text, "f.yaml")
    assert [(d.line, d.col, _positions(d.data)) for d in docs] == ref_docs
    assert [(e.line, e.col) for e in errors] == ref_errors


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a: 1", "b:\x0c 2", "# c\x85d", "# e\u2028f", "---", "- g"]),
                max_size=20))
def test_line_numbers_count_only_yaml_line_breaks(lines: list[str]) -> None:
    """Form feeds, NEL and LINE SEPARATOR are not line breaks for ruamel (YAML 1.2); when the
    whole file parses, each document's position is the one a whole-file parse gives."""
    text = "\n".join(lines) + "\n"
    try:
        whole = [d for d in YAML(typ="rt", pure=True).load_all(text) if d is not None]
    except (YAMLError, ValueError):
        return
    docs, errors = parse_documents(text, "f.yaml")
    assert errors == []
    assert len(docs) == len(whole)
    assert [(d.line, d.col) for d in docs if hasattr(d.data, "lc")] == [
        (w.lc.line + 1, w.lc.col + 1) for w in whole if hasattr(w, "lc")]
