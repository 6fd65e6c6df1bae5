"""`state_revision`: the git commit of a real repository, else a content hash."""

import re
import subprocess
from pathlib import Path

from reconciler.desired.revision import state_revision


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
         *args], cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "nodes.yaml").write_text("kind: Node\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_git_repo_gives_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert state_revision(repo) == head
    (repo / "nodes.yaml").write_text("kind: Node\n# changed\n")
    git(repo, "commit", "-q", "-am", "second")
    assert state_revision(repo) == git(repo, "rev-parse", "HEAD") != head


def test_subdirectory_of_a_work_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "state").mkdir()
    (repo / "state" / "a.yaml").write_text("kind: A\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "state")
    assert state_revision(repo / "state") == git(repo, "rev-parse", "HEAD")


def test_through_a_symlink_swapped_like_git_sync(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD")
    # git-sync: a worktree per revision, and a symlink swapped atomically to the newest one
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt-1"), first)
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "wt-1")
    assert state_revision(link) == first

    (repo / "nodes.yaml").write_text("kind: Node\n# v2\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt-2"), second)
    tmp_link = tmp_path / "current.tmp"
    tmp_link.symlink_to(tmp_path / "wt-2")
    tmp_link.replace(link)
    assert state_revision(link) == second


def test_repo_without_commits_falls_back_to_hash(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.yaml").write_text("kind: A\n")
    assert state_revision(repo).startswith("sha256:")


def test_no_git_gives_a_content_hash(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "sub").mkdir(parents=True)
    (root / "a.yaml").write_text("kind: A\n")
    (root / "sub" / "b.torrent").write_bytes(b"d4:infod")
    first = state_revision(root)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert state_revision(root) == first  # stable

    (root / "a.yaml").write_text("kind: B\n")
    changed = state_revision(root)
    assert changed != first

    (root / "a.yaml").write_text("kind: A\n")
    assert state_revision(root) == first  # content, not time

    (root / "sub" / "b.torrent").rename(root / "sub" / "c.torrent")
    assert state_revision(root) != first  # names count


def test_content_hash_ignores_hidden_files_and_follows_the_root_symlink(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a.yaml").write_text("kind: A\n")
    first = state_revision(root)
    (root / ".cache").mkdir()
    (root / ".cache" / "x").write_text("noise")
    (root / ".swp").write_text("noise")
    assert state_revision(root) == first
    link = tmp_path / "link"
    link.symlink_to(root)
    assert state_revision(link) == first


def test_same_content_elsewhere_same_hash(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name / "d").mkdir(parents=True)
        (tmp_path / name / "d" / "x.yaml").write_text("kind: X\n")
    assert state_revision(tmp_path / "one") == state_revision(tmp_path / "two")
