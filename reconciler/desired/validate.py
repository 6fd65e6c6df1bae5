"""Validate a state repo and turn it into the model: `load_desired_state(root, revision)`.

Every problem is reported (not only the first), each with the file, line and column where it
was written and the dotted FIELD inside its document (`spec.placement.replicas`,
`spec.source.http.files[2]`, `metadata.labels["syncbit.dev/gpu"]`). Documents-level problems
use the pseudo-fields `(yaml)` (syntax errors, duplicate keys), `(file)` (unreadable files),
`(document)` (a document that is not a mapping) and `(repo)` (no documents at all).

The JSON Schemas in `schemas/` are the single source of truth for the shape of documents; the
checks here add what a schema cannot say: references between documents, duplicate names,
paths that must stay inside their root, `${VAR}` syntax, lock files that must parse.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, cast
from urllib.parse import unquote, urlsplit

from reconciler.desired.loader import Document, LockRead, load_documents, read_locks
from reconciler.model.desired import (
    Dataset,
    DesiredState,
    FileSource,
    NodeSource,
    HfSource,
    HttpSource,
    LockFile,
    Node,
    Placement,
    Position,
    Requirement,
    S3Source,
    Source,
    ValidationError,
)
from reconciler.desired.schema_errors import clip as _clip
from reconciler.desired.schema_errors import format_field, position, schema_problems, show as _show
from reconciler.core.gcpause import gc_paused
from reconciler.desired.schemas import valid_check as schema_valid_check
from reconciler.desired.schemas import validator as schema_validator
from reconciler.core.hostport import parse_hostport
from reconciler.core.envrefs import check_env_refs, expand_env_refs
from reconciler.core.lockfile import read_lock
from reconciler.core.paths import path_problem as check_relative_path
from reconciler.core.units import parse_size

__all__ = [
    "load_desired_state",
    "validate_documents",
    "check_env_refs",
    "expand_env_refs",
    "check_relative_path",
    "format_field",
    "API_VERSION",
    "KINDS",
    "SOURCE_TYPES",
]

API_VERSION = "syncbit/v1"
KINDS = ("Node", "Dataset")
SOURCE_TYPES = ("http", "s3", "hf", "file", "node")
DOCUMENT_FIELD = "(document)"
REPO_FIELD = "(repo)"

PathT = tuple[Any, ...]


# What `str.splitlines` splits at: any of these in a message would break "one error per line".
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class _Errors:
    def __init__(self) -> None:
        self.items: list[ValidationError] = []
        self._seen: set[tuple[str, int, int, str, str]] = set()
        self.fields: set[tuple[str, int, str]] = set()  # (file, doc index, field) with an error

    def add(self, doc: Document, path: PathT, message: str, *, at_value: bool = False,
            pos: tuple[int, int] | None = None, field: str | None = None) -> None:
        line, col = pos if pos is not None else position(doc.data, path, at_value, (doc.line, doc.col))
        field = field if field is not None else (format_field(path) or DOCUMENT_FIELD)
        self.append(ValidationError(doc.file, line, col, field, message), doc)

    def append(self, error: ValidationError, doc: Document | None = None) -> None:
        if _LINE_BREAKS.search(error.field) or _LINE_BREAKS.search(error.message):
            # A value quoted in a message may hold line breaks; `validate` and the logs print
            # one error per line, so they are escaped (found by fuzzing: a document `"\n"`).
            error = dataclasses.replace(error, field=_one_line(error.field),
                                        message=_one_line(error.message))
        key = (error.file, error.line, error.col, error.field, error.message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.items.append(error)
        if doc is not None:
            self.fields.add((doc.file, doc.index, error.field))

    def has(self, doc: Document, path: PathT) -> bool:
        """Whether an error was already reported at `path` or inside it."""
        field = format_field(path)
        return any(f == doc.file and i == doc.index and (e == field or e.startswith(field + ".")
                                                         or e.startswith(field + "["))
                   for f, i, e in self.fields)


# --------------------------------------------------------------------------------------------
# JSON Schema errors -> messages (desired/schema_errors.py, shared with the node config)


def _schema_errors(doc: Document, kind: str, errors: _Errors) -> None:
    # The compiled check answers "valid" ~50x faster; jsonschema words what is wrong.
    check = schema_valid_check(kind.lower())
    if check is not None and check(doc.data):
        return
    for err in schema_validator(kind.lower()).iter_errors(doc.data):
        for p in schema_problems(err):
            pos = position(doc.data, p.pos_path, False, (doc.line, doc.col)) \
                if p.pos_path is not None else None
            field = format_field(p.field_path) if p.field_path is not None else None
            errors.add(doc, p.path, p.message, at_value=p.at_value, pos=pos, field=field)


# --------------------------------------------------------------------------------------------
# Checks a schema cannot express


def _check_document_header(doc: Document, errors: _Errors) -> str | None:
    """The document's kind if it is a mapping with a known kind (else report and return None)."""
    data = doc.data
    if not isinstance(data, dict):
        errors.add(doc, (), f"a document must be a mapping with apiVersion, kind, metadata and "
                            f"spec (got {_show(data)})", field=DOCUMENT_FIELD)
        return None
    kind = data.get("kind")
    if isinstance(kind, str) and kind in KINDS:
        return kind
    if "kind" not in data:
        errors.add(doc, (), f"missing required field 'kind' (one of {', '.join(KINDS)})",
                   field="kind")
    else:
        errors.add(doc, ("kind",), f"unknown kind {_show(kind)} (allowed: {', '.join(KINDS)})",
                   at_value=True)
    # The kind's schema cannot be chosen, but the API version can still be checked.
    if "apiVersion" not in data:
        errors.add(doc, (), "missing required field 'apiVersion'", field="apiVersion")
    elif data["apiVersion"] != API_VERSION:
        errors.add(doc, ("apiVersion",), f"must be {API_VERSION} (got {_show(data['apiVersion'])})",
                   at_value=True)
    return None


