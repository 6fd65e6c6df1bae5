"""The store's bytes by inode, and what a killed process leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.adapters import disk


def _file(p: Path, n: int) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * n)
    return p


def test_hard_links_count_once_and_free_nothing_while_shared(tmp_path: Path) -> None:
    a = _file(tmp_path / "store" / "d" / "A" / "d" / "f", 8192)
    os.link(a, tmp_path / "store" / "d" / "A" / "d" / "g")  # same version: one inode
    b = tmp_path / "store" / "d" / "B" / "d" / "f"
    b.parent.mkdir(parents=True)
    os.link(a, b)  # shared with another version
    _file(tmp_path / "staging" / "e" / "C" / "e" / "h", 4096)
    u = disk.usage(tmp_path)
    assert u.used == 8192 + 4096
    assert u.sizes[("d", "A")] == 0 and u.sizes[("d", "B")] == 0  # still linked elsewhere
    assert u.sizes[("e", "C")] == 4096 and u.present[("d", "A")] == 8192


def test_orphans_are_removed_and_a_cut_short_move_is_finished(tmp_path: Path) -> None:
    tmp = _file(tmp_path / "store" / "d" / ".A.json.abc.tmp", 1)
    build = tmp_path / "staging" / "d" / ".build-k"
    _file(build / "x", 1)
    keep = _file(tmp_path / "store" / "d" / "A.json", 1)  # complete: not touched
    moved = _file(tmp_path / "store" / "d" / "B" / "d" / "one", 1)
    left = _file(tmp_path / "staging" / "d" / "B" / "d" / "two", 2)
    label = _file(tmp_path / "staging" / "d" / "B.json", 1)
    disk.clean_orphans(tmp_path)
    assert not tmp.exists() and not build.exists() and keep.exists() and label.exists()
    assert moved.exists() and not left.exists()
    assert (tmp_path / "store" / "d" / "B" / "d" / "two").read_bytes() == b"xx"
    assert not (tmp_path / "staging" / "d" / "B").exists()


def test_the_object_link_does_not_keep_a_version_from_freeing_its_files(tmp_path: Path) -> None:
    """objects/ holds one more link to every unique file; evicting the last version that
    links it prunes the object too, so that version frees the bytes."""
    a = _file(tmp_path / "store" / "d" / "A" / "d" / "f", 8192)
    obj = tmp_path / "objects" / "ab" / ("ab" + "0" * 62)
    obj.parent.mkdir(parents=True)
    os.link(a, obj)
    orphan = _file(tmp_path / "objects" / "cd" / ("cd" + "0" * 62), 4096)  # no version links it
    u = disk.usage(tmp_path)
    assert u.sizes[("d", "A")] == 8192
    assert u.used == 8192 + orphan.stat().st_size
