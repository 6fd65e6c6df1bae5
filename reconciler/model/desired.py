"""The validated desired state: plain frozen dataclasses, no I/O.

Everything downstream (placement, planning, the executor) reads only these types, so a
revision that did not validate can never reach them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Union


@dataclass(frozen=True)
class Position:
    """Where something was written: FILE relative to the state repo, 1-based LINE and COL."""

    file: str
    line: int
    col: int


@dataclass(frozen=True)
class Node:
    name: str
    peer: str  # host:port of its BitTorrent listener
    api: str  # host:port of its HTTP API
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: int | None = None  # bytes
    storage_group: str | None = None
    cordoned: bool = False  # spec.cordoned: no new replicas (see core/placement.py)
    position: Position | None = None


@dataclass(frozen=True)
class HttpSource:
    """`http: {baseUrl, files}` or `http: {urls}`; header values may hold `${VAR}`."""

    base_url: str | None = None
    files: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    type: Literal["http"] = "http"


@dataclass(frozen=True)
class S3Source:
    bucket: str
    prefix: str | None = None
    keys: tuple[str, ...] = ()
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    type: Literal["s3"] = "s3"


@dataclass(frozen=True)
class HfSource:
    repo: str
    repo_type: Literal["model", "dataset", "space"] = "model"
    revision: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    type: Literal["hf"] = "hf"


@dataclass(frozen=True)
class FileSource:
    """A local or NFS directory or single file; relative paths are relative to the state repo."""

    path: str
    type: Literal["file"] = "file"


@dataclass(frozen=True)
class NodeSource:
    """`node: {name, path}`: a directory on one node of the inventory, published by that node
    (it snapshots and seeds it); no external origin takes part. `path` is absolute."""

    name: str
    path: str
    type: Literal["node"] = "node"


Source = Union[HttpSource, S3Source, HfSource, FileSource, NodeSource]


def publisher(d: "Dataset") -> str | None:
    """The node that publishes `d` (a `node:` source), else None."""
    return d.source.name if isinstance(d.source, NodeSource) else None


Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


@dataclass(frozen=True)
class Requirement:
    """One Kubernetes-style `matchExpressions` entry. `values` is non-empty for In/NotIn and
    empty for Exists/DoesNotExist (validation guarantees it)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes' semantics: NotIn and DoesNotExist also match a node without the key."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class Placement:
    """Exactly one of `nodes`, `replicas`, `all` is set (validation guarantees it).

    `selector`: the equality labels (plain `{label: value}` pairs and `matchLabels`, merged);
    `match_expressions`: the selector's `matchExpressions`. A node is eligible when it has every
    label of `selector` and satisfies every expression."""

    nodes: tuple[str, ...] | None = None
    replicas: int | None = None
    all: bool = False
    selector: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def has_selector(self) -> bool:
        return bool(self.selector) or bool(self.match_expressions)

    def selects(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.selector.items())
                and all(r.matches(labels) for r in self.match_expressions))


Priority = Literal["low", "normal", "high", "critical"]
PRIORITY_RANK: Mapping[str, int] = {"critical": 0, "high": 1, "normal": 2, "low": 3}


@dataclass(frozen=True)
class LockFile:
    """The facts a `.torrent` lock pins, read at load time so that deciding stays pure."""

    path: str  # as written in spec.lock, relative to the state repo root
    info_hash: str  # v2 (sha256) info-hash, hex: the identity of a dataset version
    info_hash_v1: str  # v1 (sha1) info-hash, hex: what v1-only clients see
    name: str  # the torrent's top directory
    total_bytes: int  # real file bytes, pad files excluded
    files: tuple[tuple[str, int], ...]  # (path relative to the torrent's top dir, size)


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    source: Source
    placement: Placement
    path: str
    mirrors: tuple[Source, ...] = ()
    lock: LockFile | None = None
    priority: Priority = "normal"
    keep_versions: int = 1
    suspend: bool = False
    size: int | None = None  # spec.size: the bytes placement counts while there is no lock
    split: int | None = None  # spec.split.copies: each file on that many target nodes only
    pinned_lock: bool = False  # `lock` is a torrent this node holds, not a lock from git
    position: Position | None = None


@dataclass(frozen=True)
class DesiredState:
    """One validated revision of the state repo."""

    revision: str
    nodes: Mapping[str, Node]
    datasets: Mapping[str, Dataset]


@dataclass(frozen=True)
class ValidationError:
    """One problem in the state repo, printed as `FILE:LINE:COL: FIELD: MESSAGE`."""

    file: str
    line: int
    col: int
    field: str  # dotted path inside the document, e.g. `spec.placement.replicas`
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.field}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "col": self.col, "field": self.field,
                "message": self.message}
