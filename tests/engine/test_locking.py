"""build_lock reads several files at once, large ones through parallel range reads, and hashes
them on the pool: the torrent must not depend on any of that, and must be libtorrent's."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import libtorrent as lt
import pytest

from reconciler.adapters.sources import OriginContext, OriginError
from reconciler.engine.locking import build_lock
from reconciler.model.desired import Dataset, FileSource, Placement

MiB = 1 << 20


def _write(top: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    files = {"big.bin": rng.randbytes(9 * MiB + 123), "mid/one.bin": rng.randbytes(700_000),
             "mid/two.bin": rng.randbytes(2 * MiB), "tiny": b"x", "empty": b""}
    for rel, data in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
    return files


def _dataset(src: Path) -> Dataset:
    return Dataset(name="ds", version="1", source=FileSource(str(src)),
                   placement=Placement(all=True), path="ds")


def _libtorrent(top: Path, piece_size: int) -> lt.torrent_info:
    entries = sorted(lt.list_files(str(top)), key=lambda e: e.filename)
    ct = lt.create_torrent(entries, piece_size, 0)
    lt.set_piece_hashes(ct, str(top.parent))
    return lt.torrent_info(lt.bdecode(lt.bencode(ct.generate())))


async def _lock(tmp: Path, d: Dataset, **kw: object) -> bytes:
    async with OriginContext(tmp) as ctx:
        return await build_lock(d, ctx, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{}, {"streams": 1, "files_at_once": 1},
                                {"streams": 16, "files_at_once": 3},
                                {"slots": "semaphore"}])
def test_lock_is_libtorrents_however_it_is_read(tmp_path: Path, kw: dict[str, object]) -> None:
    src = tmp_path / "src" / "ds"
    files = _write(src)
    seen: list[tuple[int, int]] = []

    async def run() -> bytes:
        args = dict(kw)
        if args.get("slots") == "semaphore":
            args["slots"] = asyncio.Semaphore(2)
        return await _lock(tmp_path, _dataset(src), progress=lambda d, t: seen.append((d, t)),
                           write_to=tmp_path / "out", **args)

    torrent = asyncio.run(run())
    ours = lt.torrent_info(lt.bdecode(torrent))
    ref = _libtorrent(src, ours.piece_length())
    assert str(ours.info_hashes().v1) == str(ref.info_hashes().v1)
    assert str(ours.info_hashes().v2) == str(ref.info_hashes().v2)
    for rel, data in files.items():  # written as read
        assert (tmp_path / "out" / rel).read_bytes() == data
    total = sum(len(d) for d in files.values())
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_file_that_changed_size_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src" / "ds"
    _write(src)
    from reconciler.adapters.sources.file import FileOrigin
    listed = FileOrigin.list_files

    async def grown(self: FileOrigin) -> list:  # type: ignore[type-arg]
        out = await listed(self)
        (src / "tiny").write_bytes(b"xyz")  # after the listing: 3 bytes where 1 was listed
        return out

    monkeypatch.setattr(FileOrigin, "list_files", grown)
    with pytest.raises(OriginError, match=r"tiny: 3 bytes, listed as 1 \(did it change while locking\?\)"):
        asyncio.run(_lock(tmp_path, _dataset(src)))
