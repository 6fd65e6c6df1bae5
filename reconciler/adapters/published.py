"""`<stateDir>/published/<dataset>.json`: the versions this node published, and their bytes.

Kept apart from the metadata cache (which forgets old keys), so that a version published once
keeps its info-hash for as long as the node's state lives: `core.publish.conflict` reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from reconciler.adapters import atomic
from reconciler.adapters.pin_cache import NAME_RE
from reconciler.core.publish import Published


class PublishedVersions:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "published"

    def _path(self, dataset: str) -> Path:
        if not NAME_RE.fullmatch(dataset):
            raise ValueError(f"not a dataset name: {dataset!r}")
        return self.root / f"{dataset}.json"

    def get(self, dataset: str) -> dict[str, Published]:
        """Version -> what was published; empty when nothing was (or the record is unreadable:
        then the next publication starts it again)."""
        try:
            doc = json.loads(self._path(dataset).read_text())
            return {v: Published(v, str(p["info_hash"]), str(p["path"]))
                    for v, p in doc.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def record(self, dataset: str, p: Published) -> None:
        doc = {v: asdict(x) for v, x in self.get(dataset).items()}
        doc[p.version] = asdict(p)
        atomic.write_bytes(self._path(dataset), json.dumps(doc, indent=1, sort_keys=True).encode())
