"""reconciler.adapters.atomic: readers see the old or the new content, never a torn file or a temp file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconciler.adapters import atomic


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_write_bytes_creates_and_replaces(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "dir" / "out.bin"
    atomic.write_bytes(f, b"first")
    assert f.read_bytes() == b"first"
    ino = f.stat().st_ino
    atomic.write_bytes(f, b"second, longer content")
    assert f.read_bytes() == b"second, longer content"
    assert f.stat().st_ino != ino  # a new file renamed over the old one, not rewritten in place
    assert _leftovers(f.parent) == []


def test_write_bytes_applies_mode(tmp_path: Path) -> None:
    f = tmp_path / "out"
    atomic.write_bytes(f, b"x")
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    atomic.write_bytes(f, b"y", mode=0o600)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    atomic.write_text(f, "z", mode=0o640)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert f.read_text() == "z"


def test_write_json_and_text(tmp_path: Path) -> None:
    f = tmp_path / "doc.json"
    atomic.write_json(f, {"a": [1, 2], "b": None, "é": "ü"})
    assert json.loads(f.read_text()) == {"a": [1, 2], "b": None, "é": "ü"}
    assert f.read_text().endswith("\n")
    atomic.write_json(f, [1])
    assert json.loads(f.read_text()) == [1]
    assert _leftovers(tmp_path) == []


def test_write_json_unserialisable_keeps_old_file(tmp_path: Path) -> None:
    f = tmp_path / "doc.json"
    atomic.write_json(f, {"v": 1})
    with pytest.raises(TypeError):
        atomic.write_json(f, {"v": object()})
    assert json.loads(f.read_text()) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_failed_rename_removes_temp_file(tmp_path: Path) -> None:
    """The final rename fails (a directory sits where the file goes): nothing is left behind."""
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep").write_text("user data")
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"new")
    assert (target / "keep").read_text() == "user data"
    assert _leftovers(tmp_path) == []


def test_failure_in_the_middle_of_the_write_keeps_old_file(tmp_path: Path) -> None:
    """A write that fails half-way (file size limit: EFBIG) leaves the old content and no temp."""
    f = tmp_path / "big.bin"
    atomic.write_bytes(f, b"old content")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from reconciler.adapters import atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            atomic.write_bytes(Path({str(f)!r}), b"n" * 100_000)
        except OSError as e:
            print("failed", e.errno)
            sys.exit(0)
        sys.exit("the write should have failed")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("failed")
    assert f.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_keeps_old_file(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    f = d / "status.json"
    atomic.write_json(f, {"old": True})
    d.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            atomic.write_json(f, {"old": False})
    finally:
        d.chmod(0o755)
    assert json.loads(f.read_text()) == {"old": True}
    assert _leftovers(d) == []


def test_symlink_create_and_swap(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    link = tmp_path / "links" / "current"
    atomic.symlink(a, link)
    assert link.is_symlink() and os.readlink(link) == str(a)
    assert (link / "f").read_text() == "A"
    atomic.symlink(b, link)
    assert link.is_symlink() and os.readlink(link) == str(b)
    assert (link / "f").read_text() == "B"
    assert _leftovers(link.parent) == []


def test_symlink_replaces_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "current"
    os.symlink(tmp_path / "gone", link)
    (tmp_path / "new").mkdir()
    atomic.symlink(tmp_path / "new", link)
    assert os.readlink(link) == str(tmp_path / "new")


def test_symlink_refuses_to_replace_user_data(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    target.mkdir()
    d = tmp_path / "real-dir"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"user")
    f = tmp_path / "real-file"
    f.write_text("user file")
    with pytest.raises(FileExistsError):
        atomic.symlink(target, d)
    with pytest.raises(FileExistsError):
        atomic.symlink(target, f)
    assert d.is_dir() and not d.is_symlink() and (d / "weights.bin").read_bytes() == b"user"
    assert f.read_text() == "user file" and not f.is_symlink()
    assert _leftovers(tmp_path) == []
