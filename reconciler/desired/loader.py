"""Read the YAML documents of a state repo, keeping line/column positions.

Every `.yaml`/`.yml` file under the root (recursively; hidden files and directories such as
`.git` skipped; the root itself may be a symlink, as git-sync swaps them) and every document in
each file, as ruamel.yaml's round-trip loader gives it, with its `.lc` positions (built from
libyaml's nodes when a file is plain YAML, see `fastyaml`; by ruamel otherwise). Problems
(unreadable file, not UTF-8, YAML syntax error, duplicate key) become `ValidationError`s, never
exceptions.

A file is split into documents at its `---` / `...` markers before parsing, so that a syntax
error in one document does not hide the others (document markers at the start of a line cannot
occur inside a YAML scalar, so the split is exact). One parser serves every document of a file
and is told where its chunk starts, so parsing is linear in the size of the file.

Reading never skips and never blocks (DESIGN §3: a repo that cannot be read whole is a rejected
revision): a directory or file that cannot be read, a `.yaml` that is not a regular file (FIFO,
socket, device: refused after `stat`, never opened), a symlink leaving the repo, or a file over
`MAX_FILE_BYTES` (all files together: `MAX_TOTAL_BYTES`) is a `ValidationError`.

Most documents are composed by libyaml (`fastyaml`, ~20x faster) into the data ruamel would
give; anything outside that plain subset, and every error, is ruamel's to parse and word.
Parsing is still the expensive part, so a `DocumentCache` keeps
each file's documents keyed by its path and the SHA-256 of the bytes just read: every file is
still read on every load (a changed file is always seen, whatever its mtime says), and only a
file whose bytes changed is parsed again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import Reader, ReaderError

from reconciler.desired.fastyaml import compose_chunk
from reconciler.model.desired import ValidationError

__all__ = ["Document", "DocumentCache", "LoadResult", "LockRead", "ScanProblem", "StateFiles",
           "RefusedFile", "StateRepoReadError", "iter_state_files", "load_documents", "os_reason",
           "parse_documents", "read_locks", "read_regular_file", "scan_state_files",
           "YAML_FIELD", "FILE_FIELD", "REPO_FIELD", "YAML_SUFFIXES",
           "MAX_FILE_BYTES", "MAX_TOTAL_BYTES", "MAX_SCAN_ENTRIES", "MAX_LOCK_BYTES"]

YAML_SUFFIXES = (".yaml", ".yml")
YAML_FIELD = "(yaml)"  # FIELD of syntax errors, duplicate keys
FILE_FIELD = "(file)"  # FIELD of files and directories that cannot be read or decoded
REPO_FIELD = "(repo)"  # FIELD of problems of the repo as a whole

# Caps that keep one pass bounded in memory and time; a repo over them is rejected, not cut.
MAX_FILE_BYTES = 16 * 1024 * 1024  # one .yaml/.yml file
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # all .yaml/.yml files of the repo together
MAX_SCAN_ENTRIES = 1_000_000  # directory entries visited (non-hidden, any type)
MAX_LOCK_BYTES = 64 * 1024 * 1024  # one lock (.torrent) named by `spec.lock`

_READ_CHUNK = 1 << 20
# O_NONBLOCK: opening a FIFO swapped in after the stat check must return at once, not wait for
# a writer; O_NOCTTY: a terminal device never becomes our controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)

_DOC_START = re.compile(r"---(?=[ \t\r\n]|$)")
_DOC_END = re.compile(r"\.\.\.(?=[ \t\r\n]|$)")


@dataclass(frozen=True)
class Document:
    """One non-empty YAML document."""

    file: str  # relative to the state repo root, '/'-separated
    index: int  # 0-based index among the file's non-empty documents
    data: Any  # round-trip data with `lc` positions: CommentedMap/PosMap, CommentedSeq/PosSeq, scalar
    line: int  # 1-based line where the document's content starts
    col: int  # 1-based column


@dataclass(frozen=True)
class LoadResult:
    documents: list[Document]
    errors: list[ValidationError]
    files: list[str]  # every YAML file found, relative, sorted


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def os_reason(exc: BaseException) -> str:
    """`permission denied (EACCES)`: the OS error in words, with its errno name for grepping."""
    code = getattr(exc, "errno", None)
    words = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).lower()
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{words} ({name})" if name else words


def _kind_of(mode: int) -> str:
    """What a non-regular file is, for a message that says why it was refused."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return f"of type {stat.S_IFMT(mode):o}"


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB ({n} bytes)"


