"""core.lockfile must read every lock exactly as libtorrent does, and refuse hostile input cleanly.

The reference is the libtorrent-based reader this module replaced (kept below): on torrents made
by build_torrent and by libtorrent itself, both give the same LockFile; on mutated torrents the
pure reader may only raise ValueError, and whatever it accepts libtorrent accepts identically.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.bencode import bdecode, bencode
from reconciler.core.lockfile import lock_extra, merkle_root, read_lock, zero_root
from reconciler.model.desired import LockFile
from reconciler.torrent.hybrid import FileHasher, build_torrent

KiB = 1024
P16 = 16 * KiB


def _data(size: int, seed: int | str = 0) -> bytes:
    return random.Random(f"{seed}:{size}").randbytes(size)


def ours(files: dict[str, bytes], piece_size: int = P16, extra: dict | None = None) -> bytes:
    hashed = []
    for rel, data in files.items():
        h = FileHasher(piece_size)
        h.update(data)
        hashed.append((rel, h.finish()))
    return build_torrent("ds", piece_size, hashed, extra)


def libtorrent_made(parent: Path, files: dict[str, bytes], piece_size: int = P16,
                    flags: int = 0) -> bytes:
    root = parent / "ds"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    ct = lt.create_torrent(sorted(lt.list_files(str(root)), key=lambda e: e.filename), piece_size, flags)
    lt.set_piece_hashes(ct, str(parent))
    ct.set_creation_date(0)
    return lt.bencode(ct.generate())


def libtorrent_read_lock(data: bytes, path: str) -> LockFile:
    """The reader core.lockfile replaced: libtorrent's own parser (the reference)."""
    ti = lt.torrent_info(bytes(data))
    hashes = ti.info_hashes()
    assert hashes.has_v1() and hashes.has_v2()
    fs, name = ti.layout(), ti.name()
    out = []
    for i in range(fs.num_files()):
        if not fs.file_flags(i) & lt.file_storage.flag_pad_file:
            out.append((fs.file_path(i).replace("\\", "/")[len(name) + 1:], fs.file_size(i)))
    return LockFile(path=path, info_hash=hashes.v2.to_bytes().hex(),
                    info_hash_v1=hashes.v1.to_bytes().hex(), name=name,
                    total_bytes=sum(n for _, n in out), files=tuple(out))


FILE_SETS = {
    "one small file": ({"only.txt": b"hello"}, P16),
    "one multi-piece file": ({"only.bin": _data(3 * P16 + 7)}, P16),
    "nested": ({"top.txt": _data(5000), "a/b/c.bin": _data(40000), "a/bz": _data(1),
                "a0": _data(P16 * 4), "z/y/x": _data(70000), "B": _data(3)}, P16),
    "empty files": ({"e0": b"", "m/empty": b"", "x": _data(100), "zz": b""}, P16),
    "aligned": ({"one": _data(P16), "two": _data(2 * P16, 1)}, P16),
    "non-ascii": ({"é/ü.txt": _data(20000), "日本/語": _data(300)}, P16),
    "64 KiB pieces": ({"big": _data(5 * 64 * KiB + 1), "tiny": _data(17)}, 64 * KiB),
}


@pytest.mark.parametrize("case", FILE_SETS)
def test_same_as_libtorrent_on_build_torrent_output(case: str) -> None:
    files, piece = FILE_SETS[case]
    data = ours(files, piece, extra={"syncbit": {"k": "v"}})
    lock = read_lock(data, "locks/ds.torrent")
    assert lock == libtorrent_read_lock(data, "locks/ds.torrent")
    assert dict(lock.files) == {p: len(d) for p, d in files.items()}


@pytest.mark.parametrize("case", FILE_SETS)
def test_same_as_libtorrent_on_libtorrent_output(tmp_path: Path, case: str) -> None:
    files, piece = FILE_SETS[case]
    data = libtorrent_made(tmp_path, files, piece)
    assert read_lock(data, "x") == libtorrent_read_lock(data, "x")


def test_info_hashes_are_of_the_raw_info_bytes() -> None:
    data = ours({"a": _data(40000), "b/c": b"x"}, extra={"z": 1})
    raw = lt.bencode(lt.bdecode(data)[b"info"])
    lock = read_lock(data, "p")
    assert lock.info_hash == hashlib.sha256(raw).hexdigest()
    assert lock.info_hash_v1 == hashlib.sha1(raw).hexdigest()


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"i42e", b"d3:fooi1ee", b"d4:infoi1ee",
                                     b"d4:infod4:name2:dsee", b"l" * 1000 + b"e" * 1000])
def test_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a bencoded torrent|not a valid torrent"):
        read_lock(garbage, "x")


@pytest.mark.parametrize("flags", [lt.create_torrent.v1_only, lt.create_torrent.v2_only])
def test_not_hybrid(tmp_path: Path, flags: int) -> None:
    data = libtorrent_made(tmp_path, {"a": b"1", "b": b"22"}, flags=flags)
    with pytest.raises(ValueError, match=r"not a hybrid v1\+v2 torrent"):
        read_lock(data, "x")


