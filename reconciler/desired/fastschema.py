"""A compiled yes/no check of a JSON Schema, to skip jsonschema on documents that are valid.

jsonschema's `iter_errors` walks the schema afresh for every document (validator objects,
reference lookups, type checks per keyword): ~2 ms for a Dataset, most of a cold pass over a
fleet (issue 13). Nearly every document is valid, and a valid document needs no words. So a
schema is compiled once into nested closures that answer "valid?" with jsonschema's own
semantics (Draft 2020-12 keywords, jsonschema's type and equality rules, its format checker);
only a document it finds invalid goes through jsonschema, which words the errors as before.

The compiler knows the keywords our schemas use; a schema with any other keyword does not
compile (`compile_check` returns None) and every document goes to jsonschema. A test checks
the two agree on the fuzz corpus and on every document of the test suites.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Mapping, Sized

from jsonschema._utils import equal as _js_equal, uniq as _js_uniq

__all__ = ["compile_check"]

Check = Callable[[Any], bool]

# Keywords that only annotate: they never make a document invalid.
_ANNOTATIONS = frozenset(("$schema", "$id", "$comment", "title", "description", "default",
                          "examples", "errorMessage", "x-keyNoun", "$defs", "deprecated",
                          "readOnly", "writeOnly"))


# Bounds on a length: the type they apply to (others pass, as in jsonschema) and the test.
_LENGTHS: dict[str, tuple[type[Sized], Callable[[int, int], bool]]] = {
    "minLength": (str, operator.ge), "maxLength": (str, operator.le),
    "minItems": (list, operator.ge), "maxItems": (list, operator.le),
    "minProperties": (dict, operator.ge), "maxProperties": (dict, operator.le)}


class _Unsupported(Exception):
    pass


def _is_type(value: Any, name: str) -> bool:
    """jsonschema's Draft 2020-12 type checker."""
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    raise _Unsupported(name)


def _all(checks: list[Check]) -> Check:
    """The conjunction of `checks`, without a generator per call (this runs ~10^6 times)."""
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda v: a(v) and b(v)
    items = tuple(checks)

    def check(v: Any) -> bool:
        for c in items:
            if not c(v):
                return False
        return True
    return check


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Compiler:
    def __init__(self, root: Mapping[str, Any], format_checker: Any) -> None:
        self.root = root
        self.format_checker = format_checker
        self.refs: dict[str, Check] = {}

    def ref(self, ref: str) -> Check:
        if not ref.startswith("#/"):
            raise _Unsupported(ref)
        found = self.refs.get(ref)
        if found is not None:
            return found
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        slot: list[Check] = []
        self.refs[ref] = lambda v: slot[0](v)  # recursion: filled in below
        slot.append(self.compile(target))
        self.refs[ref] = slot[0]
        return slot[0]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict) or "patternProperties" in schema:
            raise _Unsupported(repr(schema))  # patternProperties: unused, so not compiled
        checks: list[Check] = []
        if any(k in schema for k in ("properties", "additionalProperties", "required")):
            checks.append(self._object(schema))
        for key, arg in schema.items():
            if key in _ANNOTATIONS or key in ("properties", "additionalProperties", "required"):
                continue
            checks.append(self._keyword(key, arg, schema))
        return _all(checks)

    def _object(self, schema: Mapping[str, Any]) -> Check:
        """`properties`, `additionalProperties` and `required` in one pass over the keys."""
        props = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        extra_schema = schema.get("additionalProperties", True)
        extra = None if extra_schema is True else self.compile(extra_schema)
        required = tuple(schema.get("required", ()))
        get = props.get

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                sub = get(key)
                if sub is None:
                    if extra is not None and not extra(value):
                        return False
                elif not sub(value):
                    return False
            for name in required:
                if name not in v:
                    return False
            return True
        return check

    def _keyword(self, key: str, arg: Any, schema: Mapping[str, Any]) -> Check:
        if key == "patternProperties":
            raise _Unsupported(key)
        if key == "type":
            names = (arg,) if isinstance(arg, str) else tuple(arg)
            for n in names:
                _is_type(None, n)  # unknown type names do not compile
            if len(names) == 1:
                only = names[0]
                simple = {"object": dict, "array": list, "string": str}.get(only)
                if simple is not None:
                    return lambda v: isinstance(v, simple)
                return lambda v: _is_type(v, only)
            return lambda v: any(_is_type(v, n) for n in names)
        if key == "$ref":
            return self.ref(arg)
        if key == "dependentRequired":
            deps = tuple((k, tuple(d)) for k, d in arg.items())
            return lambda v: not isinstance(v, dict) or all(
                all(d in v for d in ds) for k, ds in deps if k in v)
        if key == "const":
            const = arg
            return lambda v: bool(_js_equal(v, const))
        if key == "enum":
            options = tuple(arg)
            strings = frozenset(o for o in options if isinstance(o, str))
            if len(strings) == len(options):
                return lambda v: isinstance(v, str) and v in strings
            return lambda v: any(_js_equal(v, o) for o in options)
        if key in _LENGTHS:
            kind, within = _LENGTHS[key]
            n = arg
            return lambda v: not isinstance(v, kind) or within(len(v), n)
        if key == "pattern":
            rx = re.compile(arg)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key in ("minimum", "maximum"):
            within, bound = (operator.ge if key == "minimum" else operator.le), arg
            return lambda v: not _is_number(v) or within(v, bound)
        if key == "uniqueItems":
            if not arg:
                return lambda v: True
            return lambda v: not isinstance(v, list) or bool(_js_uniq(v))
        if key == "items":
            sub = self.compile(arg)
            if "prefixItems" in schema:
                raise _Unsupported("prefixItems")
            return lambda v: not isinstance(v, list) or all(sub(x) for x in v)
        if key == "propertyNames":
            sub = self.compile(arg)
            return lambda v: not isinstance(v, dict) or all(sub(k) for k in v)
        if key == "anyOf":
            subs = tuple(self.compile(s) for s in arg)
            return lambda v: any(s(v) for s in subs)
        if key == "oneOf":
            subs = tuple(self.compile(s) for s in arg)
            return lambda v: sum(1 for s in subs if s(v)) == 1
        if key == "allOf":
            subs = tuple(self.compile(s) for s in arg)
            return lambda v: all(s(v) for s in subs)
        if key == "not":
            sub = self.compile(arg)
            return lambda v: not sub(v)
        if key == "format":
            checker, fmt = self.format_checker, arg
            if checker is None:
                return lambda v: True
            return lambda v: bool(checker.conforms(v, fmt))
        raise _Unsupported(key)


def compile_check(schema: Mapping[str, Any], format_checker: Any = None) -> Check | None:
    """A function telling whether a document is valid against `schema` exactly as jsonschema
    (Draft 2020-12, with `format_checker`) would; None if the schema uses a keyword this
    compiler does not know."""
    try:
        return _Compiler(schema, format_checker).compile(schema)
    except (_Unsupported, KeyError, TypeError, re.error):
        return None