def _get(data: Any, *path: Any) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _check_hostport(doc: Document, path: PathT, errors: _Errors) -> None:
    value = _get(doc.data, *path)
    if not isinstance(value, str) or errors.has(doc, path):
        return
    try:
        parse_hostport(value, min_port=1)
    except ValueError as e:  # the schema checked the shape: only the port range is left
        errors.add(doc, path, str(e), at_value=True)


def _check_node(doc: Document, errors: _Errors) -> None:
    _check_hostport(doc, ("spec", "peer"), errors)
    _check_hostport(doc, ("spec", "api"), errors)
    capacity = _get(doc.data, "spec", "capacity")
    path = ("spec", "capacity")
    if capacity is not None and not errors.has(doc, path):
        try:
            parse_size(capacity)
        except ValueError as exc:
            errors.add(doc, path, str(exc), at_value=True)


def _check_source(doc: Document, path: PathT, errors: _Errors) -> None:
    source = _get(doc.data, *path)
    if not isinstance(source, dict):
        return
    http = source.get("http")
    if isinstance(http, dict):
        files = http.get("files")
        for i, name in enumerate(files if isinstance(files, list) else []):
            if isinstance(name, str):
                problem = check_relative_path(name, "file path")
                if problem:
                    errors.add(doc, path + ("http", "files", i), problem, at_value=True)
        urls = http.get("urls")
        for i, url in enumerate(urls if isinstance(urls, list) else []):
            if isinstance(url, str) and not errors.has(doc, path + ("http", "urls", i)):
                try:
                    name = unquote(urlsplit(url).path.rpartition("/")[2])
                except ValueError:
                    name = ""
                if name in ("", ".", ".."):
                    errors.add(doc, path + ("http", "urls", i),
                               f"url must end with a file name, which names the file "
                               f"(got '{_clip(url)}')", at_value=True)
        headers = http.get("headers")
        if isinstance(headers, dict):
            for key, value in headers.items():
                if isinstance(value, str):
                    problem = check_env_refs(value)
                    if problem:
                        errors.add(doc, path + ("http", "headers", key), problem, at_value=True)
    s3 = source.get("s3")
    if isinstance(s3, dict):
        keys = s3.get("keys")
        for i, key in enumerate(keys if isinstance(keys, list) else []):
            if isinstance(key, str):
                problem = check_relative_path(key, "key")
                if problem:
                    errors.add(doc, path + ("s3", "keys", i), problem, at_value=True)
    file = source.get("file")
    if isinstance(file, dict):
        fpath = file.get("path")
        if isinstance(fpath, str) and fpath and not fpath.strip():
            errors.add(doc, path + ("file", "path"), "must not be empty", at_value=True)