def test_single_file(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    ct = lt.create_torrent(list(lt.list_files(str(tmp_path / "f.bin"))), P16, 0)
    lt.set_piece_hashes(ct, str(tmp_path))
    with pytest.raises(ValueError, match="single-file"):
        read_lock(lt.bencode(ct.generate()), "x")


def _edit(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    top = bdecode(data)
    edit(top)
    return bencode(top)


BASE = ours({"a/b": _data(3 * P16 + 5), "c": _data(100), "d": b""})


def _set_file_name(t: dict, name: bytes) -> None:
    t[b"info"][b"files"][0][b"path"] = [b"a", name]
    t[b"info"][b"file tree"][b"a"] = {name: t[b"info"][b"file tree"][b"a"][b"b"]}


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[b"info"].__setitem__(b"piece length", 3 * P16), "power of two"),
    (lambda t: t[b"info"].__setitem__(b"piece length", 8 * KiB), "power of two"),
    (lambda t: t[b"info"].__setitem__(b"pieces", t[b"info"][b"pieces"][:-20]), "one SHA-1"),
    (lambda t: t.__setitem__(b"piece layers", {}), "piece layers"),
    (lambda t: t.__delitem__(b"piece layers"), "piece layers"),
    (lambda t: t[b"piece layers"].__setitem__(next(iter(t[b"piece layers"])), bytes(128)),
     "does not hash"),
    (lambda t: t[b"info"][b"files"].pop(), "v1 and v2 file metadata"),
    (lambda t: t[b"info"][b"files"][0].__setitem__(b"length", 1), "v1 and v2 file metadata"),
    (lambda t: t[b"info"][b"files"].reverse(), "v1 and v2 file metadata"),
    (lambda t: _set_file_name(t, b".."), "path element"),
    (lambda t: _set_file_name(t, b"x\x00y"), "path element"),
    (lambda t: _set_file_name(t, b"x\\y"), "path element"),
    (lambda t: _set_file_name(t, b"\xff"), "UTF-8"),
    (lambda t: _set_file_name(t, b""), "not a valid torrent"),
    (lambda t: t[b"info"].__setitem__(b"name", b"../up"), "path element"),
    (lambda t: t[b"info"].__setitem__(b"meta version", 3), "not a hybrid"),
    (lambda t: t[b"info"].__delitem__(b"pieces"), "not a hybrid"),
])
def test_invalid_structure(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _edit(BASE, edit)
    with pytest.raises(ValueError, match=message):
        read_lock(data, "x")


def test_non_canonical_bencoding_refused() -> None:
    info_at = BASE.index(b"4:info")
    # a key out of order at the top level (the extra key after "info")
    data = b"d" + BASE[1:-1] + b"1:ai1ee"
    with pytest.raises(ValueError, match="not a bencoded torrent"):
        read_lock(data, "x")
    assert info_at > 0


def test_lock_extra() -> None:
    extra = {"syncbit": {"n": 7, "raw": b"\xff\x00", "l": ["é"]}, "comment": "pinned"}
    assert lock_extra(ours({"a": b"1", "b": b"2"}, extra=extra)) == extra
    with pytest.raises(ValueError, match="not a bencoded torrent"):
        lock_extra(b"nope")


def test_merkle_helpers() -> None:
    leaf = hashlib.sha256(b"x").digest()
    assert merkle_root([leaf], bytes(32)) == leaf
    assert merkle_root([leaf, leaf], bytes(32)) == hashlib.sha256(leaf + leaf).digest()
    assert zero_root(4) == hashlib.sha256(hashlib.sha256(bytes(64)).digest() * 2).digest()


# -- hostile input: ValueError only, and nothing libtorrent would read differently -----------

FUZZ = dict(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_hostile(data: bytes) -> None:
    try:
        lock = read_lock(data, "x")
    except ValueError:
        return
    assert lock == libtorrent_read_lock(data, "x")


@settings(**FUZZ)
@given(st.binary(max_size=300))
def test_fuzz_garbage(data: bytes) -> None:
    _check_hostile(data)
    try:
        lock_extra(data)
    except ValueError:
        pass


@settings(**FUZZ)
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255),
                          st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=4))
def test_fuzz_byte_mutations(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(BASE)
    for pos, byte, how in edits:
        pos = min(pos, len(data) - 1)
        if how == "set":
            data[pos] = byte
        elif how == "insert":
            data.insert(pos, byte)
        else:
            del data[pos]
    _check_hostile(bytes(data))


_leaf_values = st.one_of(st.integers(-2, 2**40), st.binary(max_size=40),
                         st.sampled_from([b"..", b".pad", b"p", b"", bytes(32)]))


def _paths(value: object, prefix: tuple = ()):  # type: ignore[no-untyped-def]
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


BASE_PATHS = [p for p in _paths(bdecode(BASE)) if p]


@settings(**FUZZ)
@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), st.sampled_from(["replace", "delete"]),
                          _leaf_values), min_size=1, max_size=3))
def test_fuzz_structural_mutations(edits: list) -> None:  # type: ignore[type-arg]
    top = bdecode(BASE)
    for path, how, value in edits:
        node = top
        try:
            for k in path[:-1]:
                node = node[k]
            if how == "delete":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    _check_hostile(bencode(top))


@pytest.mark.parametrize("name", ["x\u202ey", "tab\there", "a\\b", "nul\x00", "é" * 200])
def test_a_name_libtorrent_would_rewrite_is_refused(name: str) -> None:
    """libtorrent sanitises such names on disk; the second verification (torrent/verify.py)
    reads the names of the lock, so a lock is valid only if the two can never differ."""
    top = bdecode(BASE)
    info = top[b"info"]
    raw = name.encode()
    info[b"file tree"][raw] = info[b"file tree"].pop(b"c")
    for f in info[b"files"]:
        if f[b"path"] == [b"c"]:
            f[b"path"] = [raw]
    data = bencode(top)
    with pytest.raises(ValueError, match="libtorrent would drop or replace|longer than 240"):
        read_lock(data, "x")
