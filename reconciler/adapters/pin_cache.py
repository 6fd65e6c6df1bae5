"""`<stateDir>/metadata/<dataset>/<key>.torrent`: the torrents that pin unlocked datasets."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters import atomic
from reconciler.core.pinning import check, metadata_key
from reconciler.model.desired import Dataset, DesiredState, LockFile

KEY_RE = re.compile(r"[0-9a-f]{32}")
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # metadata.name: a DNS label
KEEP_PER_DATASET = 4  # torrents of earlier keys kept, for a quick roll back


@dataclass(frozen=True)
class PinCache:
    """`<stateDir>/metadata/<dataset>/<key>.torrent`: torrents of unlocked datasets, built here
    or fetched from a peer. Written atomically; read on every pass, so a restart resumes with
    the same torrent and nothing is fetched or built twice."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "metadata"

    def path(self, dataset: str, key: str) -> Path:
        if not NAME_RE.fullmatch(dataset) or not KEY_RE.fullmatch(key):
            raise ValueError(f"not a dataset name and metadata key: {dataset!r}, {key!r}")
        return self.root / dataset / f"{key}.torrent"

    def get(self, dataset: str, key: str) -> bytes | None:
        try:
            return self.path(dataset, key).read_bytes()
        except (OSError, ValueError):
            return None

    def lock_for(self, d: Dataset) -> LockFile | None:
        """The cached torrent of `d` as a lock; None if there is none (or it is unreadable)."""
        p = self.path(d.name, metadata_key(d))
        try:
            return check(p.read_bytes(), d, str(p))
        except (OSError, ValueError):
            return None

    def locks(self, state: DesiredState) -> dict[str, LockFile]:
        # One listing instead of a failed open per unlocked dataset (10,000 of them cost a
        # second a pass): a dataset without a directory here has no torrent here.
        try:
            present: set[str] | None = set(os.listdir(self.root))
        except FileNotFoundError:
            return {}
        except OSError:
            present = None  # cannot list: look for each one, as before
        out = {}
        for d in state.datasets.values():
            if d.lock is None and (present is None or d.name in present):
                lock = self.lock_for(d)
                if lock is not None:
                    out[d.name] = lock
        return out

    def put(self, d: Dataset, torrent: bytes) -> LockFile:
        """Check and keep `torrent` as the metadata of `d`; ValueError if it is not."""
        p = self.path(d.name, metadata_key(d))
        lock = check(torrent, d, str(p))
        atomic.write_bytes(p, torrent)
        return lock

    def prune(self, state: DesiredState) -> None:
        """Forget datasets no longer declared, and all but the newest few keys of the rest."""
        if not self.root.is_dir():
            return
        for ds in self.root.iterdir():
            d = state.datasets.get(ds.name)
            files = sorted(ds.glob("*.torrent"), key=lambda p: p.stat().st_mtime, reverse=True)
            current = self.path(d.name, metadata_key(d)) if d is not None else None
            old = [p for p in files if p != current]
            for p in old[KEEP_PER_DATASET if d is not None else 0:]:
                p.unlink(missing_ok=True)
            if d is None:
                try:
                    ds.rmdir()
                except OSError:
                    pass
