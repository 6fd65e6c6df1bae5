"""The revision of a state repo: its git commit, else a hash of its files.

git-sync publishes each checkout by swapping a symlink, so the root is resolved first and
everything (git and the hash) looks at that one resolved directory.

The hash never blocks and never skips: a FIFO, socket or device is hashed by its type (never
opened), and a file or directory that cannot be read is hashed as a marker with its path and
errno. So an unreadable repo still has a revision, different from the readable one's and from
the repo without that entry; the loader rejects that revision with the error (DESIGN §3), and
fixing the permissions gives the readable revision back. The revision itself never raises:
the daemon compares revisions every few seconds and must keep running.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

from reconciler.desired.loader import scan_state_files

__all__ = ["state_revision", "git_head", "content_hash"]

_HEX_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Variables that would point git at another repository than the directory's own.
_GIT_ENV_OVERRIDES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
                      "GIT_CEILING_DIRECTORIES")
_CHUNK = 1 << 20
# Non-blocking open: a FIFO swapped in after the stat check returns at once instead of waiting.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def git_head(directory: Path, timeout: float = 30.0) -> str | None:
    """`git rev-parse HEAD` of the work tree holding `directory`, or None.

    None when git is missing, the directory is not in a git work tree, or the repository has no
    commit yet. `safe.directory` is relaxed for this read-only call: git-sync usually runs as
    another user than the reconciler, and git would otherwise refuse the repository.
    """
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_OVERRIDES}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        inside = subprocess.run(
            ["git", "-c", "safe.directory=*", "rev-parse", "--is-inside-work-tree"],
            cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        head = subprocess.run(
            ["git", "-c", "safe.directory=*", "rev-parse", "--verify", "--quiet", "HEAD"],
            cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if head.returncode != 0 or not _HEX_COMMIT.fullmatch(commit):
        return None
    return commit


def _hash_file(h: "hashlib._Hash", path: Path) -> None:
    """Feed one entry: a regular file's bytes (symlinks followed; at most the size it had when
    opened, so a growing file cannot keep the loop going), else its type, else its errno."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            h.update(b"\0special\0%o" % stat.S_IFMT(st.st_mode))
            return
        fd = os.open(path, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                h.update(b"\0special\0%o" % stat.S_IFMT(st.st_mode))
                return
            remaining = st.st_size
            h.update(b"\0data\0%d\0" % remaining)
            while remaining > 0:  # bounded by the size at open
                chunk = os.read(fd, min(_CHUNK, remaining))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        h.update(b"\0unreadable\0" + str(exc.errno).encode())


def content_hash(directory: Path) -> str:
    """`sha256:<hex>` over the sorted relative paths and contents of all non-hidden files.

    Streams every regular file; a FIFO, socket or device contributes its type, an unreadable
    file or directory a marker (loading reports it). Hidden files and directories (`.git`) are
    skipped, like the loader does.
    """
    base = directory.resolve()
    h = hashlib.sha256()
    scanned = scan_state_files(base, suffixes=None)
    for path in scanned.files:
        rel = path.relative_to(base).as_posix().encode("utf-8", "surrogateescape")
        h.update(b"path\0%d\0" % len(rel) + rel)
        _hash_file(h, path)
        h.update(b"\0end\0")
    for problem in scanned.problems:  # by relative path only: the same on every node
        rel = problem.rel.encode("utf-8", "surrogateescape")
        h.update(b"unlisted\0%d\0" % len(rel) + rel)
    return "sha256:" + h.hexdigest()


def state_revision(root: Path) -> str:
    """The git commit (HEAD) of the work tree holding `root` (symlinks followed), else
    `sha256:<hex>` of its files (also for a git repository without commits)."""
    resolved = Path(root).resolve()
    return git_head(resolved) or content_hash(resolved)
