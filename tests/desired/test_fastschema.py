"""desired.fastschema: the compiled check says "valid" exactly when jsonschema finds no error,
on the example state repo's documents and on random edits of them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from reconciler.desired.fastschema import compile_check
from reconciler.desired.loader import load_documents
from reconciler.desired.schemas import schema, valid_check, validator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "desired-state"
DOCS = [d.data for d in load_documents(EXAMPLES, cache=None).documents]
KINDS = {"Dataset": "dataset", "Node": "node"}


def _agree(kind: str, data: Any) -> None:
    check = valid_check(kind)
    assert check is not None, f"{kind} schema does not compile"
    expected = not any(True for _ in validator(kind).iter_errors(data))
    assert check(data) is expected, data


def test_every_schema_of_the_state_repo_compiles() -> None:
    for kind in ("dataset", "node", "config", "status"):
        assert compile_check(schema(kind)) is not None, kind


@pytest.mark.parametrize("data", DOCS, ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_examples_agree(data: Any) -> None:
    _agree(KINDS[data["kind"]], data)


VALUES = [None, True, False, 0, 1, -1, 2.0, 2.5, 10**20, "", "x", "ds-1", "Bad_Name", "v1",
          "low", "critical", "10.0.0.1:6881", "2TiB", "-1", "https://h/x/", "a/b", "main",
          "2026-12-01T00:00:00Z", "not-a-date", [], ["a"], [1], ["a", "a"], {}, {"a": "b"},
          {"http": {"baseUrl": "https://h/", "files": ["a"]}}, {"s3": {"bucket": "b"}},
          {"hf": {"repo": "a/b"}}, {"replicas": 2}, {"all": True}, {"nodes": ["n"]},
          {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]},
          {"matchExpressions": [{"key": "a", "operator": "Exists"}]}]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(DOCS), st.lists(st.tuples(st.integers(0, 10**6),
                                                 st.sampled_from(["set", "del", "add"]),
                                                 st.sampled_from(VALUES),
                                                 st.sampled_from(["extra", "size", "lock",
                                                                  "labels", "cordoned", "all",
                                                                  "replicas", "selector",
                                                                  "include", "x"])),
                                       min_size=1, max_size=4))
def test_random_edits_agree(doc: Any, edits: list[tuple[int, str, Any, str]]) -> None:
    data = copy.deepcopy(doc)
    for pick, op, value, key in edits:
        paths = _paths(data)
        path = paths[pick % len(paths)]
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if op == "set":
            parent[path[-1]] = copy.deepcopy(value)
        elif op == "del":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][key] = copy.deepcopy(value)
    _agree(KINDS[doc["kind"]], data)
