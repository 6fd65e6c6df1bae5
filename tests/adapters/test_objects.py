"""adapters.objects: one read-only inode per pieces root, linked into versions, pruned when
no version links it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from reconciler.adapters.objects import ObjectStore
from reconciler.adapters.store import Store
from reconciler.core.cas import FileRoot

R1, R2 = "11" * 32, "22" * 32
WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _version(top: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)


def test_adopt_makes_files_read_only_and_shares_one_inode(tmp_path: Path) -> None:
    objs = ObjectStore(tmp_path)
    roots = [FileRoot("w/a.bin", 5, R1), FileRoot("e", 0, ""), FileRoot("b", 3, R2)]
    _version(tmp_path / "v1", {"w/a.bin": b"hello", "e": b"", "b": b"abc"})
    _version(tmp_path / "v2", {"w/a.bin": b"hello", "e": b"", "b": b"abc"})
    assert objs.adopt(tmp_path / "v1", roots) == 0
    assert objs.adopt(tmp_path / "v2", roots) == 8  # both files became links
    a1, a2 = (tmp_path / "v1/w/a.bin").stat(), (tmp_path / "v2/w/a.bin").stat()
    assert a1.st_ino == a2.st_ino == objs.path(R1).stat().st_ino and a1.st_nlink == 3
    for f in (tmp_path / "v1").rglob("*"):
        if f.is_file():
            assert not f.stat().st_mode & WRITE
    assert sorted(p.name for p in (tmp_path / "objects").glob("*/*")) == [R1, R2]  # no empty file


def test_adopt_respects_data_mode_minus_write_bits(tmp_path: Path) -> None:
    _version(tmp_path / "v", {"a": b"x"})
    os.chmod(tmp_path / "v/a", 0o664)  # what seal() gave it from dataMode
    ObjectStore(tmp_path).adopt(tmp_path / "v", [FileRoot("a", 1, R1)])
    assert stat.S_IMODE((tmp_path / "v/a").stat().st_mode) == 0o444


def test_place_links_objects_into_a_save_path(tmp_path: Path) -> None:
    objs = ObjectStore(tmp_path)
    _version(tmp_path / "v1", {"a": b"hello"})
    objs.adopt(tmp_path / "v1", [FileRoot("a", 5, R1)])
    save = tmp_path / "staging" / "ds"
    _version(save, {"d/a": b"hel"})  # a partial download of the same file
    roots = [FileRoot("d/a", 5, R1), FileRoot("b", 4, R2), FileRoot("wrong", 4, R1)]
    assert objs.place(save, roots) == (["d/a"], ["d/a"])
    assert (save / "d/a").stat().st_ino == objs.path(R1).stat().st_ino
    assert not (save / "b").exists() and not (save / "wrong").exists()
    assert objs.place(save, roots) == (["d/a"], [])  # already linked: nothing new


def test_prune_removes_only_orphans(tmp_path: Path) -> None:
    objs = ObjectStore(tmp_path)
    _version(tmp_path / "v1", {"a": b"hello", "b": b"abc"})
    _version(tmp_path / "v2", {"a": b"hello"})
    objs.adopt(tmp_path / "v1", [FileRoot("a", 5, R1), FileRoot("b", 3, R2)])
    objs.adopt(tmp_path / "v2", [FileRoot("a", 5, R1)])
    for f in (tmp_path / "v1").iterdir():
        f.unlink()
    assert objs.prune() == 3
    assert objs.path(R1).exists() and not objs.path(R2).exists()
    assert not objs.path(R2).parent.exists()


def test_evict_frees_what_only_the_object_kept(tmp_path: Path) -> None:
    store = Store(tmp_path)
    top = store.version_dir("ds", "ih1") / "ds"
    _version(top, {"a": b"hello", "b": b"abc"})
    store.mark_complete("ds", "ih1", "v1", "ds", 8)
    ObjectStore(tmp_path).adopt(top, [FileRoot("a", 5, R1), FileRoot("b", 3, R2)])
    top2 = store.version_dir("ds", "ih2") / "ds"
    _version(top2, {"a": b"hello"})
    store.mark_complete("ds", "ih2", "v2", "ds", 5)
    ObjectStore(tmp_path).adopt(top2, [FileRoot("a", 5, R1)])
    assert store.evict("ds", "ih1") == 3  # b.bin's object went; a's is linked by v2
    assert (top2 / "a").stat().st_nlink == 2
    assert store.evict("ds", "ih2") == 5
    assert list((tmp_path / "objects").glob("*/*")) == []
