"""`file` sources on a node read only under its publishRoots (issue 11: a committer must not
make a node read /etc/shadow as root and seed it to its peers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.sources import OriginContext, OriginError, open_origin
from reconciler.model.desired import FileSource


async def listing(source: str, state_root: Path, confine: list[Path] | None) -> list[str]:
    async with OriginContext(state_root, confine) as ctx:
        return [f.path for f in await open_origin(FileSource(source), ctx).list_files()]


async def read_all(source: str, path: str, state_root: Path, confine: list[Path]) -> bytes:
    async with OriginContext(state_root, confine) as ctx:
        return b"".join([c async for c in open_origin(FileSource(source), ctx).read(path)])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "repo" / "data" / "set").mkdir(parents=True)
    (tmp_path / "repo" / "data" / "set" / "a.txt").write_text("a")
    return tmp_path / "repo"


async def test_a_source_in_the_state_repo_is_read(repo: Path) -> None:
    assert await listing("data/set", repo, [repo]) == ["a.txt"]
    assert await read_all("data/set", "a.txt", repo, [repo]) == b"a"


async def test_a_source_outside_the_publish_roots_is_refused(repo: Path) -> None:
    with pytest.raises(OriginError, match="outside this node's publishRoots"):
        await listing("/etc/passwd", repo, [repo])
    with pytest.raises(OriginError, match="outside this node's publishRoots"):
        await read_all("/etc", "passwd", repo, [repo])
    with pytest.raises(OriginError, match=r"publishRoots \(none\)"):
        await listing("data/set", repo, [])  # an empty list: no file sources at all


async def test_a_symlink_out_of_the_roots_is_refused_before_a_byte_is_read(repo: Path) -> None:
    (repo / "data" / "set" / "shadow").symlink_to("/etc/passwd")
    with pytest.raises(OriginError, match="shadow resolves to /etc/passwd"):
        await listing("data/set", repo, [repo])
    with pytest.raises(OriginError, match="shadow resolves to /etc/passwd"):
        await read_all("data/set", "shadow", repo, [repo])
    (repo / "data" / "escape").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(OriginError, match="the source resolves to /etc"):
        await listing("data/escape", repo, [repo])


async def test_symlinks_within_the_roots_are_followed(tmp_path: Path, repo: Path) -> None:
    """A Hugging Face cache snapshot: symlinks into ../../blobs, all under one publish root."""
    cache = tmp_path / "hf-cache"
    (cache / "blobs").mkdir(parents=True)
    (cache / "blobs" / "1f2e").write_bytes(b"weights")
    (cache / "snapshots" / "abc").mkdir(parents=True)
    (cache / "snapshots" / "abc" / "model.bin").symlink_to("../../blobs/1f2e")
    src = str(cache / "snapshots" / "abc")
    assert await listing(src, repo, [repo, cache]) == ["model.bin"]
    assert await read_all(src, "model.bin", repo, [cache]) == b"weights"


async def test_lock_is_not_confined(repo: Path) -> None:
    """`lock` runs with the rights of the person who runs it: no publishRoots there."""
    assert await listing("/etc/hostname", repo, None) == ["hostname"]
