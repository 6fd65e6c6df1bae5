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


def test_only_the_files_asked_for_are_read_but_every_size_is_checked(tmp_path):
    src, torrent = make(tmp_path)
    data = bytearray((src / "a.bin").read_bytes())
    data[5] ^= 1
    (src / "a.bin").write_bytes(bytes(data))  # same size, other bytes
    assert verify_content(torrent, src, read=()) == []  # not read back: not seen
    assert verify_content(torrent, src, read=("a.bin",)) == ["a.bin"]
    (src / "sub" / "b.bin").write_bytes(b"short")
    assert verify_content(torrent, src, read=()) == ["sub/b.bin"]  # sizes always


def test_a_file_whose_stamp_changed_is_read_back(tmp_path):
    import os
    from reconciler.torrent.verify import stamp
    src, torrent = make(tmp_path)
    stamps = {"a.bin": stamp(src / "a.bin")}
    assert verify_content(torrent, src, read=(), stamps=stamps) == []
    data = bytearray((src / "a.bin").read_bytes())
    data[5] ^= 1
    (src / "a.bin").write_bytes(bytes(data))
    st = (src / "a.bin").stat()
    os.utime(src / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert verify_content(torrent, src, read=(), stamps=stamps) == ["a.bin"]
    data[5] ^= 1
    (src / "a.bin").write_bytes(bytes(data))  # changed back: stamp differs, content good
    assert verify_content(torrent, src, read=(), stamps=stamps) == []
