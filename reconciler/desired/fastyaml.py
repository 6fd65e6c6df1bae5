"""A C-speed reader for the plain YAML a state repo is made of, with ruamel's positions.

ruamel.yaml's pure-Python round trip costs ~20x a C parse (issue 13). This composes a
document with libyaml (PyYAML's `CParser`, which keeps every node's start mark) and builds
the same data ruamel's round-trip loader would: `dict`/`list` subclasses carrying an `lc`
record with ruamel's layout (`line`, `col`, `data`, `key()`, `value()`, `item()`), scalars
resolved with ruamel's own YAML 1.2 implicit resolvers (`yes`/`on` stay strings).

It only answers when the answer is certainly ruamel's: anything outside the common subset
(explicit tags, anchors/aliases, directives, merge keys, floats, timestamps, non-decimal or
zero-padded integers, block scalars, empty values, complex or duplicate keys, a scalar document, a line
break that YAML 1.1 has and 1.2 does not, any libyaml error) returns None, and the caller
parses that document with ruamel, which also words the errors. So behaviour and messages are
ruamel's; only the speed differs.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.resolver import VersionedResolver

try:  # PyYAML with libyaml; without it every document goes to ruamel
    from yaml import YAMLError as _PyYAMLError
    from yaml._yaml import CParser as _CParser
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode
except ImportError:  # pragma: no cover - the venv installs PyYAML with libyaml
    _CParser = None

__all__ = ["LineCol", "PosMap", "PosSeq", "compose_chunk"]

_PLAIN = "?plain"  # our resolver's tags: anything else on a node was written explicitly
_QUOTED = "?quoted"
_COLL = "?coll"

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
# Integers ruamel's round trip returns as a plain `int`; `0` is its ScalarInt (made by ruamel
# once, shared: nobody mutates documents); `-0`, `+1`, `007`, `1_000` go to ruamel.
_PLAIN_INT = re.compile(r"-?[1-9][0-9]*")
_ZERO = YAML(typ="rt", pure=True).load("[0]")[0]
_TRUE = frozenset(("true", "True", "TRUE"))
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))

# ruamel's implicit resolvers for YAML 1.2, by first character: the exact rules it applies.
_RESOLVERS: dict[str, list[tuple[str, Any]]] = \
    VersionedResolver(version=(1, 2)).versioned_resolver

# Tabs (the two scanners disagree on them), characters that are line breaks for libyaml
# (YAML 1.1) but not for ruamel (1.2), a BOM
# inside the text, a directive, an anchor (ruamel keeps it in its types): positions or values
# could differ, so such chunks go to ruamel. (An `&` after a space in a string sends it too.)
_NOT_FAST_CHARS = ("\t", "\x85", "\u2028", "\u2029", "\ufeff")
_DIRECTIVE = re.compile("(?:^|[\r\n])%")
# A document end marker: libyaml takes a second `...` with no document between as nothing,
# ruamel as an error (hypothesis found `---`, `...`, `...`).
_DOC_END = re.compile(r"(?:^|[\r\n])\.\.\.(?:[ \r\n]|$)")
_ANCHOR = re.compile("(?:^|[ \r\n\\[{,])&")


def _not_fast(text: str) -> bool:
    """Whether `text` must go to ruamel before parsing (substring tests first: they are C
    scans, ~10x faster over a whole file than one regex with alternatives)."""
    return (any(c in text for c in _NOT_FAST_CHARS)
            or ("%" in text and _DIRECTIVE.search(text) is not None)
            or ("..." in text and _DOC_END.search(text) is not None)
            or ("&" in text and _ANCHOR.search(text) is not None))


class _Fallback(Exception):
    """The document is outside the subset: ruamel decides."""


class LineCol:
    """ruamel's `LineCol` interface, 0-based: `line`/`col` of the collection; `key(k)`,
    `value(k)` of a mapping's entry, `item(i)` of a sequence's; `data` as ruamel lays it out
    (`{key: [key line, key col, value line, value col]}`, `{i: [line, col]}`).
    `schema_errors.position` reads these to name where a field is.

    Stored flat (the keys in a tuple, the positions in one tuple of ints) rather than as a
    dict of lists: a cold pass holds ~10^5 of these, and tuples of strings and ints drop out
    of the garbage collector's lists, dicts and lists do not. A view: `PosMap.lc` makes one.
    """

    __slots__ = ("line", "col", "_keys", "_pos")

    def __init__(self, line: int, col: int, keys: tuple[Any, ...] | None,
                 pos: tuple[int, ...]) -> None:
        self.line = line
        self.col = col
        self._keys = keys  # None: a sequence's
        self._pos = pos

    def _at(self, i: int, width: int) -> tuple[int, ...]:
        return self._pos[i * width:(i + 1) * width]

    def key(self, k: Any) -> tuple[int, int]:
        if self._keys is None or k not in self._keys:
            raise KeyError(k)
        kl, kc, _, _ = self._at(self._keys.index(k), 4)
        return kl, kc

    def value(self, k: Any) -> tuple[int, int]:
        if self._keys is None or k not in self._keys:
            raise KeyError(k)
        _, _, vl, vc = self._at(self._keys.index(k), 4)
        return vl, vc

    def item(self, idx: int) -> tuple[int, int]:
        if self._keys is not None or not isinstance(idx, int) \
                or not 0 <= idx < len(self._pos) // 2:
            raise KeyError(idx)
        line, col = self._at(idx, 2)
        return line, col

    @property
    def data(self) -> dict[Any, list[int]]:
        if self._keys is None:
            return {i: list(self._at(i, 2)) for i in range(len(self._pos) // 2)}
        return {k: list(self._at(i, 4)) for i, k in enumerate(self._keys)}

    def __repr__(self) -> str:
        return f"LineCol({self.line}, {self.col})"


# (line, col, keys or None, flat positions): `LineCol`'s arguments.
_Pos = tuple[int, int, "tuple[Any, ...] | None", "tuple[int, ...]"]


class PosMap(dict):  # type: ignore[type-arg]
    """A mapping with its positions (`lc`), as ruamel's CommentedMap has. They are kept as
    one plain tuple of strings and ints, which the garbage collector stops tracking (a
    `LineCol` per container doubled the objects a full collection walks, ~0.1 s per pass
    at fleet scale, on the daemon's event loop too); `lc` is a view made when asked."""

    __slots__ = ("_lc",)
    _lc: _Pos

    @property
    def lc(self) -> LineCol:
        return LineCol(*self._lc)


class PosSeq(list):  # type: ignore[type-arg]
    """A sequence with its positions (`lc`), as ruamel's CommentedSeq has (see `PosMap`)."""

    __slots__ = ("_lc",)
    _lc: _Pos

    @property
    def lc(self) -> LineCol:
        return LineCol(*self._lc)


if _CParser is not None:
    class _Composer(_CParser):  # type: ignore[misc]
        """libyaml's composer with a resolver that only says how a node was written."""

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            if kind is ScalarNode:
                return _PLAIN if implicit[0] else _QUOTED
            return _COLL

        # Path-based resolvers are not used: no-ops, as C builtins (libyaml calls both for
        # every node; a Python no-op costs ~8% of the parse). `is_(parent, index)` and
        # `tuple()` do nothing with their result.
        descend_resolver = staticmethod(operator.is_)
        ascend_resolver = staticmethod(tuple)


def _scalar(node: Any) -> Any:
    tag = node.tag  # our resolver's constants, by identity: an explicit tag is another str
    if tag is _PLAIN:
        value: str = node.value
        resolvers = _RESOLVERS.get(value[:1])
        if resolvers is None:
            return value  # most keys and strings: no implicit type starts with their letter
        if not value:
            raise _Fallback  # an empty value: ruamel places it at the next token, libyaml not
        for resolved, regexp in resolvers:
            if regexp.match(value):
                break
        else:
            return value
        if resolved == _STR:
            return value
        if resolved == _NULL:
            return None
        if resolved == _BOOL:
            return value in _TRUE
        if resolved == _INT:
            if value == "0":
                return _ZERO
            if _PLAIN_INT.fullmatch(value):
                return int(value)
        raise _Fallback  # floats, timestamps, merge keys, odd integers: ruamel's types
    if tag is _QUOTED and node.style in ("'", '"'):
        return node.value
    raise _Fallback  # an explicit tag, or a block scalar (ruamel keeps its style in its type)


def _build(node: Any, line0: int, seen: set[int]) -> Any:
    """A collection node as ruamel's round trip builds it (scalars: `_scalar`). The anchor
    check (`_not_fast`) already keeps aliases out; `seen` makes sure of it for collections,
    the only nodes whose sharing would show."""
    if id(node) in seen:
        raise _Fallback  # an alias: the same node twice
    seen.add(id(node))
    cls = type(node)
    if node.tag is not _COLL:
        raise _Fallback
    mark = node.start_mark
    pos: list[int] = []
    if cls is MappingNode:
        out: Any = PosMap()
        for knode, vnode in node.value:
            if type(knode) is not ScalarNode:
                raise _Fallback
            key = _scalar(knode)
            if key in out or not isinstance(key, str):
                raise _Fallback  # duplicates and non-string keys: ruamel's error or types
            km, vm = knode.start_mark, vnode.start_mark
            out[key] = _scalar(vnode) if type(vnode) is ScalarNode else _build(vnode, line0, seen)
            pos += (km.line + line0, km.column, vm.line + line0, vm.column)
        out._lc = (mark.line + line0, mark.column, tuple(out), tuple(pos))
        return out
    if cls is SequenceNode:
        seq: Any = PosSeq()
        for item in node.value:
            m = item.start_mark
            seq.append(_scalar(item) if type(item) is ScalarNode else _build(item, line0, seen))
            pos += (m.line + line0, m.column)
        seq._lc = (mark.line + line0, mark.column, None, tuple(pos))
        return seq
    raise _Fallback  # pragma: no cover - libyaml has no other node kind


def compose_chunk(chunk: str, first_line: int) -> list[Any] | None:
    """The non-empty documents of a YAML text (a whole file, or one chunk of
    `loader._split_documents`) as ruamel's round trip would give them, positions counted from
    `first_line` (0-based); None when ruamel must decide. Only mappings and sequences at the
    top: a scalar document goes to ruamel too."""
    if _CParser is None or _not_fast(chunk):
        return None
    parser = _Composer(chunk)
    try:
        out: list[Any] = []
        # Bounded: each round takes one document of the text, and the text is finite.
        while parser.check_node():
            node = parser.get_node()
            if type(node) is ScalarNode:
                if node.tag == _PLAIN and node.value in _NULLS:
                    continue  # an empty (null) document: ruamel's None, which nobody keeps
                raise _Fallback
            # Node ids tell aliases only while the document's nodes are all alive: one set
            # per document.
            out.append(_build(node, first_line, set()))
        return out
    except (_Fallback, _PyYAMLError, ValueError, TypeError, RecursionError):
        return None
    finally:
        parser.dispose()
