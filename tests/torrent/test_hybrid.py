"""reconciler.torrent.hybrid must produce exactly the bytes libtorrent itself produces for the same files."""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.torrent.hybrid import (
    BLOCK_SIZE,
    FileHasher,
    FileHashes,
    PieceRun,
    build_torrent,
    choose_piece_size,
    lock_extra,
    read_lock,
)

KiB = 1024
MiB = 1024 * KiB


def _data(size: int, seed: int | str = 0) -> bytes:
    return random.Random(f"{seed}:{size}").randbytes(size)


def libtorrent_torrent(parent: Path, name: str, files: dict[str, bytes], piece_size: int,
                       flags: int = 0) -> bytes:
    """The reference: write the files under parent/name and let libtorrent hash them."""
    root = parent / name
    for rel, data in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    entries = sorted(lt.list_files(str(root)), key=lambda e: e.filename)
    ct = lt.create_torrent(entries, piece_size, flags)
    lt.set_piece_hashes(ct, str(parent))
    ct.set_creation_date(0)
    return lt.bencode(ct.generate())


def hash_file(data: bytes, piece_size: int, chunk: int | None = None) -> FileHashes:
    h = FileHasher(piece_size)
    if chunk is None:
        h.update(data)
    else:
        for i in range(0, len(data), chunk):
            h.update(data[i:i + chunk])
    return h.finish()


def our_torrent(name: str, files: dict[str, bytes], piece_size: int, chunk: int | None = None,
                extra: dict | None = None) -> bytes:
    hashed = [(rel, hash_file(data, piece_size, chunk)) for rel, data in files.items()]
    return build_torrent(name, piece_size, hashed, extra)


