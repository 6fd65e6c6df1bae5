"""Where an activation symlink may be written, judged on the real file system (symlinks
followed), not on the text of `spec.path` (core/plan.py `resolve_path` checks the text).

Checked right before each activation:
- `spec.path`'s parent, resolved with symlinks followed, stays inside one of the resolved
  `allowedRoots` (a directory symlink inside a root must not lead the write out of it);
- a symlink already at `spec.path` is replaced only if it points into this node's store
  (one the store made); a foreign symlink, like a real file or directory, is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


class UnsafePath(PermissionError):
    """Activation at this path would write outside the allowed roots or replace what is
    not ours."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_link(link: Path, allowed_roots: Sequence[str], store_root: Path) -> None:
    """UnsafePath, naming the path and the root(s), unless activating at `link` is safe."""
    parent = os.path.realpath(link.parent)
    roots = [(r, os.path.realpath(r)) for r in allowed_roots]
    if not any(_inside(parent, real) for _, real in roots):
        shown = ", ".join(r if r == real else f"{r} (= {real})" for r, real in roots)
        raise UnsafePath(f"{link}: its directory resolves to {parent}, outside the allowed "
                         f"roots ({shown}); a symlink leads out of the root")
    if link.is_symlink():
        target = os.readlink(link)
        full = os.path.normpath(os.path.join(link.parent, target))
        store_real = os.path.realpath(store_root)
        ours = (_inside(full, os.path.normpath(store_root)) or _inside(full, store_real)
                or _inside(os.path.realpath(full), store_real))
        if not ours:
            raise UnsafePath(f"{link} is a symlink to {target}, which is not in this node's "
                             f"store ({store_root}); refusing to replace it")
