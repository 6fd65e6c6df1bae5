"""JSON Schema errors in words, at the line and column where the user wrote the field.

Shared by the state repo's validation and the node config: one translation of jsonschema's
errors into `FILE:LINE:COL: FIELD: MESSAGE` material. Pure over ruamel.yaml's round-trip data
(its `lc` line/column records) and jsonschema's error objects.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["SchemaProblem", "clip", "format_field", "position", "schema_problems", "show"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

PathT = tuple[Any, ...]


@dataclass(frozen=True)
class SchemaProblem:
    path: PathT  # where, inside the document
    message: str
    at_value: bool = False  # point at the value rather than the key
    field_path: PathT | None = None  # what FIELD names, when not `path`
    pos_path: PathT | None = None  # point at this path instead of `path`


def format_field(path: Iterable[Any]) -> str:
    """`("spec", "source", "http", "files", 2)` -> `spec.source.http.files[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lc_pos(container: Any, key: Any, want_value: bool) -> tuple[int, int] | None:
    lc = getattr(container, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(container, list):
            line, col = lc.item(key)
        elif want_value:
            line, col = lc.value(key)
        else:
            line, col = lc.key(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if line is None or col is None:
        return None
    return line + 1, col + 1


def position(data: Any, path: PathT, want_value: bool, default: tuple[int, int]
             ) -> tuple[int, int]:
    """1-based (line, col) of the key (or the value) at `path`; nearest known ancestor else,
    `default` (where the document starts) at worst."""
    nodes = [data]
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        nodes.append(node)
    for depth in range(min(len(path), len(nodes) - 1), 0, -1):
        parent, key = nodes[depth - 1], path[depth - 1]
        value = nodes[depth]
        is_container = isinstance(value, (dict, list))
        pos = _lc_pos(parent, key, want_value and not is_container and depth == len(path))
        if pos is not None:
            return pos
        want_value = False
    return default


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (_dt.date, _dt.datetime)):
        return "date"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def show(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{clip(value)}'"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        return f"date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_TYPE_PHRASE = {"string": "a string", "integer": "an integer", "number": "a number",
                "boolean": "true or false", "object": "a mapping", "array": "a list",
                "null": "null"}


def _got(value: Any, sensitive: bool) -> str:
    return "" if sensitive else f" (got {show(value)})"


def _exactly_one_message(alternatives: list[list[str]], instance: Mapping[str, Any]) -> str:
    mentioned: list[str] = []
    for alt in alternatives:
        mentioned.extend(k for k in alt if k not in mentioned)
    found = [k for k in instance if k in mentioned]
    found_text = ", ".join(found) if found else "none"
    if all(len(alt) == 1 for alt in alternatives):
        names = ", ".join(alt[0] for alt in alternatives)
        return f"exactly one of {names} must be set (found {found_text})"
    forms = [" with ".join(alt) for alt in alternatives]
    return f"set either {', or '.join(forms)} (found {found_text})"


def _required_alternatives(schema: Any) -> list[list[str]] | None:
    one_of = schema.get("oneOf") if isinstance(schema, dict) else None
    if not one_of or not all(isinstance(s, dict) and set(s) == {"required"} for s in one_of):
        return None
    return [list(s["required"]) for s in one_of]


def schema_problems(err: Any) -> list[SchemaProblem]:
    """What one jsonschema error means for a person: where, and in words."""
    out: list[SchemaProblem] = []
    path: PathT = tuple(err.absolute_path)
    kw = err.validator
    schema = err.schema if isinstance(err.schema, dict) else {}
    instance = err.instance
    sensitive = "headers" in path
    custom = schema.get("errorMessage") if isinstance(schema.get("errorMessage"), str) else None

    if "propertyNames" in list(err.relative_schema_path):
        shown = clip(str(instance))
        message = f"{custom} (got '{shown}')" if custom else f"invalid key '{shown}'"
        out.append(SchemaProblem(path + (instance,), message))
        return out

    if kw == "required":
        if not isinstance(instance, dict):
            return out
        for name in err.validator_value:
            if name not in instance:
                out.append(SchemaProblem(path, f"missing required field '{name}'",
                                         field_path=path + (name,)))
        return out

    if kw == "additionalProperties":
        if not isinstance(instance, dict):
            return out
        allowed = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        noun = schema.get("x-keyNoun", "field")
        for key in instance:
            if key in allowed or any(re.search(p, str(key)) for p in patterns):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)
            if noun == "field" and close:
                message = f"unknown field '{key}': did you mean '{close[0]}'?"
            else:
                message = f"unknown {noun} '{key}' (allowed: {', '.join(allowed)})"
            out.append(SchemaProblem(path + (key,), message))
        return out

    alternatives = _required_alternatives(schema)
    if kw in ("oneOf", "dependentRequired") and alternatives is not None:
        if isinstance(instance, dict):
            out.append(SchemaProblem(path, _exactly_one_message(alternatives, instance)))
        return out

    if kw in ("minProperties", "maxProperties") and schema.get("minProperties") == 1 \
            and schema.get("maxProperties") == 1:
        if isinstance(instance, dict):
            out.append(SchemaProblem(path, _exactly_one_message(
                [[k] for k in schema.get("properties", {})], instance)))
        return out

    if kw == "not" and isinstance(err.validator_value, dict) \
            and set(err.validator_value) == {"required"}:
        names = list(err.validator_value["required"])
        if isinstance(instance, dict):
            last = names[-1]
            out.append(SchemaProblem(path, f"{' and '.join(names)} cannot be set together",
                                     pos_path=path + (last,)))
        return out

    if kw == "dependentRequired" and isinstance(instance, dict):
        for name, needs in err.validator_value.items():
            if name in instance:
                for need in needs:
                    if need not in instance:
                        out.append(SchemaProblem(path + (name,),
                                                 f"{name} requires {need} to be set"))
        return out

    return [SchemaProblem(path, _value_message(err, custom, sensitive), at_value=True)]


def _value_message(err: Any, custom: str | None, sensitive: bool) -> str:
    """What is wrong with a value, in words (with the value itself unless it is a secret)."""
    kw, instance = err.validator, err.instance
    if custom is not None:
        message = custom + _got(instance, sensitive)
    elif kw == "type":
        expected = err.validator_value if isinstance(err.validator_value, list) \
            else [err.validator_value]
        phrase = " or ".join(_TYPE_PHRASE.get(str(t), str(t)) for t in expected)
        if instance is None:
            message = f"must be {phrase} (got an empty value)"
        elif sensitive:
            message = f"must be {phrase}"
        else:
            message = f"must be {phrase} (got {_yaml_type(instance)} {show(instance)})"
            if "string" in expected and isinstance(instance, (bool, int, float, _dt.date)):
                message += ": quote it"
    elif kw == "const":
        message = f"must be {show(err.validator_value)}" + _got(instance, sensitive)
    elif kw == "enum":
        choices = ", ".join(str(v) for v in err.validator_value)
        message = f"must be one of {choices}" + _got(instance, sensitive)
    elif kw == "minimum":
        message = f"must be at least {err.validator_value}" + _got(instance, sensitive)
    elif kw == "maximum":
        message = f"must be at most {err.validator_value}" + _got(instance, sensitive)
    elif kw == "minLength":
        message = ("must not be empty" if err.validator_value == 1
                   else f"must be at least {err.validator_value} characters long")
    elif kw == "maxLength":
        message = f"must be at most {err.validator_value} characters long"
    elif kw == "minItems":
        message = ("must not be empty" if err.validator_value == 1
                   else f"must have at least {err.validator_value} items")
    elif kw == "uniqueItems":
        seen: list[Any] = []
        dups: list[str] = []
        for item in instance if isinstance(instance, list) else []:
            if item in seen and show(item) not in dups:
                dups.append(show(item))
            seen.append(item)
        message = "must not contain duplicates" + (f" (found {', '.join(dups)} twice)"
                                                   if dups and not sensitive else "")
    elif kw == "pattern":
        message = f"must match the pattern {err.validator_value}" + _got(instance, sensitive)
    elif kw in ("anyOf", "oneOf"):
        message = "does not match any allowed form" + _got(instance, sensitive)
    elif kw is None or err.schema is False:
        message = "not allowed here"
    else:
        message = err.message
    return message
