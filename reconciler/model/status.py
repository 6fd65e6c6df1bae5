"""What a node reports (DESIGN §6), as immutable values: a pass builds new ones, nobody
updates a status that another task may be reading. Field names are snake_case here; the
status file's camelCase names are produced by rendering (core/conditions.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from reconciler.model.desired import ValidationError

Phase = Literal["Pending", "Fetching", "Verifying", "Ready", "Draining", "Failed", "Suspended"]
PHASES: tuple[Phase, ...] = ("Pending", "Fetching", "Verifying", "Ready", "Draining", "Failed",
                             "Suspended")
Result = Literal["Converged", "Progressing", "Failed", "Rejected"]

#: The status file's name of each DatasetStatus field.
JSON_NAMES: Mapping[str, str] = {
    "phase": "phase", "version": "version", "path": "path", "info_hash": "infoHash",
    "bytes_total": "bytesTotal", "bytes_done": "bytesDone",
    "bytes_from_origin": "bytesFromOrigin", "bytes_from_peers": "bytesFromPeers",
    "download_rate": "downloadRate", "upload_rate": "uploadRate", "peers": "peers",
    "error": "error"}


@dataclass(frozen=True)
class DatasetStatus:
    phase: Phase
    version: str | None = None
    path: str | None = None
    info_hash: str | None = None
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    download_rate: int = 0
    upload_rate: int = 0
    peers: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {JSON_NAMES[k]: getattr(self, k) for k in JSON_NAMES}

    @staticmethod
    def from_json(doc: Mapping[str, object]) -> "DatasetStatus":
        """From a status file's dataset entry; TypeError/ValueError if it is not one."""
        by_json = {v: k for k, v in JSON_NAMES.items()}
        unknown = set(doc) - set(by_json)
        if unknown:
            raise TypeError(f"unknown fields: {sorted(unknown)}")
        return DatasetStatus(**{by_json[k]: v for k, v in doc.items()})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Rejected:
    revision: str
    errors: Sequence[ValidationError]


@dataclass(frozen=True)
class NodeReport:
    node: str
    observed_revision: str | None
    last_applied_revision: str | None
    started_at: str
    finished_at: str | None
    result: Result
    datasets: Mapping[str, DatasetStatus] = field(default_factory=dict)
    rejected: Rejected | None = None
    # `core.placement_warnings` of the revision applied: placement it cannot satisfy
    placement_warnings: tuple[str, ...] = ()