P16 = 16 * KiB
CASES = {
    "one small file": ({"only.txt": b"hello"}, P16),
    "one multi-piece file": ({"only.bin": _data(3 * P16 + 7)}, P16),
    "nested dirs": ({"top.txt": _data(5000), "a/b/c.bin": _data(40000), "a/bz": _data(1),
                     "a0": _data(P16 * 4), "z/y/x": _data(70000), "B": _data(3)}, P16),
    "empty among others": ({"e0": b"", "m/empty": b"", "x": _data(100), "zz": b""}, P16),
    "exactly one piece": ({"one": _data(P16), "two": _data(P16, 1)}, P16),
    "exactly two pieces": ({"two": _data(2 * P16), "small": _data(10)}, P16),
    "piece size + 1": ({"p1": _data(P16 + 1), "q": _data(P16 - 1)}, P16),
    "non-ascii names": ({"é/ü.txt": _data(20000), "日本/語": _data(300), "e\u0301": _data(5)}, P16),
    "1 MiB pieces": ({"big": _data(3 * MiB + 12345), "exact": _data(MiB), "tiny": _data(17),
                      "sub/small": _data(300 * KiB)}, MiB),
    "1 MiB pieces, one file smaller than a piece": ({"f": _data(100 * KiB + 3)}, MiB),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_byte_identical_to_libtorrent(tmp_path: Path, case: str) -> None:
    files, piece_size = CASES[case]
    expected = libtorrent_torrent(tmp_path, "ds", files, piece_size)
    assert our_torrent("ds", files, piece_size) == expected


def _segment_order_differs(paths: list[str]) -> bool:
    """Whether libtorrent 2.1's whole-string sort disagrees with the per-element (file tree) one."""
    return sorted(paths) != sorted(paths, key=lambda p: [e.encode() for e in p.split("/")])


# A directory `a` next to `a.txt` / `a-b`, and `x` next to `x y`: libtorrent 2.1.1 lists these
# files in whole-string order and then cannot load its own torrent; 2.0 and we use file-tree order.
MISORDERED = {"a.txt": _data(5000), "a/b/c.bin": _data(40000), "a/b.c": _data(1),
              "a-b": _data(P16 * 4), "a/a": b"", "x y/z": _data(70000), "x/y": _data(3)}


def test_file_order_follows_file_tree_not_libtorrent_2_1(tmp_path: Path) -> None:
    ours = our_torrent("ds", MISORDERED, P16)
    # produced by libtorrent 2.0.11 (file_storage + add_files + create_torrent(fs, 16 KiB, 0) +
    # set_piece_hashes, creation date dropped) for these very files
    assert hashlib.sha256(ours).hexdigest() == (
        "d2899c464df8d02ed98d1e5aaeeeb81437584847139b2ab5d528230fd7a53617")
    lock = read_lock(ours, "p")
    assert lock.info_hash_v1 == "17f786d3873dba73f5d735dab571e8a5990b3df7"
    assert lock.info_hash == "aaef428ee0fd6ebc3e4f5e29b10c26bbde2584e50c1af06a1b30ad414bdbb9bf"
    assert [p for p, _ in lock.files] == ["a/a", "a/b/c.bin", "a/b.c", "a-b", "a.txt", "x/y", "x y/z"]
    _check_against_libtorrent_2_1(tmp_path, MISORDERED, P16, ours)


def _check_against_libtorrent_2_1(tmp: Path, files: dict[str, bytes], piece_size: int,
                                  ours: bytes) -> None:
    """Byte-identical where libtorrent 2.1 orders files like the file tree; otherwise its torrent
    must be the one it cannot load, and everything but the v1 file order must still agree."""
    theirs = libtorrent_torrent(tmp, "ds", files, piece_size)
    if not _segment_order_differs(list(files)):
        assert ours == theirs
        return
    with pytest.raises(RuntimeError, match="v1 and v2 file metadata does not match"):
        lt.torrent_info(theirs)
    a, b = lt.bdecode(ours), lt.bdecode(theirs)
    assert a[b"piece layers"] == b[b"piece layers"]
    assert a[b"info"][b"file tree"] == b[b"info"][b"file tree"]
    assert {k: v for k, v in a[b"info"].items() if k not in (b"files", b"pieces")} == \
        {k: v for k, v in b[b"info"].items() if k not in (b"files", b"pieces")}

    def v1_by_file(info: dict) -> dict[bytes, bytes]:
        """Each real file's v1 piece hashes (every file starts on a piece boundary)."""
        out, offset = {}, 0
        for f in info[b"files"]:
            if b"attr" not in f:
                first, n = offset // piece_size, -(-f[b"length"] // piece_size)
                out[b"/".join(f[b"path"])] = info[b"pieces"][20 * first:20 * (first + n)]
            offset += f[b"length"]
        return out

    assert v1_by_file(a[b"info"]) == v1_by_file(b[b"info"])


@pytest.mark.parametrize("chunk", [1, 7, BLOCK_SIZE - 1, 70000])
def test_chunk_size_does_not_matter(tmp_path: Path, chunk: int) -> None:
    files = {"a": _data(3 * P16 + 5), "b/c": _data(P16), "d": _data(9000)}
    if chunk == 1:  # byte-at-a-time is slow in Python; keep it small
        files = {"a": _data(P16 + 5), "d": _data(900)}
    expected = libtorrent_torrent(tmp_path, "ds", files, P16)
    assert our_torrent("ds", files, P16, chunk=chunk) == expected


def test_empty_updates_and_bytearray_input() -> None:
    data = _data(50000)
    h = FileHasher(P16)
    h.update(b"")
    h.update(bytearray(data[:100]))
    h.update(memoryview(data)[100:])
    h.update(b"")
    assert h.finish() == hash_file(data, P16)


def test_file_hashes_shape() -> None:
    empty = hash_file(b"", P16)
    assert empty == FileHashes(size=0, v1_pieces=(), piece_layer=b"", pieces_root=b"")
    small = hash_file(b"x" * 100, P16)
    assert len(small.v1_pieces) == 1 and small.piece_layer == b"" and len(small.pieces_root) == 32
    # v1: the last piece is hashed over the data plus the zero padding the pad file stands for
    assert small.v1_pieces[0] == hashlib.sha1(b"x" * 100 + bytes(P16 - 100)).digest()
    # v2: a single-block file's root is its block hash (one leaf, no padding)
    assert small.pieces_root == hashlib.sha256(b"x" * 100).digest()
    exact = hash_file(_data(P16), P16)
    assert exact.piece_layer == b"" and len(exact.v1_pieces) == 1
    three = hash_file(_data(2 * P16 + 1), P16)
    assert len(three.piece_layer) == 3 * 32 and len(three.v1_pieces) == 3


def test_finish_twice_raises() -> None:
    h = FileHasher(P16)
    h.update(b"abc")
    h.finish()
    with pytest.raises(ValueError):
        h.finish()
    with pytest.raises(ValueError):
        h.update(b"more")


@pytest.mark.parametrize("bad", [0, 1000, 8 * KiB, 3 * P16, -P16])
def test_bad_piece_size(bad: int) -> None:
    with pytest.raises(ValueError):
        FileHasher(bad)


@pytest.mark.parametrize("total,expected", [
    (0, 16 * KiB), (1, 16 * KiB), (2000 * 16 * KiB, 16 * KiB), (2000 * 16 * KiB + 1, 32 * KiB),
    (10 * 2**30, 8 * MiB), (2 * 2**40, 16 * MiB),
])
def test_choose_piece_size(total: int, expected: int) -> None:
    assert choose_piece_size(total) == expected


def test_choose_piece_size_targets_1000_to_2000_pieces() -> None:
    for total in [33 * MiB, 100 * MiB, 7 * 2**30, 31 * 2**30]:
        p = choose_piece_size(total)
        assert p & (p - 1) == 0 and 1000 < -(-total // p) <= 2000


def test_order_of_input_does_not_matter() -> None:
    files = [("b", hash_file(b"1", P16)), ("a/x", hash_file(b"22", P16)), ("a.y", hash_file(b"", P16))]
    assert build_torrent("ds", P16, files) == build_torrent("ds", P16, files[::-1])


@pytest.mark.parametrize("path", [
    "/abs", "a/../b", "..", "a//b", "a/", "", ".", "a/./b", "a\\b", "tab\there", "zw\u200bsp",
    "x" * 241,
])
def test_unsafe_paths_rejected(path: str) -> None:
    with pytest.raises(ValueError):
        build_torrent("ds", P16, [(path, hash_file(b"1", P16)), ("ok", hash_file(b"2", P16))])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b"])
def test_bad_names_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        build_torrent(name, P16, [("f", hash_file(b"1", P16))])


@pytest.mark.parametrize("files", [
    [("a", b"1"), ("a", b"2")],  # duplicate
    [("a", b"1"), ("a/b", b"2")],  # a file that is also a directory
    [("e", b""), ("f", b"")],  # no data at all: libtorrent refuses such a torrent too
    [],
])
def test_invalid_file_sets_rejected(files: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ValueError):
        build_torrent("ds", P16, [(p, hash_file(d, P16)) for p, d in files])


def test_hashes_for_another_piece_size_rejected() -> None:
    with pytest.raises(ValueError):
        build_torrent("ds", P16, [("f", hash_file(_data(100000), 32 * KiB))])


def test_read_lock(tmp_path: Path) -> None:
    files = {"z.bin": _data(3 * P16 + 1), "a/é.txt": _data(10), "empty": b""}
    data = our_torrent("ds", files, P16)
    lock = read_lock(data, "locks/ds.torrent")
    ti = lt.torrent_info(data)
    assert lock.path == "locks/ds.torrent"
    assert lock.name == "ds"
    assert lock.info_hash == ti.info_hashes().v2.to_bytes().hex() and len(lock.info_hash) == 64
    assert lock.info_hash_v1 == ti.info_hashes().v1.to_bytes().hex() and len(lock.info_hash_v1) == 40
    assert lock.info_hash == hashlib.sha256(lt.bencode(lt.bdecode(data)[b"info"])).hexdigest()
    assert lock.info_hash_v1 == hashlib.sha1(lt.bencode(lt.bdecode(data)[b"info"])).hexdigest()
    assert lock.files == (("a/é.txt", 10), ("empty", 0), ("z.bin", 3 * P16 + 1))
    assert lock.total_bytes == 3 * P16 + 11
    # and the same as reading libtorrent's own torrent of those files
    assert read_lock(libtorrent_torrent(tmp_path, "ds", files, P16), "x") == lock.__class__(
        **{**lock.__dict__, "path": "x"})


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"i42e", b"d3:fooi1ee", b"d4:infoi1ee"])
def test_read_lock_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a bencoded torrent|not a valid torrent"):
        read_lock(garbage, "x.torrent")


