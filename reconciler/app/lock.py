"""`syncbit-reconcile lock`: pin datasets to exact bytes.

Each source file is read once, streaming, into the hybrid-torrent hasher (several files at a
time, a large one as concurrent range requests: engine/locking.py); the torrent is written
under the state repo (`locks/<dataset>.torrent` unless `spec.lock` already names a path) and
`spec.lock` is set by a one-line edit of the YAML text, at the position ruamel.yaml's composer
reports, so the user's comments and layout stay exactly as they were.
The source revision (HTTP ETag, file mtime+size) is recorded outside the info dict, so it never
changes the info-hash; the same bytes from the same source give a byte-identical torrent.

A dataset published from a node (`source: {node: ...}`) has no source to read here: its lock
is the torrent the publishing node built from its snapshot, asked from that node's API
(`GET /v1/metadata/<dataset>/<key>`, which answers inventory addresses only: run `lock` on a
node of the inventory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import aiohttp
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from reconciler.adapters import atomic
from reconciler.core.pinning import check, metadata_key
from reconciler.model.desired import Dataset, DesiredState, NodeSource
from reconciler.desired.validate import load_desired_state
from reconciler.adapters.sources import OriginContext, OriginError
from reconciler.engine.locking import build_lock
from reconciler.torrent.hybrid import read_lock
from reconciler.core.units import format_bytes

LOCK_DIR = "locks"


@dataclass(frozen=True)
class Locked:
    dataset: str
    path: str  # relative to the state repo
    info_hash: str
    files: int
    bytes_total: int
    changed: bool  # the torrent's bytes differ from what was there


async def lock_state_repo(root: Path, names: list[str]) -> int:
    """Lock `names` (all datasets when empty); exit 0, or 1 when any source or file failed."""
    state = load_desired_state(root, "lock", require_locks=False)
    if not isinstance(state, DesiredState):
        for e in state:
            print(e, file=sys.stderr)
        print(f"{root}: fix these errors before locking", file=sys.stderr)
        return 1
    unknown = [n for n in names if n not in state.datasets]
    if unknown:
        print(f"syncbit-reconcile: no such dataset: {', '.join(unknown)}", file=sys.stderr)
        return 1
    failed = 0
    async with OriginContext(root) as ctx:
        for name in names or sorted(state.datasets):
            d = state.datasets[name]
            try:
                with _bar(name) as progress:
                    res = await lock_one(root, d, ctx, progress, state)
            except (OriginError, OSError, ValueError) as e:
                failed += 1
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                continue
            verb = "locked" if res.changed else "unchanged"
            print(f"{name}: {verb} {res.files} file(s), {format_bytes(res.bytes_total)}, "
                  f"info-hash {res.info_hash[:16]}… -> {res.path}")
    return 1 if failed else 0


@contextlib.contextmanager
def _bar(name: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for interactive runs; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from reconciler.app.ui import err
    with Progress(TextColumn(f"{name:<20} hashing"), BarColumn(), DownloadColumn(binary_units=True),
                  TransferSpeedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


async def lock_one(root: Path, d: Dataset, ctx: OriginContext,
                   progress: Callable[[int, int], None] | None = None,
                   state: DesiredState | None = None) -> Locked:
    if isinstance(d.source, NodeSource):
        torrent = await published_torrent(d, state)
    else:
        torrent = await build_lock(d, ctx, progress)
    rel = d.lock.path if d.lock else _declared_lock(root, d) or f"{LOCK_DIR}/{d.name}.torrent"
    target = root / rel
    changed = not target.exists() or target.read_bytes() != torrent
    if changed:
        atomic.write_bytes(target, torrent)
    set_spec_lock(root, d, rel)
    info = read_lock(torrent, rel)
    return Locked(d.name, rel, info.info_hash, len(info.files), info.total_bytes, changed)


PUBLISHER_TIMEOUT = 30.0  # seconds for the publishing node to answer


async def published_torrent(d: Dataset, state: DesiredState | None) -> bytes:
    """The torrent the publishing node of `d` built (OriginError naming the node if it has
    none: still building, refused, or not answering)."""
    src = d.source
    assert isinstance(src, NodeSource)
    node = state.nodes.get(src.name) if state is not None else None
    if node is None:
        raise OriginError(f"publishing node {src.name} is not in the inventory")
    url = f"http://{node.api}/v1/metadata/{d.name}/{metadata_key(d)}"
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PUBLISHER_TIMEOUT)) as http:
            async with http.get(url) as r:
                body = await r.read()
                if r.status == 200:
                    check(body, d, f"the torrent from node {src.name}")
                    return body
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {}
                doc = doc if isinstance(doc, dict) else {}
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise OriginError(f"publishing node {src.name} ({node.api}) does not answer: "
                          f"{e or type(e).__name__}") from None
    state_ = doc.get("state")
    if state_ == "failed":
        raise OriginError(str(doc.get("error") or f"node {src.name} could not publish it"))
    if state_ in ("building", "waiting"):
        raise OriginError(f"node {src.name} is still publishing version {d.version}: "
                          "lock it once it is Ready there")
    if r.status == 403:
        raise OriginError(f"node {src.name} answers inventory addresses only: run lock on a "
                          "node of the inventory")
    raise OriginError(f"node {src.name} has not published version {d.version} of {d.name} "
                      f"(HTTP {r.status}): is the dataset committed and its daemon running?")


def _declared_lock(root: Path, d: Dataset) -> str | None:
    """`spec.lock` as written, when it names a file that does not exist yet."""
    spec = _find_spec(root, d)[2]
    value = _map_get(spec, "lock")
    return str(value.value) if isinstance(value, ScalarNode) and value.value else None


# Setting `spec.lock` edits the file's text in place at the positions the YAML composer reports,
# rather than re-dumping it: a round-trip dump can drop a leading comment or `---`, a BOM, CRLF
# line ends, `...` markers, or re-indent the file, and must never change more than the one line.


def _map_get(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _scalar_value(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def _find_spec(root: Path, d: Dataset) -> tuple[Path, str, MappingNode]:
    """The dataset's file, its text (exactly as on disk) and the composed `spec` mapping."""
    assert d.position is not None
    path = root / d.position.file
    text = path.read_bytes().decode("utf-8")  # no newline translation: CRLF files stay CRLF
    for doc in YAML(typ="rt", pure=True).compose_all(text):
        if (_scalar_value(_map_get(doc, "kind")) == "Dataset"
                and _scalar_value(_map_get(_map_get(doc, "metadata"), "name")) == d.name):
            spec = _map_get(doc, "spec")
            if isinstance(spec, MappingNode):
                return path, text, spec
    raise ValueError(f"{d.position.file}: dataset {d.name} not found when writing spec.lock")


