"""Read the YAML documents of a state repo, keeping line/column positions.

Every `.yaml`/`.yml` file under the root (recursively; hidden files and directories such as
`.git` skipped; the root itself may be a symlink, as git-sync swaps them) and every document in
each file, loaded with ruamel.yaml's round-trip loader so that `.lc` positions survive. Problems
(unreadable file, not UTF-8, YAML syntax error, duplicate key) become `ValidationError`s, never
exceptions.

A file is split into documents at its `---` / `...` markers before parsing, so that a syntax
error in one document does not hide the others (document markers at the start of a line cannot
occur inside a YAML scalar, so the split is exact).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.model.desired import ValidationError

__all__ = ["Document", "LoadResult", "LockRead", "iter_state_files", "load_documents",
           "parse_documents", "read_locks",
           "YAML_FIELD", "FILE_FIELD", "YAML_SUFFIXES"]

YAML_SUFFIXES = (".yaml", ".yml")
YAML_FIELD = "(yaml)"  # FIELD of syntax errors, duplicate keys
FILE_FIELD = "(file)"  # FIELD of files that cannot be read or decoded

_DOC_START = re.compile(r"---(?=[ \t\r\n]|$)")
_DOC_END = re.compile(r"\.\.\.(?=[ \t\r\n]|$)")


@dataclass(frozen=True)
class Document:
    """One non-empty YAML document."""

    file: str  # relative to the state repo root, '/'-separated
    index: int  # 0-based index among the file's non-empty documents
    data: Any  # ruamel round-trip data: CommentedMap, CommentedSeq or a scalar
    line: int  # 1-based line where the document's content starts
    col: int  # 1-based column


@dataclass(frozen=True)
class LoadResult:
    documents: list[Document]
    errors: list[ValidationError]
    files: list[str]  # every YAML file found, relative, sorted


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def iter_state_files(root: Path, suffixes: tuple[str, ...] | None = YAML_SUFFIXES
                     ) -> Iterator[Path]:
    """Files under `root` (resolved first), sorted by relative path, hidden entries skipped.

    Symlinked directories inside the tree are not followed (no loops, no escaping the repo);
    symlinked files are returned as they are. `suffixes=None` returns every file.
    """
    base = root.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if _is_hidden(name):
                continue
            if suffixes is not None and not name.lower().endswith(suffixes):
                continue
            path = Path(dirpath, name)
            found.append((path.relative_to(base).as_posix(), path))
    found.sort(key=lambda item: item[0])
    for _, path in found:
        yield path


def _split_documents(text: str) -> list[tuple[int, str]]:
    """(0-based first line, text) of each document chunk of a YAML stream.

    A chunk that holds only comments, blank lines or directives is merged into the next one.
    """
    lines = text.splitlines(keepends=True)
    chunks: list[tuple[int, list[str]]] = []
    start = 0
    current: list[str] = []
    for i, line in enumerate(lines):
        if _DOC_START.match(line) and current:
            chunks.append((start, current))
            start, current = i, []
        current.append(line)
        if _DOC_END.match(line):
            chunks.append((start, current))
            start, current = i + 1, []
    if current:
        chunks.append((start, current))

    merged: list[tuple[int, str]] = []
    pending: tuple[int, list[str]] | None = None
    for first, chunk in chunks:
        if pending is not None:
            first, chunk = pending[0], pending[1] + chunk
            pending = None
        if all(not ln.strip() or ln.lstrip().startswith(("#", "%")) for ln in chunk):
            pending = (first, chunk)
            continue
        merged.append((first, "".join(chunk)))
    if pending is not None:
        merged.append((pending[0], "".join(pending[1])))
    return merged


def _yaml_error(file: str, exc: YAMLError, line_offset: int) -> ValidationError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else line_offset + 1
    col = mark.column + 1 if mark is not None else 1
    if isinstance(exc, MarkedYAMLError):
        problem = (exc.problem or "").strip()
        m = re.match(r'found duplicate key "(.*)" with value "(.*)" \(original value: "(.*)"\)$',
                     problem, re.S)
        if m:
            return ValidationError(file, line, col, YAML_FIELD,
                                   f"duplicate key '{m.group(1)}': each key may appear only once "
                                   f"in a mapping")
        message = f"invalid YAML: {problem or 'syntax error'}"
        ctx_mark = exc.context_mark
        if exc.context and ctx_mark is not None and exc.problem_mark is not None \
                and (ctx_mark.line, ctx_mark.column) != (exc.problem_mark.line,
                                                         exc.problem_mark.column):
            message += f" ({exc.context.strip()} started at line {ctx_mark.line + 1}, " \
                       f"column {ctx_mark.column + 1})"
        elif exc.context:
            message += f" ({exc.context.strip()})"
        return ValidationError(file, line, col, YAML_FIELD, message)
    # Reader errors (control characters) span lines; `validate` prints one error per line.
    return ValidationError(file, line, col, YAML_FIELD, "invalid YAML: " + " ".join(str(exc).split()))


def parse_documents(text: str, file: str) -> tuple[list[Document], list[ValidationError]]:
    """The non-empty documents of one YAML text, and its syntax errors."""
    docs: list[Document] = []
    errors: list[ValidationError] = []
    for first_line, chunk in _split_documents(text):
        yaml = YAML(typ="rt", pure=True)
        yaml.allow_duplicate_keys = False
        try:
            # Leading newlines keep the positions ruamel reports equal to those in the file.
            loaded = list(yaml.load_all("\n" * first_line + chunk))
        except YAMLError as exc:
            errors.append(_yaml_error(file, exc, first_line))
            continue
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Odd constructs ruamel rejects without a mark (e.g. absurd timestamps).
            errors.append(ValidationError(file, first_line + 1, 1, YAML_FIELD,
                                          f"invalid YAML: {exc}"))
            continue
        for data in loaded:
            if data is None:
                continue
            lc = getattr(data, "lc", None)
            line = (lc.line + 1) if lc is not None and lc.line is not None else first_line + 1
            col = (lc.col + 1) if lc is not None and lc.col is not None else 1
            docs.append(Document(file, len(docs), data, line, col))
    return docs, errors


def _decode(data: bytes, file: str) -> str | ValidationError:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return ValidationError(file, line, col, FILE_FIELD,
                               f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at "
                               f"offset {exc.start})")


def load_documents(root: Path) -> LoadResult:
    """Every non-empty YAML document under `root`, in file order then document order."""
    base = root.resolve()
    documents: list[Document] = []
    errors: list[ValidationError] = []
    files: list[str] = []
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is not a directory"
        errors.append(ValidationError(".", 1, 1, FILE_FIELD, f"state repo {root} {what}"))
        return LoadResult(documents, errors, files)
    for path in iter_state_files(base):
        rel = path.relative_to(base).as_posix()
        files.append(rel)
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(base):
                errors.append(ValidationError(rel, 1, 1, FILE_FIELD,
                                              "symlink points outside the state repo"))
                continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            errors.append(ValidationError(rel, 1, 1, FILE_FIELD,
                                          f"cannot read file: {reason.lower()}"))
            continue
        text = _decode(raw, rel)
        if isinstance(text, ValidationError):
            errors.append(text)
            continue
        docs, errs = parse_documents(text, rel)
        documents.extend(docs)
        errors.extend(errs)
    return LoadResult(documents, errors, files)


@dataclass(frozen=True)
class LockRead:
    """What reading one `spec.lock` path gave: its bytes, or why there are none. Validation
    (pure) turns a problem into the user's message."""

    data: bytes | None = None
    problem: str | None = None  # absolute | outside | missing | not-a-file | unreadable
    detail: str = ""


def read_lock_file(base: Path, lock: str) -> LockRead:
    """The bytes of the lock at `lock` (relative to the state repo `base`, resolved)."""
    if PurePosixPath(lock).is_absolute() or lock.startswith("\\"):
        return LockRead(problem="absolute")
    try:
        target = (base / lock).resolve()
        if not target.is_relative_to(base):
            return LockRead(problem="outside")
        if not target.exists():
            return LockRead(problem="missing")
        if not target.is_file():
            return LockRead(problem="not-a-file")
        return LockRead(data=target.read_bytes())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        detail = getattr(exc, "strerror", None) or str(exc)
        return LockRead(problem="unreadable", detail=detail.lower())


def read_locks(base: Path, documents: Iterable[Document]) -> dict[str, LockRead]:
    """Every `spec.lock` the documents name (strings only; validation judges the rest)."""
    out: dict[str, LockRead] = {}
    for doc in documents:
        spec = doc.data.get("spec") if isinstance(doc.data, dict) else None
        lock = spec.get("lock") if isinstance(spec, dict) else None
        if isinstance(lock, str) and lock and lock not in out:
            out[lock] = read_lock_file(base, lock)
    return out
