"""The local store: dataset versions on disk, their metadata, and atomic activation.

Layout under `stateDir`:

    staging/<dataset>/<infohash>/<name>/...   a version being downloaded (libtorrent save path)
    staging/<dataset>/<infohash>.json         what it is (version label), for `plan` and status
    store/<dataset>/<infohash>/<name>/...     a complete, verified version
    store/<dataset>/<infohash>.json           its metadata; written last, so it marks completeness
    store/<dataset>/link.json                 where this node's activation symlink lives

A version is complete only when its metadata says so: a crash at any point leaves either a
partial version (resumed by libtorrent's hash check) or a complete one, never a half-trusted one.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from reconciler.adapters import atomic
from reconciler.adapters.objects import ObjectStore
from reconciler.adapters.crashpoint import crash_point
from reconciler.model.observed import ObservedDataset, ObservedVersion


@dataclass(frozen=True)
class Store:
    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "store"

    @property
    def staging(self) -> Path:
        return self.state_dir / "staging"

    def version_dir(self, dataset: str, info_hash: str) -> Path:
        return self.root / dataset / info_hash

    def staging_dir(self, dataset: str, info_hash: str) -> Path:
        return self.staging / dataset / info_hash

    def save_path(self, dataset: str, info_hash: str) -> Path:
        """Where libtorrent should find or put the data: the store once moved there."""
        final = self.version_dir(dataset, info_hash)
        return final if final.exists() else self.staging_dir(dataset, info_hash)

    # -- observing -----------------------------------------------------------------------

    def observe(self) -> dict[str, ObservedDataset]:
        names: set[str] = set()
        for base in (self.root, self.staging):
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        return {n: self.observe_dataset(n) for n in sorted(names)}

    def observe_dataset(self, name: str) -> ObservedDataset:
        versions: dict[str, ObservedVersion] = {}
        for base, complete in ((self.staging / name, False), (self.root / name, True)):
            if not base.is_dir():
                continue
            for d in base.iterdir():
                if not d.is_dir() or d.name.startswith("."):
                    continue
                meta = _read_json(base / f"{d.name}.json")
                done = complete and bool(meta.get("complete"))
                if complete and not meta:
                    # moved into the store but not marked complete (a crash in between): it
                    # is incomplete, but begin()'s staging metadata still knows its label
                    meta = _read_json(self.staging / name / f"{d.name}.json")
                held = meta.get("files") if done else None
                versions[d.name] = ObservedVersion(
                    info_hash=d.name, version=str(meta.get("version", "?")), complete=done,
                    bytes_total=int(meta.get("bytesTotal", 0)),
                    completed_at=meta.get("completedAt") if done else None,
                    files=frozenset(map(str, held)) if isinstance(held, list) else None)
        link_meta = _read_json(self.root / name / "link.json")
        link = link_meta.get("path")
        active = self._active(name, link) if link else None
        since = _read_json(self.root / name / "draining.json").get("since")
        return ObservedDataset(name, versions, active, link if active else None,
                               float(since) if isinstance(since, (int, float)) else None)

    def _active(self, name: str, link: str) -> str | None:
        """The info-hash `link` points to, if it is our symlink into this dataset's store."""
        p = Path(link)
        if not p.is_symlink():
            return None
        target = Path(os.readlink(p))
        try:
            rel = target.relative_to(self.root / name)
        except ValueError:
            return None
        return rel.parts[0] if rel.parts else None

    # -- changing --------------------------------------------------------------------------

    def begin(self, dataset: str, info_hash: str, version: str, staging: bool = False) -> Path:
        """Make room for a download and say what it is; returns libtorrent's save path.
        `staging`: in staging even if the version is in the store (a split version whose
        share changed: its new files are verified there before they join the store's)."""
        save = self.staging_dir(dataset, info_hash) if staging else \
            self.save_path(dataset, info_hash)
        save.mkdir(parents=True, exist_ok=True)
        meta = save.parent / f"{info_hash}.json"
        if save == self.staging_dir(dataset, info_hash) and not meta.exists():
            atomic.write_json(meta, {"version": version, "infoHash": info_hash,
                                     "startedAt": time.time()})
        return save

    def seal(self, dataset: str, info_hash: str, mode: int | None, gid: int | None) -> None:
        """Give a verified version the node config's `dataMode`/`dataGroup` before it is
        marked complete: directories get the mode plus x wherever it grants r."""
        if mode is None and gid is None:
            return
        top = self.version_dir(dataset, info_hash)
        dir_mode = None if mode is None else mode | ((mode & 0o444) >> 2)
        for dirpath, _dirs, files in os.walk(top):
            for p, m in [(dirpath, dir_mode), *((os.path.join(dirpath, f), mode) for f in files)]:
                if gid is not None:
                    os.chown(p, -1, gid, follow_symlinks=False)
                if m is not None and not os.path.islink(p):
                    os.chmod(p, m)

    def _meta_path(self, dataset: str, info_hash: str) -> Path:
        """The version's metadata: the store's once complete, else the staging one."""
        done = self.root / dataset / f"{info_hash}.json"
        return done if _read_json(done).get("complete") else \
            self.staging / dataset / f"{info_hash}.json"

    def counters(self, dataset: str, info_hash: str) -> tuple[int, int]:
        """(bytesFromOrigin, bytesFromPeers) the version's metadata kept across processes;
        zeros when it has none or cannot be read."""
        try:
            meta = _read_json(self._meta_path(dataset, info_hash))
        except OSError:
            return 0, 0
        return int(meta.get("bytesFromOrigin", 0)), int(meta.get("bytesFromPeers", 0))

    def save_counters(self, dataset: str, info_hash: str, origin: int, peers: int) -> None:
        """Keep the version's byte totals in its metadata (if it has metadata yet); OSError
        when it cannot be written."""
        path = self._meta_path(dataset, info_hash)
        meta = _read_json(path)
        if meta:
            atomic.write_json(path, {**meta, "bytesFromOrigin": origin, "bytesFromPeers": peers})

    def mark_complete(self, dataset: str, info_hash: str, version: str, name: str,
                      bytes_total: int, files: AbstractSet[str] | None = None) -> None:
        """Record a verified version that now lives in `version_dir`; `files`: a split
        version's files held here (`bytes_total` counts only them)."""
        if not (self.version_dir(dataset, info_hash) / name).exists():
            raise FileNotFoundError(
                f"{self.version_dir(dataset, info_hash) / name}: not in the store; "
                "refusing to mark the version complete")
        atomic.write_json(self.root / dataset / f"{info_hash}.json", {
            "version": version, "infoHash": info_hash, "name": name, "complete": True,
            "bytesTotal": bytes_total, "completedAt": time.time(),
            **({} if files is None else {"files": sorted(files)})})
        (self.staging / dataset / f"{info_hash}.json").unlink(missing_ok=True)
        _prune_empty_dirs(self.staging_dir(dataset, info_hash))
        _rmdir_if_empty(self.staging / dataset)

    def prune_split(self, dataset: str, info_hash: str, name: str,
                    files: Iterable[tuple[str, int]], keep: AbstractSet[str]) -> list[str]:
        """Remove from a split version the files this node no longer holds (the target nodes
        changed), and the directories that leaves empty, once the version is moved into the
        store (before it is marked complete); returns what it removed."""
        # After a re-split's move, staging keeps only second names of the files the version
        # already had (a rename onto a hard link of the same inode does nothing) and the
        # files it no longer holds: none of it is data the store lacks.
        staged = self.staging_dir(dataset, info_hash)
        if staged.exists():
            shutil.rmtree(staged)
        top = self.version_dir(dataset, info_hash) / name
        gone = []
        for path, _ in files:
            if path in keep:
                continue
            f = top / path
            if f.is_file() or f.is_symlink():
                f.unlink()
                gone.append(path)
                parent = f.parent
                while parent != top and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        return gone

    def content_dir(self, dataset: str, info_hash: str) -> Path:
        """The version's top-level file or directory; FileNotFoundError unless complete."""
        meta = _read_json(self.root / dataset / f"{info_hash}.json")
        if not meta.get("complete") or "name" not in meta:
            raise FileNotFoundError(f"{dataset} {info_hash}: not a complete version in the store")
        return self.version_dir(dataset, info_hash) / str(meta["name"])

    def activate(self, dataset: str, info_hash: str, link: Path) -> None:
        """Switch consumers at `link` to a complete version in one rename."""
        prev = _read_json(self.root / dataset / "link.json").get("path")
        atomic.symlink(self.content_dir(dataset, info_hash), link)
        crash_point("activating")
        atomic.write_json(self.root / dataset / "link.json", {"path": str(link)})
        if prev and prev != str(link):
            self._remove_link(dataset, Path(prev))

    def _remove_link(self, dataset: str, link: Path) -> None:
        if link.is_symlink():
            try:
                Path(os.readlink(link)).relative_to(self.root / dataset)
            except ValueError:
                return  # not ours any more: someone repointed it
            link.unlink()
            atomic.fsync_dir(link.parent)

    def mark_draining(self, dataset: str) -> None:
        """Start the grace period of a dataset no longer placed here (once)."""
        f = self.root / dataset / "draining.json"
        if not f.exists():
            atomic.write_json(f, {"since": time.time()})

    def clear_draining(self, dataset: str) -> None:
        (self.root / dataset / "draining.json").unlink(missing_ok=True)

    def draining_since(self, dataset: str) -> float:
        """Epoch seconds the dataset started draining; now if it is not draining."""
        return float(_read_json(self.root / dataset / "draining.json").get("since", time.time()))

    def evict(self, dataset: str, info_hash: str) -> int:
        """Remove one version (its symlink first if it is the active one); returns bytes freed."""
        obs = self.observe_dataset(dataset)
        if obs.active == info_hash and obs.link:
            self._remove_link(dataset, Path(obs.link))
            (self.root / dataset / "link.json").unlink(missing_ok=True)
        freed = 0
        for base in (self.root / dataset, self.staging / dataset):
            meta = base / f"{info_hash}.json"
            meta.unlink(missing_ok=True)  # first: the version stops counting as complete
            (base / f"{info_hash}.torrent").unlink(missing_ok=True)
            d = base / info_hash
            if d.exists():
                freed += _du(d)
                crash_point("evicting")
                shutil.rmtree(d)
            _rmdir_if_empty(base, keep={"link.json", "draining.json"})
        return freed + ObjectStore(self.state_dir).prune()  # objects no version links now


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _du(path: Path) -> int:
    """Bytes that removing `path` frees: files hard-linked from outside it stay allocated."""
    inodes: dict[tuple[int, int], list[int]] = {}  # (dev, ino) -> [size, nlink, links seen]
    for f in path.rglob("*"):
        st = f.lstat()
        if stat.S_ISREG(st.st_mode):
            seen = inodes.setdefault((st.st_dev, st.st_ino), [st.st_size, st.st_nlink, 0])
            seen[2] += 1
    return sum(size for size, nlink, seen in inodes.values() if seen >= nlink)


def _prune_empty_dirs(top: Path) -> None:
    """Remove `top` and the directories under it if they hold no files (what a move leaves)."""
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _rmdir_if_empty(path: Path, keep: AbstractSet[str] = frozenset()) -> None:
    try:
        left = [p for p in path.iterdir() if p.name not in keep]
        if not left:
            for p in path.iterdir():
                p.unlink()
            path.rmdir()
    except FileNotFoundError:
        pass