def test_read_lock_v1_only(tmp_path: Path) -> None:
    v1 = libtorrent_torrent(tmp_path, "ds", {"a": b"1", "b": b"22"}, P16,
                            flags=lt.create_torrent.v1_only)
    with pytest.raises(ValueError, match="not a hybrid v1\\+v2 torrent"):
        read_lock(v1, "x.torrent")


def test_read_lock_v2_only(tmp_path: Path) -> None:
    v2 = libtorrent_torrent(tmp_path, "ds", {"a": b"1", "b": b"22"}, P16,
                            flags=lt.create_torrent.v2_only)
    with pytest.raises(ValueError, match="not a hybrid v1\\+v2 torrent"):
        read_lock(v2, "x.torrent")


def test_read_lock_single_file_torrent(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    ct = lt.create_torrent(list(lt.list_files(str(tmp_path / "f.bin"))), P16, 0)
    lt.set_piece_hashes(ct, str(tmp_path))
    with pytest.raises(ValueError, match="single-file"):
        read_lock(lt.bencode(ct.generate()), "x.torrent")


def test_extra_round_trip_and_info_hash_unchanged() -> None:
    files = {"a": _data(40000), "b/c": b"x"}
    extra = {"syncbit": {"dataset": "imagenet", "version": "v3", "sources": ["s3://b/k", "é"],
                         "n": 7, "raw": b"\xff\x00"}, "comment": "pinned"}
    plain = our_torrent("ds", files, P16)
    with_extra = our_torrent("ds", files, P16, extra=extra)
    assert with_extra != plain
    assert lock_extra(with_extra) == extra
    assert lock_extra(plain) == {}
    assert read_lock(with_extra, "p").info_hash == read_lock(plain, "p").info_hash
    assert read_lock(with_extra, "p").info_hash_v1 == read_lock(plain, "p").info_hash_v1
    assert our_torrent("ds", files, P16, extra=extra) == with_extra  # deterministic


@pytest.mark.parametrize("extra", [
    {"info": {}}, {"piece layers": {}}, {"creation date": 1}, {"x": None}, {"x": 1.5},
    {"x": True}, {"x": {1: 2}}, {"x": object()},
])
def test_bad_extra_rejected(extra: dict) -> None:
    with pytest.raises(ValueError):
        our_torrent("ds", {"a": b"1"}, P16, extra=extra)


def test_lock_extra_garbage() -> None:
    with pytest.raises(ValueError, match="not a bencoded torrent"):
        lock_extra(b"nope")


_names = st.sampled_from(["a", "b", "B", "a.txt", "a-b", "a0", "é", "dir", "x y"])
_paths = st.lists(_names, min_size=1, max_size=3).map("/".join)


@st.composite
def file_sets(draw: st.DrawFn) -> dict[str, int]:
    paths = draw(st.lists(_paths, min_size=1, max_size=5, unique=True))
    # drop paths that would make a file also a directory
    kept: list[str] = []
    for p in sorted(paths, key=len):
        if not any(p.startswith(k + "/") or k.startswith(p + "/") for k in kept):
            kept.append(p)
    sizes = draw(st.lists(st.integers(0, 200 * KiB), min_size=len(kept), max_size=len(kept)))
    if not any(sizes):
        sizes[0] = draw(st.integers(1, 200 * KiB))
    return dict(zip(kept, sizes))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=file_sets(), piece_size=st.sampled_from([16 * KiB, 32 * KiB]),
       chunk=st.sampled_from([None, 1000, BLOCK_SIZE - 1, BLOCK_SIZE, 70000]),
       seed=st.integers(0, 2**16))