def _lock_of(lock: str, read: LockRead | None, required: bool) -> LockFile | str | None:
    """The parsed lock, or a message; None if it is missing or invalid and not `required`."""
    if read is None or read.problem == "absolute":
        return f"must be a path relative to the state repo root (got '{_clip(lock)}')"
    if read.problem == "outside":
        return f"lock '{_clip(lock)}' points outside the state repo"
    if read.problem == "missing":
        if not required:
            return None
        return (f"lock file '{_clip(lock)}' does not exist in the state repo "
                f"(write it with: syncbit-reconcile lock)")
    if read.problem == "not-a-file":
        return f"lock '{_clip(lock)}' is not a file"
    if read.problem is not None or read.data is None:
        return f"cannot read lock '{_clip(lock)}': {read.detail}"
    try:
        return read_lock(read.data, lock)
    except ValueError as exc:  # read_lock raises nothing else on any input
        if not required:
            return None
        detail = str(exc) or type(exc).__name__
        return f"lock '{_clip(lock)}' is invalid: {detail}"


def _check_dataset(doc: Document, errors: _Errors) -> None:
    """What can be judged from the document alone (see `_check_references` for the rest)."""
    spec = _get(doc.data, "spec")
    if not isinstance(spec, dict):
        return
    _check_source(doc, ("spec", "source"), errors)
    mirrors = spec.get("mirrors")
    for i in range(len(mirrors) if isinstance(mirrors, list) else 0):
        _check_source(doc, ("spec", "mirrors", i), errors)
        mirror = mirrors[i] if isinstance(mirrors, list) else None
        if isinstance(mirror, dict) and "node" in mirror:
            errors.add(doc, ("spec", "mirrors", i, "node"), "a node source cannot be a mirror: "
                       "published bytes come from the publishing node's swarm only")
    source = spec.get("source")
    if isinstance(source, dict) and "node" in source and mirrors:
        errors.add(doc, ("spec", "mirrors"), "a dataset published from a node has no mirrors: "
                   "no external origin takes part")

    _check_selector(doc, errors)
    size = spec.get("size")
    if size is not None and not errors.has(doc, ("spec", "size")):
        try:
            parse_size(size)
        except ValueError as exc:
            errors.add(doc, ("spec", "size"), str(exc), at_value=True)

    path = spec.get("path")
    if isinstance(path, str) and ".." in path.split("/"):
        errors.add(doc, ("spec", "path"), f"must not contain '..' segments (got '{_clip(path)}')",
                   at_value=True)


SELECTOR_KEYS = ("matchLabels", "matchExpressions")  # reserved in a selector: not label names
_NEEDS_VALUES = ("In", "NotIn")