@dataclass(frozen=True)
class ScanProblem:
    """A part of the tree that could not be listed: its files would silently be missing."""

    rel: str  # '/'-separated, relative to the root; '.' for the root itself
    message: str
    whole_repo: bool = False  # the root or a repo-wide cap, not one directory


@dataclass(frozen=True)
class StateFiles:
    files: list[Path] = field(default_factory=list)  # sorted by relative path
    problems: list[ScanProblem] = field(default_factory=list)


class StateRepoReadError(OSError):
    """The state repo could not be listed whole (for callers that need every file or none)."""


def scan_state_files(root: Path, suffixes: tuple[str, ...] | None = YAML_SUFFIXES
                     ) -> StateFiles:
    """Files under `root` (resolved first), sorted by relative path, hidden entries skipped,
    and every directory that could not be listed (never skipped silently).

    Symlinked directories are not entered (no loops, no escaping the repo); symlinks and other
    non-directories are returned as they are, unopened, for the caller to check. The walk is
    bounded: no symlink is followed and at most `MAX_SCAN_ENTRIES` entries are visited.
    `suffixes=None` returns every file.
    """
    base = root.resolve()
    found: list[tuple[str, Path]] = []
    problems: list[ScanProblem] = []
    stack: list[Path] = [base]
    visited = 0
    while stack:
        directory = stack.pop()
        rel_dir = directory.relative_to(base).as_posix()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            if directory == base:
                problems.append(ScanProblem(".", f"cannot read the state repo directory {base}: "
                                                 f"{os_reason(exc)}", whole_repo=True))
            else:
                problems.append(ScanProblem(rel_dir, f"cannot read directory: {os_reason(exc)}"))
            continue
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            visited += 1
            if visited > MAX_SCAN_ENTRIES:
                problems.append(ScanProblem(".", f"the state repo has more than "
                                                 f"{MAX_SCAN_ENTRIES} entries; not read further",
                                            whole_repo=True))
                stack.clear()
                break
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as exc:
                problems.append(ScanProblem(path.relative_to(base).as_posix(),
                                            f"cannot read file: {os_reason(exc)}"))
                continue
            if is_dir:
                stack.append(path)
            elif suffixes is None or entry.name.lower().endswith(suffixes):
                found.append((path.relative_to(base).as_posix(), path))
    found.sort(key=lambda item: item[0])
    problems.sort(key=lambda p: p.rel)
    return StateFiles([path for _, path in found], problems)


def iter_state_files(root: Path, suffixes: tuple[str, ...] | None = YAML_SUFFIXES
                     ) -> Iterator[Path]:
    """The files of `scan_state_files`; raises `StateRepoReadError` if any part of the tree
    could not be listed, so a caller never works on part of the repo believing it whole."""
    scanned = scan_state_files(root, suffixes)
    if scanned.problems:
        first = scanned.problems[0]
        raise StateRepoReadError(f"{first.rel}: {first.message}")
    yield from scanned.files


class RefusedFile(Exception):
    """A file that must not be read: not a regular file, or over the size cap. The message
    says which, for the user."""


def read_regular_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of `path` (symlinks followed), if it is a regular file of at most `limit`
    bytes. Never blocks on a FIFO or device: the type is checked with `stat` before opening,
    the open is non-blocking, and `fstat` on the open file checks again (a swap in between).

    Raises OSError when it cannot be read, `RefusedFile` when it must not be.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile(f"not a regular file ({_kind_of(st.st_mode)}): refused without reading it")
    if st.st_size > limit:
        raise RefusedFile(f"file is {_size(st.st_size)}, over the cap of {_size(limit)} per file")
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedFile(f"not a regular file ({_kind_of(st.st_mode)}): refused")
        chunks: list[bytes] = []
        total = 0
        # Bounded: every round reads at least one byte or stops, and stops past `limit`.
        while total <= limit:
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise RefusedFile(f"file grew over the cap of {_size(limit)} per file while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


# YAML line breaks (1.2: CR, LF, CRLF; not the other separators `str.splitlines` knows), so
# that line numbers agree with ruamel's and a form feed is not taken for a line start.
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _only_comments(chunk: list[str]) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith(("#", "%")) for ln in chunk)