def test_property_matches_libtorrent(sizes: dict[str, int], piece_size: int, chunk: int | None,
                                     seed: int) -> None:
    files = {p: _data(n, f"{seed}:{p}") for p, n in sizes.items()}
    ours = our_torrent("ds", files, piece_size, chunk=chunk)
    with tempfile.TemporaryDirectory() as tmp:
        _check_against_libtorrent_2_1(Path(tmp), files, piece_size, ours)
    lock = read_lock(ours, "p")
    assert dict(lock.files) == sizes and lock.total_bytes == sum(sizes.values())


def test_libtorrent_session_verifies_all_pieces(tmp_path: Path) -> None:
    files = {"a/big.bin": _data(5 * P16 + 123), "b.txt": _data(777), "empty": b"",
             "c/d/e": _data(2 * P16), "a.txt": _data(P16 + 9)}  # a.txt: see MISORDERED
    for rel, data in files.items():
        (tmp_path / "ds" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / rel).write_bytes(data)
    torrent = our_torrent("ds", files, P16, extra={"syncbit": {"k": "v"}})

    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "alert_mask": 0,
    })
    try:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
        atp.save_path = str(tmp_path)
        atp.flags &= ~lt.torrent_flags.seed_mode  # make libtorrent hash the files itself
        handle = ses.add_torrent(atp)
        deadline = time.monotonic() + 30
        status = handle.status()
        while time.monotonic() < deadline:
            status = handle.status()
            if status.is_seeding and status.num_pieces == atp.ti.num_pieces():
                break
            time.sleep(0.05)
        assert status.errc.value() == 0, status.errc.message()
        assert status.num_pieces == atp.ti.num_pieces()
        assert status.is_seeding
        assert all(handle.status(lt.status_flags_t.query_pieces).pieces)
    finally:
        del ses


