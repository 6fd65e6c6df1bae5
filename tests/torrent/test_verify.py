import asyncio

from harness import pseudo_random, write_data
from reconciler.torrent.verify import verify_content
from reconciler.adapters.sources import OriginContext
from reconciler.model.desired import FileSource
from reconciler.app.lock import build_lock
from factories import dataset


def make(tmp_path):
    files = {"a.bin": pseudo_random(200_000, "a"), "sub/b.bin": pseudo_random(50_000, "b"),
             "empty": b""}
    src = write_data(tmp_path / "src" / "ds", files)
    d = dataset("ds")
    d = type(d)(**{**d.__dict__, "source": FileSource(str(src))})

    async def lock() -> bytes:
        async with OriginContext(tmp_path) as ctx:
            return await build_lock(d, ctx)
    return src, asyncio.run(lock())


def test_intact_content_verifies(tmp_path):
    src, torrent = make(tmp_path)
    assert verify_content(torrent, src) == []


def test_a_flipped_byte_a_truncated_and_a_missing_file_are_named(tmp_path):
    src, torrent = make(tmp_path)
    data = bytearray((src / "a.bin").read_bytes())
    data[123_456] ^= 1
    (src / "a.bin").write_bytes(bytes(data))
    (src / "sub" / "b.bin").write_bytes(b"short")
    (src / "empty").unlink()
    assert sorted(verify_content(torrent, src)) == ["a.bin", "empty", "sub/b.bin"]
