"""The last good revision, kept in the state directory.

When the state repo's newest revision is rejected, the node keeps converging to the last one
that validated. Its YAML and lock files are copied into `<stateDir>/desired/<revision>/` so the
node can reload it after a restart even when the state repo only holds the broken revision.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reconciler.adapters import atomic
from reconciler.desired.loader import (MAX_FILE_BYTES, MAX_LOCK_BYTES, RefusedFile, iter_state_files,
                                      read_regular_file)
from reconciler.model.desired import DesiredState
from reconciler.desired.validate import load_desired_state


# The largest file validation reads: a YAML file or a lock.
MAX_SNAPSHOT_FILE = max(MAX_FILE_BYTES, MAX_LOCK_BYTES)


def _dir(state_dir: Path) -> Path:
    return state_dir / "desired"


def save(state_dir: Path, root: Path, state: DesiredState) -> Path:
    """Snapshot `state` (its files under `root`) unless it already is the last good one."""
    base = _dir(state_dir)
    name = state.revision.replace(":", "-")
    snap = base / name
    current = base / "current"
    if current.is_symlink() and os.readlink(current) == name and (snap / "REVISION").exists():
        return snap
    root = root.resolve()
    # The whole tree or nothing (iter_state_files raises if a directory cannot be listed), and
    # regular files only, read without blocking: a snapshot missing a file would evict its
    # datasets after a restart.
    files = {p.relative_to(root) for p in iter_state_files(root)}
    files |= {Path(d.lock.path) for d in state.datasets.values() if d.lock}
    tmp = base / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel in sorted(files):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            data = read_regular_file(root / rel, limit=MAX_SNAPSHOT_FILE)
        except RefusedFile as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"{rel}: {e}") from None
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / rel).write_bytes(data)
    atomic.write_text(tmp / "REVISION", state.revision + "\n")
    shutil.rmtree(snap, ignore_errors=True)
    os.replace(tmp, snap)
    atomic.symlink(Path(name), current)
    for old in base.iterdir():
        if old.name not in (name, "current") and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return snap


def load(state_dir: Path) -> tuple[Path, DesiredState] | None:
    """The last good revision's directory and state, or None if there is none (or it broke)."""
    current = _dir(state_dir) / "current"
    try:
        revision = (current / "REVISION").read_text().strip()
    except OSError:
        return None
    root = current.resolve()
    result = load_desired_state(root, revision)
    return (root, result) if isinstance(result, DesiredState) else None