@pytest.mark.parametrize("piece_size", [P16, MiB, 4 * MiB])
def test_batched_and_threaded_hashing_matches_libtorrent(tmp_path: Path, piece_size: int) -> None:
    """Files of many 4 MiB hashing batches (more than a hasher keeps in flight), fed in chunks
    of uneven sizes that straddle pieces and batches: the pool, the calling thread and
    libtorrent agree byte for byte."""
    files = {"big": _data(21 * MiB + 5), "exact": _data(8 * MiB), "small": _data(5000),
             "empty": b""}
    expected = libtorrent_torrent(tmp_path, "ds", files, piece_size)
    rng = random.Random(piece_size)
    for parallel in (True, False):
        hashed = []
        for rel, data in files.items():
            h = FileHasher(piece_size, parallel=parallel)
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 1000, BLOCK_SIZE, 70000, MiB + 3, 5 * MiB])
                h.update(data[pos:pos + n])
                pos += n
            hashed.append((rel, h.finish()))
        assert build_torrent("ds", piece_size, hashed) == expected, parallel


def test_info_hashes_equal_libtorrent_create_torrent(tmp_path: Path) -> None:
    """The v1 and v2 info-hashes libtorrent computes for its own torrent and for ours."""
    files = {"a.bin": _data(6 * MiB + 1), "b/c.bin": _data(300 * KiB)}
    piece = choose_piece_size(sum(len(d) for d in files.values()))
    ref = lt.torrent_info(lt.bdecode(libtorrent_torrent(tmp_path, "ds", files, piece)))
    ours = lt.torrent_info(lt.bdecode(our_torrent("ds", files, piece, chunk=3 * MiB)))
    assert str(ours.info_hashes().v1) == str(ref.info_hashes().v1)
    assert str(ours.info_hashes().v2) == str(ref.info_hashes().v2)


