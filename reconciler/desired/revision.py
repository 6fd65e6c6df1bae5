"""The revision of a state repo: its git commit, else a hash of its files.

git-sync publishes each checkout by swapping a symlink, so the root is resolved first and
everything (git and the hash) looks at that one resolved directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from reconciler.desired.loader import iter_state_files

__all__ = ["state_revision", "git_head", "content_hash"]

_HEX_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Variables that would point git at another repository than the directory's own.
_GIT_ENV_OVERRIDES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
                      "GIT_CEILING_DIRECTORIES")
_CHUNK = 1 << 20


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


def content_hash(directory: Path) -> str:
    """`sha256:<hex>` over the sorted relative paths and contents of all non-hidden files.

    Streams every file; an unreadable file contributes a marker instead of its bytes (loading
    reports it). Hidden files and directories (`.git`) are skipped, like the loader does.
    """
    base = directory.resolve()
    h = hashlib.sha256()
    for path in iter_state_files(base, suffixes=None):
        rel = path.relative_to(base).as_posix().encode("utf-8", "surrogateescape")
        h.update(b"path\0%d\0" % len(rel) + rel)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                h.update(b"\0data\0%d\0" % size)
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError as exc:
            h.update(b"\0unreadable\0" + str(exc.errno).encode())
        h.update(b"\0end\0")
    return "sha256:" + h.hexdigest()


def state_revision(root: Path) -> str:
    """The git commit (HEAD) of the work tree holding `root` (symlinks followed), else
    `sha256:<hex>` of its files (also for a git repository without commits)."""
    resolved = Path(root).resolve()
    return git_head(resolved) or content_hash(resolved)
