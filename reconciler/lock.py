"""`syncbit-reconcile lock`: pin datasets to exact bytes.

Each source file is read once, streaming, into the hybrid-torrent hasher; the torrent is written
under the state repo (`locks/<dataset>.torrent` unless `spec.lock` already names a path) and
`spec.lock` is set by a ruamel.yaml round-trip that keeps the user's comments and layout.
The source revision (HTTP ETag, file mtime+size) is recorded outside the info dict, so it never
changes the info-hash; the same bytes from the same source give a byte-identical torrent.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog
from ruamel.yaml import YAML

from . import atomic
from .desired.model import Dataset, DesiredState
from .desired.validate import load_desired_state
from .sources import OriginContext, OriginError, open_origin
from .torrent import FileHasher, build_torrent, choose_piece_size, read_lock
from .ui import human_bytes

log = structlog.get_logger("lock")

LOCK_DIR = "locks"


@dataclass(frozen=True)
class Locked:
    dataset: str
    path: str  # relative to the state repo
    info_hash: str
    files: int
    bytes_total: int
    changed: bool  # the torrent's bytes differ from what was there


async def build_lock(dataset: Dataset, ctx: OriginContext) -> bytes:
    origin = open_origin(dataset.source, ctx)
    files = await origin.list_files()
    if not files:
        raise OriginError(f"{dataset.source.type} source lists no files")
    piece_size = choose_piece_size(sum(f.size for f in files))
    hashed = []
    for f in files:
        hasher = FileHasher(piece_size)
        seen = 0
        async for chunk in origin.read(f.path):
            hasher.update(chunk)
            seen += len(chunk)
        if seen != f.size:
            raise OriginError(f"{f.path}: listed as {f.size} bytes but {seen} were read "
                              "(did it change while locking?)")
        hashed.append((f.path, hasher.finish()))
    extra = {"syncbit": {"dataset": dataset.name, "source": dict(origin.describe()),
                         "revision": {f.path: dict(f.revision) for f in files}}}
    return build_torrent(dataset.name, piece_size, hashed, extra)


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
                res = await lock_one(root, d, ctx)
            except (OriginError, OSError, ValueError) as e:
                failed += 1
                log.error("lock failed", dataset=name, error=str(e))
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                continue
            verb = "locked" if res.changed else "unchanged"
            print(f"{name}: {verb} {res.files} file(s), {human_bytes(res.bytes_total)}, "
                  f"info-hash {res.info_hash[:16]}… -> {res.path}")
    return 1 if failed else 0


async def lock_one(root: Path, d: Dataset, ctx: OriginContext) -> Locked:
    torrent = await build_lock(d, ctx)
    rel = d.lock.path if d.lock else _declared_lock(root, d) or f"{LOCK_DIR}/{d.name}.torrent"
    target = root / rel
    changed = not target.exists() or target.read_bytes() != torrent
    if changed:
        atomic.write_bytes(target, torrent)
    set_spec_lock(root, d, rel)
    info = read_lock(torrent, rel)
    return Locked(d.name, rel, info.info_hash, len(info.files), info.total_bytes, changed)


def _declared_lock(root: Path, d: Dataset) -> str | None:
    """`spec.lock` as written, when it names a file that does not exist yet."""
    doc = _find_doc(root, d)[1]
    value = doc["spec"].get("lock") if doc is not None else None
    return str(value) if value else None


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _find_doc(root: Path, d: Dataset):  # type: ignore[no-untyped-def]
    assert d.position is not None
    path = root / d.position.file
    docs = list(_yaml().load_all(path.read_text()))
    for i, doc in enumerate(docs):
        if (isinstance(doc, dict) and doc.get("kind") == "Dataset"
                and (doc.get("metadata") or {}).get("name") == d.name):
            return path, doc, docs, i
    raise ValueError(f"{d.position.file}: dataset {d.name} not found when writing spec.lock")


def set_spec_lock(root: Path, d: Dataset, rel: str) -> bool:
    """Set `spec.lock: rel` in the dataset's document; returns whether the file changed."""
    path, doc, docs, _ = _find_doc(root, d)
    if doc["spec"].get("lock") == rel:
        return False
    spec = doc["spec"]
    if "lock" in spec:
        spec["lock"] = rel
    else:
        # Right after `path` reads best; else at the end of spec.
        keys = list(spec.keys())
        at = keys.index("path") + 1 if "path" in keys else len(keys)
        spec.insert(at, "lock", rel)
    text = path.read_text()
    y = _yaml()
    y.explicit_start = text.lstrip().startswith("---") or len(docs) > 1 and _starts_with_marker(text)
    buf = io.StringIO()
    y.dump_all(docs, buf)
    atomic.write_text(path, buf.getvalue())
    return True


def _starts_with_marker(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return s.startswith("---")
    return False