@pytest.mark.parametrize("wrong", ["v1", "v2"])
def test_libtorrent_checks_both_v1_and_v2_hashes_of_a_hybrid_torrent(tmp_path: Path,
                                                                     wrong: str) -> None:
    """What verification relies on (core/transfer.py, torrent/verify.py): libtorrent's hash
    check of a hybrid torrent refuses a piece whose SHA-1 matches but whose v2 hashes do not,
    and the reverse, so a piece it accepted matches both of the lock's hashes."""
    from dataclasses import replace

    good, other = _data(4 * P16 + 100, "good"), bytearray(_data(4 * P16 + 100, "good"))
    other[5] ^= 1  # piece 0 differs
    ours, theirs = hash_file(good, P16), hash_file(bytes(other), P16)
    mixed = (replace(ours, v1_pieces=theirs.v1_pieces) if wrong == "v1" else
             replace(ours, piece_layer=theirs.piece_layer, pieces_root=theirs.pieces_root))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "f.bin").write_bytes(good)
    (tmp_path / "ds" / "g.bin").write_bytes(b"x" * 10)
    torrent = build_torrent("ds", P16, [("f.bin", mixed), ("g.bin", hash_file(b"x" * 10, P16))])
    ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                      "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False})
    try:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
        atp.save_path = str(tmp_path)
        handle = ses.add_torrent(atp)
        deadline = time.monotonic() + 30
        status = handle.status()
        while time.monotonic() < deadline:  # checked: downloading what it did not find
            status = handle.status()
            if status.state == lt.torrent_status.downloading:
                break
            time.sleep(0.02)
        assert status.state == lt.torrent_status.downloading, status.state
        have = list(handle.status(lt.status_flags_t.query_pieces).pieces)
        assert have == [False] + [True] * (len(have) - 1)
    finally:
        del ses


@settings(max_examples=40, deadline=None)
@given(pieces=st.integers(0, 12), tail=st.integers(0, 3 * 16384), cuts=st.lists(
    st.integers(0, 12), max_size=3), feeds=st.lists(st.integers(1, 70_000), min_size=1,
                                                    max_size=6))
def test_piece_runs_joined_in_order_are_the_file_hasher(pieces, tail, cuts, feeds):
    """Ranges of whole pieces hashed apart (`PieceRun`, one per range thread), fed in any
    chunk sizes, then joined with `add_pieces` and the last partial piece: the same hashes
    as the whole file through `FileHasher`."""
    piece = 4 * 16384
    data = random.Random(pieces * 1000 + tail).randbytes(pieces * piece + tail)
    whole = FileHasher(piece, parallel=False)
    whole.update(data)
    bounds = sorted({0, *(min(c, pieces) * piece for c in cuts)}) + [len(data)]
    runs = []
    for a, b in zip(bounds, bounds[1:]):
        run, at, k = PieceRun(piece), a, 0
        while at < b:
            n = min(feeds[k % len(feeds)], b - at)
            run.update(data[at:at + n])
            at, k = at + n, k + 1
        runs.append(run)
    joined = FileHasher(piece)
    for run in runs:
        if run.v1:
            joined.add_pieces(run.v1, run.layer)
    assert all(not r.tail for r in runs[:-1])
    joined.update(bytes(runs[-1].tail) if runs else b"")
    assert joined.finish() == whole.finish()


def test_add_pieces_refuses_to_come_after_partial_bytes():
    h = FileHasher(16384)
    h.update(b"x")
    with pytest.raises(ValueError):
        h.add_pieces([bytes(20)], [bytes(32)])
