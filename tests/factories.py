"""Small builders for model objects, so decision tests read like the YAML they stand for."""

from __future__ import annotations

from reconciler.model.desired import (Dataset, DesiredState, FileSource, LockFile, Node,
                                      Placement)
from reconciler.torrent.hybrid import FileHasher, build_torrent, choose_piece_size


def node(name: str, i: int = 1, **kw: object) -> Node:
    return Node(name=name, peer=f"127.0.0.{i}:6881", api=f"127.0.0.{i}:7070", **kw)  # type: ignore[arg-type]


def lock(name: str, ih: str = "a" * 64, size: int = 1000) -> LockFile:
    return LockFile(path=f"locks/{name}.torrent", info_hash=ih, info_hash_v1=ih[:40], name=name,
                    total_bytes=size, files=(("f.bin", size),))


def dataset(name: str, placement: Placement | None = None, *, version: str = "v1",
            ih: str = "a" * 64, size: int = 1000, path: str | None = None, locked: bool = True,
            **kw: object) -> Dataset:
    return Dataset(name=name, version=version, source=FileSource("/src/" + name),
                   placement=placement or Placement(all=True), path=path or f"ds/{name}",
                   lock=lock(name, ih, size) if locked else None, **kw)  # type: ignore[arg-type]


def state(nodes: list[Node], datasets: list[Dataset], revision: str = "rev1") -> DesiredState:
    return DesiredState(revision, {n.name: n for n in nodes}, {d.name: d for d in datasets})


def torrent(name: str, data: bytes = b"x" * 1000) -> bytes:
    """A real hybrid torrent of one file `f.bin` under top directory `name`."""
    ps = choose_piece_size(len(data))
    h = FileHasher(ps)
    h.update(data)
    return build_torrent(name, ps, [("f.bin", h.finish())], {"syncbit": {"dataset": name}})
