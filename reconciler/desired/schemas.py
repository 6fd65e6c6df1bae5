"""Where the JSON Schemas live, and cached access to them.

The schemas in the repository's top-level `schemas/` directory are the single source of truth;
`reconciler/schemas` is a symlink to it in a checkout and a copy (package data) once installed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["schema", "schema_dir", "validator", "valid_check"]

_HERE = Path(__file__).resolve().parent.parent  # the package root: reconciler/


def schema_dir() -> Path:
    """The directory holding `*.schema.json`: the package's own copy, else the repo's top level."""
    for candidate in (_HERE / "schemas", _HERE.parent / "schemas"):
        if (candidate / "dataset.schema.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"JSON schemas not found in {_HERE / 'schemas'} or {_HERE.parent / 'schemas'}"
    )


def _file_name(name: str) -> str:
    if name.endswith(".json"):
        return name
    if name.endswith(".schema"):
        return name + ".json"
    return name + ".schema.json"


def schema(name: str) -> dict[str, Any]:
    """A schema by short name (`"dataset"`) or file name (`"dataset.schema.json"`).

    Cached: do not modify the returned dict.
    """
    return _load(_file_name(name))


def validator(name: str) -> Any:
    """A cached `jsonschema.Draft202012Validator` for the schema `name`."""
    return _validator(_file_name(name))


@functools.lru_cache(maxsize=None)
def _load(file_name: str) -> dict[str, Any]:
    with (schema_dir() / file_name).open(encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict):
        raise ValueError(f"{schema_dir() / file_name}: not a JSON Schema object")
    return doc


@functools.lru_cache(maxsize=None)
def _validator(file_name: str) -> Any:
    import jsonschema

    s = _load(file_name)
    cls = jsonschema.validators.validator_for(s, default=jsonschema.Draft202012Validator)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def valid_check(name: str) -> Any:
    """A compiled `document -> bool` that agrees with `validator(name)` having no errors
    (`fastschema`), or None when the schema does not compile: then ask the validator."""
    return _valid_check(_file_name(name))


@functools.lru_cache(maxsize=None)
def _valid_check(file_name: str) -> Any:
    from reconciler.desired.fastschema import compile_check

    return compile_check(_load(file_name), _validator(file_name).format_checker)