def _split_documents(text: str) -> list[tuple[int, str]]:
    """(0-based first line, text) of each document chunk of a YAML stream.

    A chunk that holds only comments, blank lines or directives is merged into the next one.
    Linear in the size of the text.
    """
    chunks: list[tuple[int, list[str]]] = []
    start = 0
    current: list[str] = []
    for i, match in enumerate(_LINES.finditer(text)):
        line = match.group()
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
            pending[1].extend(chunk)  # in place: a run of comment-only chunks stays linear
            first, chunk = pending
            pending = None
        if _only_comments(chunk):
            pending = (first, chunk)
            continue
        merged.append((first, "".join(chunk)))
    if pending is not None:
        merged.append((pending[0], "".join(pending[1])))
    return merged


# How many of the newlines that stand for a chunk's preceding lines are really parsed: ruamel
# scans a tab after one leading newline differently from after two or more (the test
# tests/desired/test_parse_linear.py compares with feeding all of them).
_REAL_NEWLINES = 2


def _new_yaml() -> YAML:
    """A round-trip parser whose reader exists before the first load, so that its position can
    be set (ruamel creates it lazily, with this same class, on the first load)."""
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    if yaml.Reader is None:
        yaml.Reader = Reader
    return yaml


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line: `validate` prints one error per line."""
    return " ".join(str(exc).split()) or type(exc).__name__


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


def parse_documents(text: str, file: str, *, fast: bool = True
                    ) -> tuple[list[Document], list[ValidationError]]:
    """The non-empty documents of one YAML text, and its syntax errors.

    Fast path (`fast`): the whole text composed by libyaml when every document of it is in
    `fastyaml`'s plain subset; else chunk by chunk, each chunk by libyaml or by ruamel.

    Each chunk is parsed on its own (an error hides no other document), by one parser whose
    reader is set to the chunk's first line: positions are those in the file, and the cost is
    linear in the file's size (prefixing newlines, as before, made it quadratic in documents).
    """
    docs: list[Document] = []
    errors: list[ValidationError] = []
    whole = compose_chunk(text, 0) if fast else None
    if whole is not None:  # a valid stream of plain documents: the common case, one C parse
        return [Document(file, i, data, data.lc.line + 1, data.lc.col + 1)
                for i, data in enumerate(whole)], errors
    yaml = _new_yaml()
    for first_line, chunk in _split_documents(text):
        composed = compose_chunk(chunk, first_line) if fast else None
        if composed is not None:  # libyaml's answer is certainly ruamel's (see fastyaml)
            for data in composed:
                docs.append(Document(file, len(docs), data, data.lc.line + 1, data.lc.col + 1))
            continue
        # As if `first_line` newlines preceded the chunk: up to `_REAL_NEWLINES` real ones
        # (ruamel scans a stream that starts with line breaks differently, e.g. a leading
        # tab), the rest added to the reader's counters (index: one character per newline).
        real = min(first_line, _REAL_NEWLINES)
        skipped = first_line - real
        yaml.reader.line = skipped
        yaml.reader.index = skipped
        try:
            loaded = list(yaml.load_all("\n" * real + chunk))
        except YAMLError as exc:
            if isinstance(exc, ReaderError) and isinstance(exc.position, int):
                exc.position += skipped
            errors.append(_yaml_error(file, exc, first_line))
            yaml = _new_yaml()  # no state (anchors, half-built objects) leaks to the next chunk
            continue
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Odd constructs ruamel rejects without a mark (e.g. absurd timestamps).
            errors.append(ValidationError(file, first_line + 1, 1, YAML_FIELD,
                                          f"invalid YAML: {_one_line(exc)}"))
            yaml = _new_yaml()
            continue
        except Exception as exc:  # noqa: BLE001 - ruamel's constructors on hostile input
            # ruamel crashes on some malformed scalars (`!!int 0x`: IndexError); the revision
            # is rejected like any syntax error instead of failing the pass.
            errors.append(ValidationError(file, first_line + 1, 1, YAML_FIELD,
                                          f"invalid YAML: cannot construct a value "
                                          f"({type(exc).__name__}: {_one_line(exc)})"))
            yaml = _new_yaml()
            continue
        for data in loaded:
            if data is None:
                continue
            lc = getattr(data, "lc", None)
            line = (lc.line + 1) if lc is not None and lc.line is not None else first_line + 1
            col = (lc.col + 1) if lc is not None and lc.col is not None else 1
            docs.append(Document(file, len(docs), data, line, col))
    return docs, errors


class DocumentCache:
    """The parsed documents and syntax errors of recently loaded files, keyed by (relative
    path, SHA-256 of the bytes). Parsing is a pure function of those two, so a hit gives what
    parsing would; the documents are shared, and nobody mutates them.

    Least recently used first out, bounded after every load to twice the files of that load
    (so that loading two trees in turn, the state repo and the last good snapshot, evicts
    neither, and memory stays bounded by what the recent loads held). Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, bytes],
                                   tuple[list[Document], list[ValidationError]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def parse(self, text: str, raw: bytes, file: str
              ) -> tuple[list[Document], list[ValidationError]]:
        key = (file, hashlib.sha256(raw).digest())
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        found = parse_documents(text, file)
        with self._lock:
            self._entries[key] = found
        return found

    def trim(self, files: int) -> None:
        """After a load of `files` files: keep at most twice that many entries."""
        with self._lock:
            while len(self._entries) > 2 * files:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The cache `load_documents` uses unless told otherwise (one per process).
DEFAULT_CACHE = DocumentCache()


def _decode(data: bytes, file: str) -> str | ValidationError:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return ValidationError(file, line, col, FILE_FIELD,
                               f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at "
                               f"offset {exc.start})")


def _read_yaml_file(base: Path, path: Path, rel: str, budget: int
                    ) -> bytes | ValidationError:
    """The bytes of one YAML file of the repo, or why it cannot be part of the revision."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            try:
                target = path.resolve()
            except RuntimeError:  # a symlink loop (Python < 3.13)
                return ValidationError(rel, 1, 1, FILE_FIELD, "cannot read file: symlink loop")
            if not target.is_relative_to(base):
                return ValidationError(rel, 1, 1, FILE_FIELD,
                                       "symlink points outside the state repo")
        size = os.stat(path).st_size
        if size > budget and size <= MAX_FILE_BYTES:
            return ValidationError(rel, 1, 1, REPO_FIELD,
                                   f"the .yaml/.yml files of the state repo exceed the cap of "
                                   f"{_size(MAX_TOTAL_BYTES)} in total; not read further")
        return read_regular_file(path, MAX_FILE_BYTES)
    except OSError as exc:
        return ValidationError(rel, 1, 1, FILE_FIELD, f"cannot read file: {os_reason(exc)}")
    except RefusedFile as exc:
        return ValidationError(rel, 1, 1, FILE_FIELD, str(exc))


def load_documents(root: Path, cache: DocumentCache | None = DEFAULT_CACHE) -> LoadResult:
    """Every non-empty YAML document under `root`, in file order then document order.

    Whatever could not be read (a directory, a file, a file refused by type or size) is an
    error, never a skip: its documents would otherwise vanish from the desired state.
    `cache`: documents of files whose bytes did not change (None: parse everything).
    """
    base = root.resolve()
    documents: list[Document] = []
    errors: list[ValidationError] = []
    files: list[str] = []
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is not a directory"
        errors.append(ValidationError(".", 1, 1, FILE_FIELD, f"state repo {root} {what}"))
        return LoadResult(documents, errors, files)
    scanned = scan_state_files(base)
    for problem in scanned.problems:
        errors.append(ValidationError(problem.rel, 1, 1,
                                      REPO_FIELD if problem.whole_repo else FILE_FIELD,
                                      problem.message))
    budget = MAX_TOTAL_BYTES
    for path in scanned.files:
        rel = path.relative_to(base).as_posix()
        files.append(rel)
        if budget < 0:
            continue  # over the total cap (reported once): list the files, read no more
        raw = _read_yaml_file(base, path, rel, budget)
        if isinstance(raw, ValidationError):
            errors.append(raw)
            if raw.field == REPO_FIELD:
                budget = -1
            continue
        budget -= len(raw)
        text = _decode(raw, rel)
        if isinstance(text, ValidationError):
            errors.append(text)
            continue
        docs, errs = (parse_documents(text, rel) if cache is None
                      else cache.parse(text, raw, rel))
        documents.extend(docs)
        errors.extend(errs)
    if cache is not None:
        cache.trim(len(files))
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
        return LockRead(data=read_regular_file(target, MAX_LOCK_BYTES))
    except RefusedFile as exc:
        return LockRead(problem="unreadable", detail=str(exc))
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
