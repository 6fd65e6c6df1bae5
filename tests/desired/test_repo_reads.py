"""Reading the state repo never skips and never blocks (DESIGN §3, issue 11 item 1).

Real files and real processes: `python -m reconciler validate DIR` in a subprocess, bounded by
a timeout (a hang fails the test instead of blocking the suite; no time is asserted). As root,
the permission test drops privileges in the subprocess with `setpriv`, since root reads any
directory whatever its mode.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import reconciler
from reconciler.desired.loader import MAX_FILE_BYTES, load_documents
from reconciler.desired.revision import state_revision
from reconciler.desired.validate import load_desired_state
from reconciler.model.desired import DesiredState, ValidationError

SOURCE_ROOT = Path(reconciler.__file__).resolve().parent.parent
TIMEOUT = 20.0  # a bound on a hang, not a performance assertion
NOBODY = 65534


def node_doc(name: str, ip: str) -> str:
    return (f"apiVersion: syncbit/v1\nkind: Node\nmetadata:\n  name: {name}\n"
            f"spec:\n  peer: \"{ip}:6881\"\n  api: \"{ip}:7070\"\n")


@pytest.fixture
def repo() -> Iterator[Path]:
    """A valid repo with one Node at the top and one in `more-nodes/`, in a directory that an
    unprivileged user can reach (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="syncbit-reads-"))
    top.chmod(0o755)
    root = top / "state"
    (root / "more-nodes").mkdir(parents=True)
    (root / "nodes.yaml").write_text(node_doc("gpu-01", "10.0.0.1"))
    (root / "more-nodes" / "gpu-02.yaml").write_text(node_doc("gpu-02", "10.0.0.2"))
    for path in (top, root, root / "more-nodes"):
        path.chmod(0o755)
    (root / "nodes.yaml").chmod(0o644)
    (root / "more-nodes" / "gpu-02.yaml").chmod(0o644)
    try:
        yield root
    finally:
        for dirpath, dirnames, _ in os.walk(top):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(top, ignore_errors=True)


