"""desired.fastyaml: whenever the libyaml path answers, it is exactly what ruamel's round trip
gives (values, their kinds, every position); everything else it leaves to ruamel."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from ruamel.yaml import YAML

from reconciler.desired.fastyaml import compose_chunk
from reconciler.desired.loader import parse_documents

pytestmark = [pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning"),
              pytest.mark.filterwarnings("ignore::ruamel.yaml.error.YAMLWarning")]


def _ruamel(text: str) -> list[Any] | None:
    try:
        return [d for d in YAML(typ="rt", pure=True).load_all(text) if d is not None]
    except Exception:  # noqa: BLE001 - any rejection: the fast path must not answer
        return None


def _shape(data: Any) -> Any:
    """Values, their plain kinds and every position, comparable across the two loaders."""
    if isinstance(data, dict):
        lc = data.lc
        return ("map", lc.line, lc.col, [(k, tuple(lc.data[k]), _shape(v)) for k, v in data.items()])
    if isinstance(data, list):
        lc = data.lc
        return ("seq", lc.line, lc.col, [(tuple(lc.data[i]), _shape(v)) for i, v in enumerate(data)])
    kind = next(t for t in (bool, int, float, str, type(None), object) if isinstance(data, t))
    return (kind.__name__, repr(data), type(data).__name__, vars(data) if hasattr(data, "__dict__") else None)


def _agree(text: str) -> bool:
    """True when the fast path answered (and then it must agree with ruamel)."""
    fast = compose_chunk(text, 0)
    if fast is None:
        return False
    ref = _ruamel(text)
    assert ref is not None, f"libyaml accepted what ruamel rejects: {text!r}"
    assert [_shape(d) for d in fast] == [_shape(d) for d in ref], text
    return True


LINES = [
    "apiVersion: syncbit/v1", "kind: Dataset", "metadata:", "  name: ds-1", "  labels:",
    "    gpu: h100", "    zone: 'zone-1'", '    tier: "train"', "spec:", "  version: \"v1\"",
    "  replicas: 3", "  replicas: 0", "  replicas: -2", "  replicas: 007", "  replicas: +1",
    "  replicas: 1_000", "  replicas: 0x1f", "  replicas: 0o17", "  n: 1.5", "  n: .inf",
    "  n: 1e3", "  all: true", "  all: True", "  all: FALSE", "  on: yes", "  off: no",
    "  c: on", "  c: off", "  c: y", "  c: n", "  d: 2001-12-14", "  e: ~", "  e: null",
    "  e: Null", "  e:", "  f: []", "  f: {}", "  f: [a, 'b', \"c\", 1, true, ~]",
    "  g: {a: 1, b: [x, y]}", "  - item", "- item", "- a: 1", "  b: 2", "- - nested",
    "  h: |", "    literal", "  i: >-", "    folded", "  j: !!str 12", "  k: !custom x",
    "  l: &a v", "  m: *a", "  <<: {x: 1}", "  dup: 1", "  dup: 2", "? complex", ": value",
    "  1: int key", "  null: k", "  true: k", "  url: https://h/x?a=1&b=2", "  s: a &b",
    "  q: 'it''s'", "  q: \"tab\\there\"", "  q: \"\\u00e9\"", "  q: \"\\/\"", "  é: ü",
    "  w: multi", "    line plain", "  x: 'multi", "    line quoted'", "# comment",
    "  y: v # trailing", "", "\ttab: 1", "  t: a\tb", "  z: =", "  z: <<", "  z: -", "  z: -1",
    "  z: .5", "  z: '0'", "  z: 0", "  z: 00", "  z: -0",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=25), st.sampled_from(["\n", "\r\n"]))
def test_fast_path_agrees_with_ruamel(lines: list[str], newline: str) -> None:
    _agree(newline.join(lines) + newline)


def test_state_repo_documents_take_the_fast_path() -> None:
    text = ("apiVersion: syncbit/v1\nkind: Dataset\nmetadata:\n  name: ds-1\n"
            "  labels: {gpu: h100, on: yes}\nspec:\n  version: \"v1\"\n  source:\n"
            "    http:\n      baseUrl: https://h/x/\n      files: [a, b]\n"
            "      headers:\n        Authorization: \"Bearer ${T}\"\n"
            "  placement:\n    replicas: 2\n    all: false\n  path: datasets/ds-1\n"
            "  keepVersions: 0\n")
    assert _agree(text)
    assert compose_chunk(text, 0)[0]["metadata"]["labels"]["on"] == "yes"  # YAML 1.2


@pytest.mark.parametrize("text", [
    "a: 0755\n", "a: 1.5\n", "a: !!str 1\n", "a: &x 1\nb: *x\n", "a: |\n  t\n", "<<: {b: 1}\n",
    "a: 1\na: 2\n", "? [a]\n: 1\n", "1: a\n", "%YAML 1.2\n---\na: 1\n", "just a scalar\n",
    "a: b\x85c\n", "a: 2001-12-14\n", "a: [1, 2\n", "a: +1\n", "a: 1_0\n", "a: -0\n",
])
def test_outside_the_subset_ruamel_decides(text: str) -> None:
    assert compose_chunk(text, 0) is None


def test_positions_are_counted_from_the_chunk_line() -> None:
    (doc,) = compose_chunk("a:\n  b: [x, y]\n", 40)
    assert (doc.lc.line, doc.lc.col) == (40, 0)
    assert doc["a"].lc.key("b") == (41, 2) and doc["a"].lc.value("b") == (41, 5)
    assert doc["a"]["b"].lc.item(1) == (41, 9)


def test_errors_are_still_ruamels_and_name_the_line() -> None:
    docs, errors = parse_documents("a: 1\n---\nb: 1\nb: 2\n---\nc: [1\n", "f.yaml")
    assert [d.data for d in docs] == [{"a": 1}]
    assert [(e.line, e.field) for e in errors] == [(4, "(yaml)"), (7, "(yaml)")]
    assert "duplicate key 'b'" in errors[0].message


SCALARS = ["a", "yes", "No", "on", "y", "0", "7", "-3", "1.5", ".nan", "'q'", '"x y"', "a b",
           "https://h/p?a=1&b=2", "~", "null", "true", "False", "2001-12-14", "0x1f", "[a, 1]",
           "{a: b, c: [1]}", "[]", "{}", "'it''s'", '"\\u00e9\\n"', "é", "a:b", "-", "<<", "=",
           "x # c", "'multi\n  line'", "plain\n  folded"]
KEYS = ["a", "b", "on", "yes", "name", "é", "'q'", '"d"', "k-1", "x.y/z"]


def _emit(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        out = ""
        for k, v in value.items():
            out += f"{pad}{k}:" + (f" {v}\n" if isinstance(v, str) else "\n" + _emit(v, indent + 2))
        return out or f"{pad}{{}}\n"
    out = ""
    for v in value:
        out += f"{pad}-" + (f" {v}\n" if isinstance(v, str) else "\n" + _emit(v, indent + 2))
    return out or f"{pad}[]\n"


trees = st.recursive(st.sampled_from(SCALARS),
                     lambda kids: st.dictionaries(st.sampled_from(KEYS), kids, max_size=4)
                     | st.lists(kids, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), trees, min_size=1, max_size=4))
def test_fast_path_agrees_with_ruamel_on_nested_documents(doc: dict[str, Any]) -> None:
    text = _emit(doc, 0)
    _agree(text)
    _agree("--- " + text if text.startswith("[") or text.startswith("{") else "---\n" + text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), trees, min_size=1, max_size=3),
                min_size=1, max_size=4),
       st.lists(st.sampled_from(["---\n", "# c\n---\n", "...\n---\n", "---\n\n", "---\n---\n",
                                 "--- # c\n"]), min_size=4, max_size=4))
def test_whole_files_read_like_ruamel_chunk_by_chunk(docs: list[dict[str, Any]],
                                                     seps: list[str]) -> None:
    """A multi-document file read in one libyaml pass gives the documents, indexes and
    positions (and errors) that ruamel gives reading it chunk by chunk."""
    text = "# head\n" + "".join(seps[i] + _emit(d, 0) for i, d in enumerate(docs))
    fast_docs, fast_errors = parse_documents(text, "f.yaml")
    ref_docs, ref_errors = parse_documents(text, "f.yaml", fast=False)
    assert [(d.index, d.line, d.col, _shape(d.data)) for d in fast_docs] == \
        [(d.index, d.line, d.col, _shape(d.data)) for d in ref_docs]
    assert fast_errors == ref_errors
