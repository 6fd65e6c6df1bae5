"""`file` sources on a node read only under its publishRoots (issue 11: a committer must not
make a node read /etc/shadow as root and seed it to its peers)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

import pytest
from range_checks import check_stop_and_disk_error

from reconciler.adapters.sources import OriginContext, OriginError, open_origin
from reconciler.adapters.sources.file import FILE_BUFFER, FileOrigin
from reconciler.adapters.sources.threaded import Reading
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


# Ranges read on threads (`range_reader`, engine/threaded_read.py): confined as `read` is, and
# a file that changed after its listing is an error, never a shorter or different file.

def read_range(source: str, path: str, repo: Path, confine: list[Path] | None, offset: int,
               length: int, size: int, reading: Reading | None = None,
               into: Callable[[memoryview], None] | None = None) -> bytes:
    got = bytearray()
    origin = FileOrigin(FileSource(source), repo, confine)
    ranges = asyncio.run(origin.range_reader(path))
    ranges.read_range(offset, length, size, into or got.extend, reading or Reading())
    return bytes(got)


def test_a_range_is_read_from_its_offset(repo: Path) -> None:
    data = os.urandom(FILE_BUFFER * 2 + 12345)
    (repo / "data" / "set" / "big.bin").write_bytes(data)
    for offset, length in [(0, len(data)), (7, FILE_BUFFER + 1), (len(data) - 5, 5), (3, 0)]:
        assert read_range("data/set", "big.bin", repo, [repo], offset, length,
                          len(data)) == data[offset:offset + length]


def test_a_range_of_a_file_out_of_the_roots_is_refused(repo: Path) -> None:
    (repo / "data" / "set" / "shadow").symlink_to("/etc/passwd")
    with pytest.raises(OriginError, match="shadow resolves to /etc/passwd"):
        read_range("data/set", "shadow", repo, [repo], 0, 10, 10,
                   into=lambda _: pytest.fail("a byte was read"))
    with pytest.raises(OriginError, match="escapes the source"):
        read_range("data/set", "../../etc/passwd", repo, None, 0, 10, 10)


def test_a_file_that_changed_since_its_listing_is_an_error(repo: Path) -> None:
    with pytest.raises(OriginError, match=r"a.txt: 1 bytes, listed as 2 \(did it change"):
        read_range("data/set", "a.txt", repo, [repo], 0, 2, 2)
    # Shrunk after the size was checked: the read ends early (here, a range past its end).
    with pytest.raises(OriginError, match=r"a.txt: ended at byte 1, listed as 1 bytes"):
        read_range("data/set", "a.txt", repo, [repo], 0, 2, 1)


def test_a_stopped_read_ends_and_the_disk_error_is_its_own(repo: Path) -> None:
    (repo / "data" / "set" / "big.bin").write_bytes(bytes(3 * FILE_BUFFER))
    seen = check_stop_and_disk_error(lambda into, reading: read_range(
        "data/set", "big.bin", repo, [repo], 0, 3 * FILE_BUFFER, 3 * FILE_BUFFER, reading, into))
    assert seen == [FILE_BUFFER]
