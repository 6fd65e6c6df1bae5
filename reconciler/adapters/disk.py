"""What the store holds on disk and how much room its filesystem has (statvfs), plus the
clean-up of what a killed process leaves behind. The rules are in core/capacity.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from reconciler.core.capacity import VersionKey

log = structlog.get_logger("disk")


@dataclass(frozen=True)
class Usage:
    used: int  # every regular file under the store and staging, each inode once
    sizes: dict[VersionKey, int] = field(default_factory=dict)  # bytes evicting it frees
    present: dict[VersionKey, int] = field(default_factory=dict)  # bytes on disk of it
    mtimes: dict[VersionKey, float] = field(default_factory=dict)  # version dir mtime


def _bytes(st: os.stat_result) -> int:
    """Bytes a file holds: its size, or less if sparse (a download in progress)."""
    return min(st.st_size, st.st_blocks * 512)


def usage(state_dir: Path) -> Usage:
    """Bytes of `store/`, `staging/` and `objects/`, each inode once (hard links count once)."""
    seen: set[tuple[int, int]] = set()
    used = 0
    # objects/ holds one more link to each unique file; eviction prunes it with the last version
    in_objects: set[tuple[int, int]] = set()
    objects = state_dir / "objects"
    for f in (objects.rglob("*") if objects.is_dir() else ()):
        try:
            st = f.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            ino = (st.st_dev, st.st_ino)
            in_objects.add(ino)
            if ino not in seen:
                seen.add(ino)
                used += _bytes(st)
    sizes: dict[VersionKey, int] = {}
    present: dict[VersionKey, int] = {}
    mtimes: dict[VersionKey, float] = {}
    # per version: inode -> [bytes, links to it inside this version, st_nlink]
    per_version: dict[VersionKey, dict[tuple[int, int], list[int]]] = {}
    for base in (state_dir / "store", state_dir / "staging"):
        if not base.is_dir():
            continue
        for ds in base.iterdir():
            if not ds.is_dir() or ds.is_symlink():
                continue
            for vdir in ds.iterdir():
                if not vdir.is_dir() or vdir.is_symlink() or vdir.name.startswith("."):
                    key = None
                else:
                    key = (ds.name, vdir.name)
                    try:
                        mtimes.setdefault(key, vdir.stat().st_mtime)
                    except OSError:
                        pass
                for f in ([vdir] if not vdir.is_dir() or vdir.is_symlink() else vdir.rglob("*")):
                    try:
                        st = f.lstat()
                    except OSError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    ino = (st.st_dev, st.st_ino)
                    b = _bytes(st)
                    if ino not in seen:
                        seen.add(ino)
                        used += b
                    if key is not None:
                        per_version.setdefault(key, {}).setdefault(
                            ino, [b, 0, st.st_nlink])[1] += 1
    for key, inodes in per_version.items():
        present[key] = present.get(key, 0) + sum(b for b, _, _ in inodes.values())
        # evicting the version frees an inode only if every link to it is inside it, or in
        # objects/ (pruned once no version links it)
        sizes[key] = sizes.get(key, 0) + sum(
            b for ino, (b, n, nlink) in inodes.items()
            if n + (1 if ino in in_objects else 0) >= nlink)
    return Usage(used, sizes, present, mtimes)


def statvfs(path: Path) -> tuple[int, int]:
    """(bytes available to us, filesystem size) of the filesystem holding `path`."""
    while not path.exists() and path != path.parent:
        path = path.parent
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize


def mark_inactive(version_dir: Path) -> None:
    """A version stops being active now: its directory's mtime orders eviction."""
    try:
        now = time.time()
        os.utime(version_dir, (now, now))
    except OSError:
        pass


def clean_orphans(state_dir: Path) -> list[str]:
    """What a killed process leaves: temp files of atomic writes (`.*.tmp`) and the pinner's
    `.build-*` directories. Run at start, before anything writes (the stateDir lock is ours)."""
    removed: list[str] = _finish_moves(state_dir)
    for base in (state_dir / "store", state_dir / "staging", state_dir / "metadata",
                 state_dir / "resume", state_dir):
        if not base.is_dir():
            continue
        candidates = base.glob(".*") if base == state_dir else base.rglob(".*")
        for p in list(candidates):
            try:
                if p.is_symlink() or p.is_file():
                    if p.name.endswith(".tmp"):
                        p.unlink()
                        removed.append(str(p))
                elif p.is_dir() and p.name.startswith(".build-"):
                    shutil.rmtree(p)
                    removed.append(str(p))
            except OSError as e:
                log.warning("cannot remove an orphan", path=str(p), error=str(e))
    return removed


def _finish_moves(state_dir: Path) -> list[str]:
    """A move from staging into the store that a kill cut short (libtorrent renames file by
    file): the store copy is where the next download looks, so the files still in staging go
    there too, and none is fetched again. The version is still incomplete (no metadata): the
    hash check and the verification run as usual."""
    done: list[str] = []
    staging, store = state_dir / "staging", state_dir / "store"
    if not staging.is_dir():
        return done
    for ds in staging.iterdir():
        if not ds.is_dir() or ds.name.startswith("."):
            continue
        for vdir in ds.iterdir():
            final = store / ds.name / vdir.name
            if (not vdir.is_dir() or vdir.name.startswith(".") or not final.is_dir()
                    or (store / ds.name / f"{vdir.name}.json").exists()):
                continue
            for f in sorted(vdir.rglob("*")):
                if not f.is_file() or f.is_symlink():
                    continue
                dst = final / f.relative_to(vdir)
                if dst.exists():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(f, dst)
                done.append(str(f))
            for d in sorted((p for p in vdir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                vdir.rmdir()
            except OSError:
                pass
    return done