def run(args: list[str], *, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with this source tree, as `nobody` when asked and we are root."""
    cmd = [sys.executable, *args]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to drop root's privileges")
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd="/")


def validate(root: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    return run(["-m", "reconciler", "validate", str(root)], unprivileged=unprivileged)


def rejected(result: DesiredState | list[ValidationError]) -> list[ValidationError]:
    assert not isinstance(result, DesiredState), "the revision must be rejected"
    return result


def test_the_fixture_repo_is_valid_for_an_unprivileged_user(repo: Path) -> None:
    result = validate(repo, unprivileged=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (2 nodes, 0 datasets)" in result.stdout


def test_unreadable_subdirectory_rejects_the_revision(repo: Path) -> None:
    (repo / "more-nodes").chmod(0)
    result = validate(repo, unprivileged=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "more-nodes:1:1: (file): cannot read directory: permission denied (EACCES)" \
        in result.stdout.splitlines()


def test_unreadable_repo_root_rejects_the_revision(repo: Path) -> None:
    repo.chmod(0o311)  # can enter, cannot list
    result = validate(repo, unprivileged=True)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith(".:1:1: (repo): cannot read the state repo directory ")
    assert "permission denied (EACCES)" in line


def test_unreadable_file_rejects_the_revision(repo: Path) -> None:
    (repo / "more-nodes" / "gpu-02.yaml").chmod(0)
    result = validate(repo, unprivileged=True)
    assert result.returncode == 1
    assert "more-nodes/gpu-02.yaml:1:1: (file): cannot read file: permission denied (EACCES)" \
        in result.stdout.splitlines()


def test_revision_of_an_unreadable_directory_differs(repo: Path) -> None:
    """The content hash does not skip what it cannot read: as `nobody`, a chmod 000
    directory gives a revision that is neither the readable repo's nor the repo without it."""
    script = ("import sys; from pathlib import Path; "
              "from reconciler.desired.revision import state_revision; "
              "print(state_revision(Path(sys.argv[1])))")
    readable = run(["-c", script, str(repo)], unprivileged=True).stdout.strip()
    (repo / "more-nodes").chmod(0)
    unreadable = run(["-c", script, str(repo)], unprivileged=True).stdout.strip()
    (repo / "more-nodes").chmod(0o755)
    shutil.rmtree(repo / "more-nodes")
    without = state_revision(repo)
    assert readable.startswith("sha256:") and unreadable.startswith("sha256:")
    assert len({readable, unreadable, without}) == 3


def test_fifo_named_yaml_is_rejected_without_blocking(repo: Path) -> None:
    os.mkfifo(repo / "x.yaml")
    result = validate(repo)  # a hang would end in TimeoutExpired
    assert result.returncode == 1
    assert ("x.yaml:1:1: (file): not a regular file (a FIFO): refused without reading it"
            in result.stdout.splitlines())


def test_fifo_revision_does_not_block(repo: Path) -> None:
    os.mkfifo(repo / "pipe.txt")  # any name: the content hash looks at every file
    script = ("import sys; from pathlib import Path; "
              "from reconciler.desired.revision import state_revision; "
              "print(state_revision(Path(sys.argv[1])))")
    result = run(["-c", script, str(repo)])
    assert result.returncode == 0 and result.stdout.startswith("sha256:")


def test_oversized_file_is_rejected_with_its_size_and_the_cap(repo: Path) -> None:
    big = repo / "big.yaml"
    with big.open("wb") as f:  # sparse: no 17 MiB written
        f.truncate(MAX_FILE_BYTES + 1024 * 1024)
    result = validate(repo)
    assert result.returncode == 1
    assert ("big.yaml:1:1: (file): file is 17.0 MiB (17825792 bytes), over the cap of "
            "16.0 MiB (16777216 bytes) per file") in result.stdout.splitlines()


def test_symlink_to_etc_passwd_is_rejected(repo: Path) -> None:
    (repo / "x.yaml").symlink_to("/etc/passwd")
    result = validate(repo)
    assert result.returncode == 1
    assert "x.yaml:1:1: (file): symlink points outside the state repo" \
        in result.stdout.splitlines()
    assert "root:" not in result.stdout + result.stderr  # nothing of it was read


def test_too_many_open_files_rejects_the_revision(repo: Path) -> None:
    """EMFILE while listing the repo is a rejection, not an empty (or partial) repo."""
    script = (
        "import os, resource, sys; from pathlib import Path\n"
        "from reconciler.desired.validate import load_desired_state\n"
        "root = Path(sys.argv[1])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "held = []\n"
        "for _ in range(64):\n"  # bounded: the limit is 64
        "    try: held.append(os.open('/dev/null', os.O_RDONLY))\n"
        "    except OSError: break\n"
        "result = load_desired_state(root, 'r')\n"
        "for fd in held: os.close(fd)\n"
        "print(type(result).__name__); [print(e) for e in result] if isinstance(result, list) else None\n"
    )
    result = run(["-c", script, str(repo)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "list"
    assert any("too many open files (EMFILE)" in line for line in lines[1:]), lines


# Pure level: load_desired_state / load_documents on real special files, in this process.


def test_special_files_named_yaml_are_rejected(repo: Path) -> None:
    os.mkfifo(repo / "fifo.yaml")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(repo / "sock.yml"))
        (repo / "null.yaml").symlink_to("/dev/null")
        (repo / "inside-fifo.yaml").symlink_to(repo / "fifo.yaml")
        errors = rejected(load_desired_state(repo, "r"))
    finally:
        sock.close()
    assert [(e.file, e.line, e.col, e.field, e.message) for e in errors] == [
        ("fifo.yaml", 1, 1, "(file)", "not a regular file (a FIFO): refused without reading it"),
        ("inside-fifo.yaml", 1, 1, "(file)",
         "not a regular file (a FIFO): refused without reading it"),
        ("null.yaml", 1, 1, "(file)", "symlink points outside the state repo"),
        ("sock.yml", 1, 1, "(file)", "not a regular file (a socket): refused without reading it"),
    ]


def test_directory_named_yaml_behind_a_symlink_is_rejected(repo: Path) -> None:
    (repo / "dir.yaml").symlink_to(repo / "more-nodes")
    errors = rejected(load_desired_state(repo, "r"))
    assert [(e.file, e.message) for e in errors] == [
        ("dir.yaml", "not a regular file (a directory): refused without reading it")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory (see the setpriv tests)")
def test_unreadable_subdirectory_pure(repo: Path) -> None:
    (repo / "more-nodes").chmod(0)
    errors = rejected(load_desired_state(repo, "r"))
    assert [(e.file, e.field) for e in errors] == [("more-nodes", "(file)")]


def test_total_cap_stops_reading(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reconciler.desired.loader as loader
    monkeypatch.setattr(loader, "MAX_TOTAL_BYTES", 150)  # nodes.yaml (~90 B) fits, not both
    result = load_documents(repo)
    assert [d.file for d in result.documents] == ["more-nodes/gpu-02.yaml"]
    [error] = result.errors
    assert (error.file, error.field) == ("nodes.yaml", "(repo)")
    assert "exceed the cap of" in error.message and "in total" in error.message
