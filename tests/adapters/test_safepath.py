"""adapters/safepath.py on a real file system."""

from __future__ import annotations

import os

import pytest

from reconciler.adapters.safepath import UnsafePath, check_link


@pytest.fixture
def fs(tmp_path):
    root, store, out = tmp_path / "data", tmp_path / "state" / "store", tmp_path / "out"
    for d in (root, store / "x" / "ih" / "x", out):
        d.mkdir(parents=True)
    return root, store, out


def test_new_paths_inside_the_root_are_fine_even_under_missing_directories(fs):
    root, store, _ = fs
    check_link(root / "a" / "b" / "x", [str(root)], store)


def test_a_directory_symlink_leading_out_of_the_root_is_refused(fs):
    root, store, out = fs
    os.symlink(out, root / "esc")
    with pytest.raises(UnsafePath, match="outside the allowed roots") as e:
        check_link(root / "esc" / "deeper" / "x", [str(root)], store)
    assert str(root) in str(e.value) and str(root / "esc" / "deeper" / "x") in str(e.value)


def test_a_root_that_is_itself_a_symlink_is_resolved_on_both_sides(fs, tmp_path):
    root, store, _ = fs
    os.symlink(root, tmp_path / "alias")
    check_link(tmp_path / "alias" / "x", [str(tmp_path / "alias")], store)


def test_only_symlinks_into_the_store_are_replaced(fs):
    root, store, out = fs
    os.symlink(store / "x" / "ih" / "x", root / "ours")
    check_link(root / "ours", [str(root)], store)
    os.symlink(store / "x" / "gone" / "x", root / "dangling-ours")  # an evicted version
    check_link(root / "dangling-ours", [str(root)], store)
    os.symlink(out, root / "theirs")
    with pytest.raises(UnsafePath, match="not in this node's store"):
        check_link(root / "theirs", [str(root)], store)
    os.symlink("../state/store/../../out", root / "sneaky")
    with pytest.raises(UnsafePath):
        check_link(root / "sneaky", [str(root)], store)