def _check_selector(doc: Document, errors: _Errors) -> None:
    """`matchExpressions`: `values` required for In/NotIn, forbidden for Exists/DoesNotExist;
    a label given both as a plain pair and in `matchLabels` with different values."""
    base: PathT = ("spec", "placement", "selector")
    selector = _get(doc.data, *base)
    if not isinstance(selector, dict):
        return
    exprs = selector.get("matchExpressions")
    for i, expr in enumerate(exprs if isinstance(exprs, list) else []):
        path = base + ("matchExpressions", i)
        if not isinstance(expr, dict) or errors.has(doc, path + ("operator",)):
            continue
        op, values = expr.get("operator"), expr.get("values")
        if op in _NEEDS_VALUES and not errors.has(doc, path + ("values",)):
            if values is None:
                errors.add(doc, path, f"operator {op} needs values: a non-empty list of label "
                                      "values", field=format_field(path + ("values",)))
            elif isinstance(values, list) and not values:
                errors.add(doc, path + ("values",), f"must not be empty for operator {op} "
                                                    "(as in Kubernetes)", at_value=True)
        elif op in ("Exists", "DoesNotExist") and values not in (None, []):
            errors.add(doc, path + ("values",), f"must not be set for operator {op} (it "
                                                "tests only whether the label key is present)")
    labels = selector.get("matchLabels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            plain = selector.get(key)
            if key not in SELECTOR_KEYS and plain is not None and plain != value:
                errors.add(doc, base + ("matchLabels", key),
                           f"label '{_clip(str(key))}' is also given as a plain pair with another "
                           f"value ({_show(plain)}): no node can match both", at_value=True)


def _check_references(doc: Document, local: "_Local", lock_files: Mapping[str, LockRead],
                      node_names: set[str] | None, locks: dict[str, LockFile], errors: _Errors,
                      require_locks: bool) -> None:
    """A dataset's references to other documents (nodes) and to its lock file."""
    if node_names is not None:
        for i, name in local.node_refs:
            if name not in node_names and not errors.has(doc, ("spec", "placement", "nodes", i)):
                errors.add(doc, ("spec", "placement", "nodes", i),
                           f"unknown node '{_clip(name)}': no Node document has this name",
                           at_value=True)
        pub_field = ("spec", "source", "node", "name")
        if local.publisher is not None and local.publisher not in node_names \
                and not errors.has(doc, pub_field):
            errors.add(doc, pub_field, f"unknown node '{_clip(local.publisher)}': no Node "
                       "document has this name (the publishing node must be in the inventory)",
                       at_value=True)

    lock = local.lock
    if lock and not errors.has(doc, ("spec", "lock")):
        result = _lock_of(lock, lock_files.get(lock), require_locks)
        if isinstance(result, str):
            errors.add(doc, ("spec", "lock"), result, at_value=True)
        elif result is not None:
            locks[f"{doc.file}#{doc.index}"] = result


@dataclasses.dataclass(frozen=True)
class _Local:
    """What one document says on its own: its kind (None: not a Node or Dataset), the errors
    found in it alone, and its model object if it has none (a Dataset without its lock)."""

    kind: str | None
    errors: tuple[ValidationError, ...]
    model: Node | Dataset | None
    name: str | None = None  # metadata.name, if a string
    node_refs: tuple[tuple[int, str], ...] = ()  # a Dataset's spec.placement.nodes strings
    lock: str | None = None  # a Dataset's spec.lock, if a non-empty string
    publisher: str | None = None  # a Dataset's spec.source.node.name, if a string


def _check_local(doc: Document) -> _Local:
    errors = _Errors()
    kind = _check_document_header(doc, errors)
    if kind is not None:
        _schema_errors(doc, kind, errors)
        if kind == "Node":
            _check_node(doc, errors)
        else:
            _check_dataset(doc, errors)
    model: Node | Dataset | None = None
    if kind is not None and not errors.items:
        model = _build_node(doc) if kind == "Node" else _build_dataset(doc, None)
    name = _get(doc.data, "metadata", "name")
    node_refs: tuple[tuple[int, str], ...] = ()
    lock: str | None = None
    publisher: str | None = None
    spec = _get(doc.data, "spec")
    if kind == "Dataset" and isinstance(spec, dict):
        nodes = _get(spec, "placement", "nodes")
        if isinstance(nodes, list):
            node_refs = tuple((i, n) for i, n in enumerate(nodes) if isinstance(n, str))
        found = spec.get("lock")
        lock = found if isinstance(found, str) and found else None
        pub = _get(spec, "source", "node", "name")
        publisher = pub if isinstance(pub, str) else None
    return _Local(kind, tuple(errors.items), model, name if isinstance(name, str) else None,
                  node_refs, lock, publisher)


class ValidationCache:
    """Each document's `_Local`, keyed by the document object itself: documents come from the
    loader's `DocumentCache`, which hands out the same object while its file's bytes stay the
    same, and nobody mutates them. So a pass over an unchanged repo runs no JSON Schema
    validation at all, and an edited file costs the validation of its own documents.

    Least recently used first out, bounded after every validation to twice the documents of
    that validation. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[Document, _Local]] = OrderedDict()

    def local(self, doc: Document) -> _Local:
        key = id(doc)
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] is doc:
                self._entries.move_to_end(key)
                return found[1]
        result = _check_local(doc)
        with self._lock:
            self._entries[key] = (doc, result)  # the document is kept: its id stays its own
        return result

    def trim(self, documents: int) -> None:
        with self._lock:
            while len(self._entries) > 2 * documents:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The cache `validate_documents` uses unless told otherwise (one per process).
DEFAULT_VALIDATION_CACHE = ValidationCache()


# --------------------------------------------------------------------------------------------
# Model


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _selector_labels(value: Any) -> dict[str, str]:
    """The equality labels of a selector: its plain pairs and its `matchLabels`, merged."""
    if not isinstance(value, dict):
        return {}
    out = {str(k): str(v) for k, v in value.items() if k not in SELECTOR_KEYS}
    out.update(_str_map(value.get("matchLabels")))
    return out


def _requirements(value: Any) -> tuple[Requirement, ...]:
    exprs = value.get("matchExpressions") if isinstance(value, dict) else None
    return tuple(Requirement(key=str(e["key"]), operator=e["operator"],
                             values=_strs(e.get("values")))
                 for e in (exprs if isinstance(exprs, list) else ()))


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _build_source(data: Mapping[str, Any]) -> Source:
    (kind, body), = data.items()
    if kind == "http":
        return HttpSource(base_url=_opt_str(body.get("baseUrl")), files=_strs(body.get("files")),
                          urls=_strs(body.get("urls")), headers=_str_map(body.get("headers")))
    if kind == "s3":
        return S3Source(bucket=str(body["bucket"]), prefix=_opt_str(body.get("prefix")),
                        keys=_strs(body.get("keys")),
                        endpoint_url=_opt_str(body.get("endpointUrl")),
                        region=_opt_str(body.get("region")), profile=_opt_str(body.get("profile")))
    if kind == "hf":
        # dataset.schema.json's enum for repoType is exactly these (validated before this runs).
        repo_type = cast('Literal["model", "dataset", "space"]', str(body.get("repoType", "model")))
        return HfSource(repo=str(body["repo"]), repo_type=repo_type,
                        revision=_opt_str(body.get("revision")),
                        include=_strs(body.get("include")), exclude=_strs(body.get("exclude")))
    if kind == "file":
        return FileSource(path=str(body["path"]))
    if kind == "node":
        return NodeSource(name=str(body["name"]), path=str(body["path"]))
    raise AssertionError(f"unvalidated source type {kind!r}")  # pragma: no cover


def _position_of(doc: Document) -> Position:
    return Position(doc.file, doc.line, doc.col)


def _build_node(doc: Document) -> Node:
    data = doc.data
    spec = data["spec"]
    capacity = spec.get("capacity")
    return Node(
        name=str(data["metadata"]["name"]),
        peer=str(spec["peer"]),
        api=str(spec["api"]),
        labels=_str_map(data["metadata"].get("labels")),
        capacity=None if capacity is None else parse_size(capacity),
        storage_group=_opt_str(spec.get("storageGroup")),
        cordoned=bool(spec.get("cordoned", False)),
        position=_position_of(doc),
    )


def _build_dataset(doc: Document, lock: LockFile | None) -> Dataset:
    data = doc.data
    spec = data["spec"]
    placement = spec["placement"]
    nodes = placement.get("nodes")
    replicas = placement.get("replicas")
    return Dataset(
        name=str(data["metadata"]["name"]),
        version=str(spec["version"]),
        source=_build_source(spec["source"]),
        placement=Placement(
            nodes=None if nodes is None else _strs(nodes),
            replicas=None if replicas is None else int(replicas),
            all=bool(placement.get("all", False)),
            selector=_selector_labels(placement.get("selector")),
            match_expressions=_requirements(placement.get("selector")),
        ),
        path=str(spec["path"]),
        mirrors=tuple(_build_source(m) for m in spec.get("mirrors") or ()),
        lock=lock,
        priority=str(spec.get("priority", "normal")),  # type: ignore[arg-type]
        keep_versions=int(spec.get("keepVersions", 1)),
        suspend=bool(spec.get("suspend", False)),
        size=None if spec.get("size") is None else parse_size(spec["size"]),
        split=None if spec.get("split") is None else int(spec["split"]["copies"]),
        position=_position_of(doc),
    )


# --------------------------------------------------------------------------------------------
# Entry points


def validate_documents(documents: list[Document], lock_files: Mapping[str, LockRead],
                       revision: str, prior_errors: Iterable[ValidationError] = (), *,
                       require_locks: bool = True,
                       cache: ValidationCache | None = DEFAULT_VALIDATION_CACHE
                       ) -> DesiredState | list[ValidationError]:
    """Validate parsed documents and the bytes of the locks they name (from
    `loader.load_documents` and `loader.read_locks`): pure, no file is opened here. See
    `load_desired_state`. `cache`: what each document says on its own,
    remembered across calls (None: judge every document again)."""
    errors = _Errors()
    for e in prior_errors:
        errors.append(e)
    documents_incomplete = bool(errors.items)  # some file could not be read or parsed

    typed: list[tuple[Document, str, _Local]] = []
    for doc in documents:
        local = cache.local(doc) if cache is not None else _check_local(doc)
        for error in local.errors:
            errors.append(error, doc)
        if local.kind is not None:
            typed.append((doc, local.kind, local))
    if cache is not None:
        cache.trim(len(documents))

    # Duplicate names, per kind: the second occurrence is the error.
    first_seen: dict[tuple[str, str], Document] = {}
    for doc, kind, local in typed:
        name = local.name
        if name is None:
            continue
        first = first_seen.setdefault((kind, name), doc)
        if first is not doc:
            fl, _ = position(first.data, ("metadata", "name"), True, (first.line, first.col))
            errors.add(doc, ("metadata", "name"),
                       f"duplicate {kind} name '{name}' (first defined at {first.file}:{fl})",
                       at_value=True)

    # A reference to a node cannot be judged if a document could not be read at all.
    node_names = None if documents_incomplete else {
        name for (kind, name) in first_seen if kind == "Node"}
    locks: dict[str, LockFile] = {}
    for doc, kind, local in typed:
        if kind == "Dataset":
            _check_references(doc, local, lock_files, node_names, locks, errors, require_locks)

    if not documents and not errors.items:
        errors.append(ValidationError(".", 1, 1, REPO_FIELD,
                                      "no documents found: the state repo must hold at least "
                                      "the Node documents of the inventory (.yaml/.yml files)"))
    if errors.items:
        return sorted(errors.items, key=lambda e: (e.file, e.line, e.col, e.field, e.message))

    nodes: dict[str, Node] = {}
    datasets: dict[str, Dataset] = {}
    for doc, kind, local in typed:
        model = local.model
        assert model is not None  # every typed document has one: there were no errors
        if isinstance(model, Node):
            nodes[model.name] = model
        else:
            lock = locks.get(f"{doc.file}#{doc.index}")
            datasets[model.name] = model if lock is None else dataclasses.replace(model, lock=lock)
    return DesiredState(revision=revision, nodes=nodes, datasets=datasets)


def load_desired_state(root: Path, revision: str, *, require_locks: bool = True
                       ) -> DesiredState | list[ValidationError]:
    """Read, validate and convert the state repo at `root` (a directory, or a symlink to one).

    Returns the model, or every problem found, sorted by file, line, column. Never raises for
    problems in the repo's content. `root` is resolved once, so that a symlink swapped meanwhile
    (git-sync) cannot mix two revisions; pass the same resolved path to `state_revision`.

    `require_locks=False` (for `syncbit-reconcile lock`, which writes them): a `spec.lock` that
    does not exist yet or does not parse is not an error and gives `lock=None`; a lock path that
    is absolute or leaves the state repo still is.
    """
    base = Path(root).resolve()
    with gc_paused():  # a third of a cold pass's CPU otherwise (see gcpause)
        loaded = load_documents(base)
        return validate_documents(loaded.documents, read_locks(base, loaded.documents),
                                  revision, loaded.errors, require_locks=require_locks)
