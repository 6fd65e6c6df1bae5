"""core.cas: pieces roots read from lock bytes, and which pieces belong to linked files."""

from __future__ import annotations

import random

import libtorrent as lt
import pytest

from reconciler.core.cas import FileRoot, broken_links, file_pieces, file_roots, frozen_pieces, mask, object_rel
from reconciler.torrent.hybrid import FileHasher, build_torrent

P16 = 16 * 1024


def _data(size: int, seed: str) -> bytes:
    return random.Random(f"{seed}:{size}").randbytes(size)


def _torrent(files: dict[str, bytes], piece_size: int = P16) -> bytes:
    hashed = []
    for rel, data in files.items():
        h = FileHasher(piece_size)
        h.update(data)
        hashed.append((rel, h.finish()))
    return build_torrent("ds", piece_size, hashed, None)


def test_roots_are_libtorrents_and_depend_only_on_the_bytes() -> None:
    same = _data(3 * P16 + 5, "same")
    t1 = _torrent({"a/x.bin": same, "b.txt": _data(100, "b"), "empty": b""})
    t2 = _torrent({"other/name": same, "c": _data(7, "c")}, piece_size=4 * P16)
    r1, r2 = file_roots(t1), file_roots(t2)
    assert [(f.path, f.size) for f in r1] == [("a/x.bin", 3 * P16 + 5), ("b.txt", 100), ("empty", 0)]
    assert r1[2].root == ""  # an empty file has no root and needs no object
    other = {f.path: f.root for f in r2}
    assert other["other/name"] == r1[0].root  # other name, other piece size, same bytes
    assert r1[1].root != r1[0].root
    fs = lt.torrent_info(t1).layout()
    lt_roots = {fs.file_path(i).split("/", 1)[1]: fs.root(i).to_bytes().hex()
                for i in range(fs.num_files()) if fs.file_size(i)
                and not fs.file_flags(i) & lt.file_storage.flag_pad_file}
    assert lt_roots == {f.path: f.root for f in r1 if f.size}


def test_not_a_v2_torrent_has_no_roots() -> None:
    assert file_roots(b"not bencode") == ()
    assert file_roots(b"d4:infod4:name1:xee") == ()


def test_object_rel() -> None:
    root = "ab" + "0" * 62
    assert object_rel(root) == f"ab/{root}"
    for bad in ("", "../" + "0" * 61, "AB" + "0" * 62, "0" * 63):
        with pytest.raises(ValueError):
            object_rel(bad)


def test_pieces_of_files_start_on_boundaries_and_empty_files_take_none() -> None:
    files = [("a", P16 * 2 + 1), ("e", 0), ("b", P16), ("c", 1)]
    assert file_pieces(files, P16) == {"a": range(0, 3), "e": range(0, 0), "b": range(3, 4),
                                       "c": range(4, 5)}
    assert frozen_pieces(files, P16, ["a", "c", "e"]) == frozenset({0, 1, 2, 4})
    assert frozen_pieces(files, P16, ["missing"]) == frozenset()


def test_mask_zeroes_frozen_pieces_only() -> None:
    assert mask((4, 4, 0, 7, 1), frozenset({0, 3})) == (0, 4, 0, 0, 1)
    assert mask((4, 4), frozenset()) == (4, 4)


def test_file_root_is_plain_data() -> None:
    assert FileRoot("x", 1, "ab") == FileRoot("x", 1, "ab")


def test_broken_links_are_linked_files_missing_a_piece() -> None:
    files = [("a", P16 * 2), ("b", P16), ("c", 5)]
    have = (True, False, True, True)
    assert broken_links(files, P16, ["a", "b", "c"], have) == ["a"]
    assert broken_links(files, P16, ["b"], have) == []
    assert broken_links(files, P16, ["c"], have[:3]) == ["c"]  # no status for it yet: not whole
