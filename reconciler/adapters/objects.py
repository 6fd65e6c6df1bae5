"""The object store: one inode per unique file, named by its v2 pieces root (core/cas.py).

    objects/<root[:2]>/<root>   a hard link to a verified, read-only file

Every complete version's files are hard links to these objects, so identical files across
datasets and versions take room once. Objects are only ever added from a version that passed
verification, and are read-only (write bits removed), so a consumer cannot corrupt every copy
at once through one of its links. An object whose link count drops to 1 (no version links it)
is an orphan and is removed by `prune`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import structlog

from reconciler.core.cas import FileRoot, object_rel

log = structlog.get_logger("objects")

_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class ObjectStore:
    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "objects"

    def path(self, root: str) -> Path:
        return self.root / object_rel(root)

    def place(self, top: Path, files: Iterable[FileRoot]) -> tuple[list[str], list[str]]:
        """Hard-link the objects this version needs into `top` (libtorrent's save path plus
        the torrent's name) before libtorrent checks it. Returns (every file that is a link to
        its object now, the ones linked by this call). A file already there that is not the
        object (a partial download) is replaced: the object holds the whole verified file."""
        present: list[str] = []
        new: list[str] = []
        for f in files:
            if f.size == 0 or not f.root:
                continue
            obj = self.path(f.root)
            try:
                ost = obj.stat()
            except FileNotFoundError:
                continue
            if ost.st_size != f.size:
                log.warning("object has the wrong size; not used", root=f.root, size=ost.st_size)
                continue
            dst = top / f.path
            try:
                if os.path.samestat(dst.lstat(), ost):
                    present.append(f.path)
                    continue
            except FileNotFoundError:
                pass
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_over(obj, dst)
            present.append(f.path)
            new.append(f.path)
        return present, new

    def adopt(self, top: Path, files: Iterable[FileRoot]) -> int:
        """Make a verified version's files read-only and share them: the first holder of a
        root becomes its object, later holders are replaced by links to it. Returns the bytes
        this saved (files that became links to an existing object)."""
        saved = 0
        for f in files:
            p = top / f.path
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_mode & _WRITE:
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~_WRITE)
            if f.size == 0 or not f.root:
                continue
            obj = self.path(f.root)
            try:
                ost = obj.stat()
            except FileNotFoundError:
                obj.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, obj)
                continue
            if os.path.samestat(ost, st):
                continue
            if ost.st_size == st.st_size:
                _link_over(obj, p)
                saved += st.st_size if st.st_nlink == 1 else 0
            else:  # a bad object: the verified file takes its place
                log.warning("replacing an object of the wrong size", root=f.root)
                _link_over(p, obj)
        return saved

    def prune(self) -> int:
        """Remove objects no version links any more (link count 1); returns bytes freed."""
        freed = 0
        if not self.root.is_dir():
            return 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for obj in sub.iterdir():
                try:
                    st = obj.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                    obj.unlink()
                    freed += st.st_size
            try:
                sub.rmdir()
            except OSError:
                pass  # not empty
        return freed


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` a hard link to `src` in one rename (never a moment without `dst`)."""
    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.link(src, tmp)
    os.replace(tmp, dst)