def _render_scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when that reads back as the same string, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./+-]*", value):
        try:
            if YAML(typ="safe", pure=True).load(f"k: {value}\n") == {"k": value}:
                return value
        except Exception:  # pragma: no cover - a plain scalar of these characters always loads
            pass
    return json.dumps(value, ensure_ascii=False)


def _line_break_at(text: str, i: int) -> tuple[int, str]:
    """(offset of the next line break at or after `i`, that break), or (len, "") at the end."""
    m = _BREAK.search(text, i)
    return (m.start(), m.group(0)) if m else (len(text), "")


_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def set_spec_lock(root: Path, d: Dataset, rel: str) -> bool:
    """Set `spec.lock: rel` in the dataset's document; returns whether the file changed.

    Only the text of the one value (or one new line) changes: comments, quoting, flow style,
    indentation, document markers, line ends and a BOM are kept as they were.
    """
    path, text, spec = _find_spec(root, d)
    current = _map_get(spec, "lock")
    value = _render_scalar(rel)
    if current is not None:
        if _scalar_value(current) == rel:
            return False
        if not isinstance(current, ScalarNode):
            raise ValueError(f"{d.position.file if d.position else path}: spec.lock of "
                             f"{d.name} is not a string")
        new = text[:current.start_mark.index] + value + text[current.end_mark.index:]
    else:
        keys = [(k, v) for k, v in spec.value if isinstance(k, ScalarNode) and k.value != "<<"]
        if not keys:
            raise ValueError(f"{d.position.file if d.position else path}: spec of {d.name} "
                             "has no keys to place lock after")
        # Right after `path` reads best; else after the last key of spec.
        after_key, after = next(((k, v) for k, v in keys if k.value == "path"), keys[-1])
        end = after.end_mark.index
        if spec.flow_style:
            entry = f"lock: {value}"
            if after_key.style == '"':  # JSON-like text: keep it JSON-like
                entry = f'"lock": {json.dumps(rel, ensure_ascii=False)}'
            new = text[:end] + f", {entry}" + text[end:]
        else:
            indent = " " * after_key.start_mark.column
            if after.end_mark.column == 0:  # a block value ends at the start of the next line
                at, brk = end, _line_break_at(text, 0)[1] or "\n"  # the file's line end
                new = text[:at] + f"{indent}lock: {value}{brk}" + text[at:]
            else:
                at, brk = _line_break_at(text, end)
                if brk:
                    at += len(brk)
                    new = text[:at] + f"{indent}lock: {value}{brk}" + text[at:]
                else:  # last line of a file without a final newline
                    brk = _line_break_at(text, 0)[1] or "\n"
                    new = text + f"{brk}{indent}lock: {value}"
    target = path.resolve()  # a symlinked YAML file stays a symlink
    mode = target.stat().st_mode & 0o777
    atomic.write_bytes(target, new.encode("utf-8"), mode)
    return True
