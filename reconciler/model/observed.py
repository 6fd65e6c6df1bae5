"""What a node found in its own store: the observed half of every plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class ObservedVersion:
    """A dataset version found in the local store."""

    info_hash: str
    version: str
    complete: bool  # downloaded and verified
    bytes_total: int = 0
    completed_at: float | None = None  # epoch seconds, orders versions for keepVersions
    files: frozenset[str] | None = None  # a split version: the files held here (None: all)


@dataclass(frozen=True)
class ObservedDataset:
    name: str
    versions: Mapping[str, ObservedVersion] = field(default_factory=dict)
    active: str | None = None  # info-hash of the version `link` points to
    link: str | None = None  # the activation symlink, as found
    draining_since: float | None = None  # epoch seconds: no longer placed here since then
