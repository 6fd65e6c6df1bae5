"""systemd/: the units, the state-sync script and the example node config.

The script is a user-facing tool, so it runs for real: bash, git, a local git repository as the
remote, every path under tmp_path. The units are checked with `systemd-analyze verify` where
that binary exists (Debian package `systemd`; it needs no running systemd) and statically
everywhere.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.config import load_config

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
SCRIPT = SYSTEMD / "syncbit-state-sync"
UNITS = ("syncbit-reconcile.service", "syncbit-state-sync.service", "syncbit-state-sync.timer")

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
needs_flock = pytest.mark.skipif(shutil.which("flock") is None,
                                 reason="flock (util-linux) is not installed")


# --- the state-sync script -------------------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(k, None)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


class Remote:
    """A real git repository standing in for the state repo's remote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        _git(path, "init", "-q", "-b", "main")
        self.n = 0

    def commit(self) -> str:
        self.n += 1
        (self.path / f"dataset-{self.n}.yaml").write_text(f"# commit {self.n}\n")
        _git(self.path, "add", "-A")
        _git(self.path, "commit", "-q", "-m", f"commit {self.n}")
        return _git(self.path, "rev-parse", "HEAD")


class StateSync:
    """Runs systemd/syncbit-state-sync with its SYNCBIT_STATE_* variables under tmp_path."""

    def __init__(self, tmp: Path, repo: str) -> None:
        self.link = tmp / "srv" / "syncbit-state"
        self.root = tmp / "var-lib-syncbit-state"
        self.repo = repo

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCBIT_", "GIT_"))}
        full.update(SYNCBIT_STATE_REPO=self.repo, SYNCBIT_STATE_LINK=str(self.link),
                    SYNCBIT_STATE_ROOT=str(self.root), SYNCBIT_STATE_LOCK_TIMEOUT="60")
        full.update(env)
        return subprocess.run(["bash", str(SCRIPT)], check=False, env=full,
                              capture_output=True, text=True, timeout=120)

    def ok(self) -> subprocess.CompletedProcess[str]:
        r = self.run()
        assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        return r

    def target(self) -> Path:
        assert self.link.is_symlink(), f"{self.link} must be a symlink"
        return Path(os.readlink(self.link))

    def checkouts(self) -> set[str]:
        return {p.name for p in self.root.glob("rev-*")}


def _head(checkout: Path) -> str:
    return _git(checkout, "-c", "safe.directory=*", "rev-parse", "HEAD")


@needs_git
@needs_flock
def test_state_sync_publishes_commits_through_an_atomic_symlink(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "remote")
    c1 = remote.commit()
    sync = StateSync(tmp_path, str(remote.path))

    # First run: the link appears, pointing at a checkout of HEAD.
    sync.ok()
    first = sync.target()
    assert first.is_dir() and first.name == f"rev-{c1}"
    assert _head(sync.link) == c1
    assert (sync.link / "dataset-1.yaml").read_text() == "# commit 1\n"
    assert sync.checkouts() == {f"rev-{c1}"}

    # No new commit: nothing changes, not even the link itself.
    before = os.lstat(sync.link)
    r = sync.ok()
    assert "up to date" in r.stdout
    assert sync.target() == first
    after = os.lstat(sync.link)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sync.checkouts() == {f"rev-{c1}"}

    # A new commit: the link moves to it, the previous checkout stays (a reader may be in it).
    c2 = remote.commit()
    sync.ok()
    assert sync.target().name == f"rev-{c2}"
    assert _head(sync.link) == c2
    assert (sync.link / "dataset-2.yaml").exists()
    assert sync.checkouts() == {f"rev-{c1}", f"rev-{c2}"}
    assert _head(first) == c1 and not (first / "dataset-2.yaml").exists()

    # A third commit: new + previous are kept, the oldest is removed (worktree pruned too).
    c3 = remote.commit()
    sync.ok()
    assert sync.target().name == f"rev-{c3}"
    assert sync.link.is_symlink() and not first.exists()
    assert sync.checkouts() == {f"rev-{c2}", f"rev-{c3}"}
    worktrees = _git(sync.root / "mirror.git", "worktree", "list", "--porcelain")
    assert c1 not in worktrees and c2 in worktrees and c3 in worktrees

    # The checkout is a git work tree: the reconciler's revision is the commit.
    from reconciler.desired.revision import state_revision
    assert state_revision(sync.link) == c3
    # No temporary link left beside the real one.
    assert sorted(p.name for p in sync.link.parent.iterdir()) == ["syncbit-state"]


@needs_git
@needs_flock
def test_state_sync_bad_repo_url_fails_and_leaves_the_link(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "remote")
    c1 = remote.commit()
    sync = StateSync(tmp_path, str(remote.path))

    # Before any clone: non-zero, named, nothing published.
    missing = tmp_path / "no-such-repo"
    r = sync.run(SYNCBIT_STATE_REPO=str(missing))
    assert r.returncode != 0
    assert str(missing) in r.stderr and "error" in r.stderr
    assert not sync.link.exists() and not sync.link.is_symlink()
    assert not (sync.root / "mirror.git").exists()

    sync.ok()
    target = sync.target()

    # With a mirror: a bad URL fails the fetch; the link keeps pointing where it did.
    remote.commit()
    r = sync.run(SYNCBIT_STATE_REPO=str(missing))
    assert r.returncode != 0
    assert f"cannot fetch state repo {missing}" in r.stderr
    assert sync.target() == target and _head(sync.link) == c1

    # Credentials in a URL never reach the output.
    r = sync.run(SYNCBIT_STATE_REPO="https://user:s3cret@127.0.0.1:9/state.git")
    assert r.returncode != 0
    assert "s3cret" not in r.stderr + r.stdout and "127.0.0.1:9/state.git" in r.stderr
    assert sync.target() == target

    # A branch that does not exist is named too.
    r = sync.run(SYNCBIT_STATE_BRANCH="no-such-branch")
    assert r.returncode != 0 and "no-such-branch" in r.stderr
    assert sync.target() == target

    # Back to the good URL: it catches up.
    sync.ok()
    assert _head(sync.link) == _git(remote.path, "rev-parse", "HEAD")


@needs_git
@needs_flock
def test_state_sync_refuses_to_replace_a_real_directory(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "remote")
    remote.commit()
    sync = StateSync(tmp_path, str(remote.path))
    sync.link.mkdir(parents=True)
    (sync.link / "keep.yaml").write_text("mine\n")
    r = sync.run()
    assert r.returncode != 0 and "not a symlink" in r.stderr
    assert (sync.link / "keep.yaml").read_text() == "mine\n"


@needs_git
@needs_flock
def test_state_sync_runs_never_overlap(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "remote")
    remote.commit()
    sync = StateSync(tmp_path, str(remote.path))
    sync.root.mkdir()
    # Another run holds the lock (flock(2), as flock(1) takes it): this one waits, then gives
    # up without touching anything.
    with open(sync.root / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = sync.run(SYNCBIT_STATE_LOCK_TIMEOUT="1")
        assert r.returncode != 0 and "holds" in r.stderr
        assert not sync.link.is_symlink() and not (sync.root / "mirror.git").exists()
    sync.ok()
    assert sync.link.is_symlink()


def test_state_sync_without_repo_is_a_usage_error(tmp_path: Path) -> None:
    r = StateSync(tmp_path, "").run()
    assert r.returncode == 2 and "SYNCBIT_STATE_REPO" in r.stderr


# --- the units -------------------------------------------------------------------------------

def _parse_unit(unit: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} of a unit file (systemd syntax: `#`/`;` comments,
    `\\` continuation lines, repeated keys accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in (SYSTEMD / unit).read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{unit}: bad line {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _directives(unit: str) -> dict[str, dict[str, str]]:
    """{section: {key: last value}}: what systemd uses for single-valued settings."""
    return {s: {k: v[-1] for k, v in keys.items()} for s, keys in _parse_unit(unit).items()}


def test_reconcile_unit_directives() -> None:
    u = _directives("syncbit-reconcile.service")
    svc = u["Service"]
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
        "RestartSec": "5s", "KillSignal": "SIGTERM", "TimeoutStopSec": "60",
        "StateDirectory": "syncbit", "ProtectSystem": "strict", "ProtectHome": "true",
        "PrivateTmp": "true", "NoNewPrivileges": "true", "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true", "ProtectControlGroups": "true",
        "RestrictSUIDSGID": "true", "LockPersonality": "true", "RestrictRealtime": "true",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "LimitNOFILE": "65536", "EnvironmentFile": "-/etc/syncbit/env",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert svc["ExecStart"].split()[0] == "/usr/local/bin/syncbit-reconcile"
    assert svc["ExecStart"].split()[1:] == ["--config", "/etc/syncbit/config.yaml"]
    assert set(svc["ReadWritePaths"].split()) >= {"/var/lib/syncbit", "/data"}
    assert set(svc["RestrictAddressFamilies"].split()) == {
        "AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    environment = _parse_unit("syncbit-reconcile.service")["Service"]["Environment"]
    assert "PYTHONUNBUFFERED=1" in environment
    # An unprivileged user without capabilities; files 0640/0750 (consumers read via the group).
    assert (svc["User"], svc["Group"], svc["UMask"]) == ("syncbit", "syncbit", "0027")
    assert svc["StateDirectoryMode"] == "0750"
    assert svc["AmbientCapabilities"] == ""
    # The state repo is read, never written.
    assert svc["ReadOnlyPaths"].split() == ["-/var/lib/syncbit-state"]
    # The sandbox directives the issue asks for (tests below rate the whole unit).
    sandbox = {
        "PrivateDevices": "true", "ProtectClock": "true", "ProtectKernelLogs": "true",
        "ProtectHostname": "true", "ProtectProc": "invisible", "ProcSubset": "pid",
        "RestrictNamespaces": "true", "MemoryDenyWriteExecute": "true", "PrivateMounts": "true",
        "SystemCallErrorNumber": "EPERM"}
    assert {k: svc.get(k) for k in sandbox} == sandbox
    filters = _parse_unit("syncbit-reconcile.service")["Service"]["SystemCallFilter"]
    assert filters == ["@system-service", "~@privileged @resources", "@chown"]
    assert set(u["Unit"]["After"].split()) >= {"network-online.target",
                                               "syncbit-state-sync.service"}
    assert u["Unit"]["Wants"] == "network-online.target"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_reconcile_unit_example_config_paths_are_writable() -> None:
    """Every path the example config writes to is inside the unit's ReadWritePaths."""
    cfg = load_config(SYSTEMD / "config.example.yaml")
    writable = [Path(p.lstrip("-")) for p in
                _directives("syncbit-reconcile.service")["Service"]["ReadWritePaths"].split()]

    def inside(p: Path) -> bool:
        return any(p == w or w in p.parents for w in writable)

    for p in (cfg.state_dir, cfg.status_file, cfg.metrics_file, *map(Path, cfg.allowed_roots)):
        assert inside(p), f"{p} is not under ReadWritePaths {writable}"


def test_state_sync_units_directives() -> None:
    svc = _directives("syncbit-state-sync.service")["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"] == "/usr/local/libexec/syncbit/syncbit-state-sync"
    assert svc["EnvironmentFile"] == "-/etc/syncbit/state-sync.env"
    assert svc["StateDirectory"] == "syncbit-state"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "true"
    # Its own user; the link (default /var/lib/syncbit-state/current) is renamed inside the
    # state directory, the only writable path.
    assert (svc["User"], svc["Group"], svc["UMask"]) == ("syncbit-state", "syncbit-state", "0027")
    assert "ReadWritePaths" not in svc
    for key in ("PrivateDevices", "ProtectClock", "ProtectKernelLogs", "ProtectHostname",
                "RestrictNamespaces", "MemoryDenyWriteExecute", "PrivateUsers"):
        assert svc[key] == "true", key
    assert (svc["ProtectProc"], svc["ProcSubset"]) == ("invisible", "pid")
    assert svc["CapabilityBoundingSet"] == ""

    timer = _directives("syncbit-state-sync.timer")
    assert {k: timer["Timer"].get(k) for k in
            ("OnBootSec", "OnUnitActiveSec", "RandomizedDelaySec", "Persistent", "Unit")} == {
        "OnBootSec": "30s", "OnUnitActiveSec": "1min", "RandomizedDelaySec": "15s",
        "Persistent": "true", "Unit": "syncbit-state-sync.service"}
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_state_sync_script_is_executable_bash() -> None:
    assert os.access(SCRIPT, os.X_OK), f"chmod +x {SCRIPT}"
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def _runnable_copies(tmp: Path) -> list[Path]:
    """Copies of the units whose ExecStart binaries exist on this machine."""
    venv_bin = Path(sys.executable).parent / "syncbit-reconcile"
    replacements = {
        "/usr/local/bin/syncbit-reconcile": str(venv_bin) if venv_bin.exists() else "/bin/true",
        "/usr/local/libexec/syncbit/syncbit-state-sync": str(SCRIPT),
    }
    out = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        for old, new in replacements.items():
            text = re.sub(rf"^(Exec\w+=){re.escape(old)}(?=\s|$)",
                          lambda m, new=new: m.group(1) + new, text, flags=re.MULTILINE)
        (tmp / name).write_text(text)
        out.append(tmp / name)
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not found (Debian/Ubuntu: apt-get install systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = _runnable_copies(tmp_path)
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C"}
    r = subprocess.run(["systemd-analyze", "verify", *map(str, units)], check=False,
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 0 and lines == [], "\n".join(lines)



needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not found (Debian/Ubuntu: apt-get install systemd)")

# The exposure the services must stay under (0 = fully sandboxed, 10 = unprotected root).
MAX_EXPOSURE = 2.0


@needs_analyze
@pytest.mark.parametrize("unit", ["syncbit-reconcile.service", "syncbit-state-sync.service"])
def test_unit_exposure_is_at_most_2(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the shipped unit (no running systemd
    needed): unprivileged user, syscall filter, namespaces, ... bring it to <= 2.0."""
    shutil.copy(SYSTEMD / unit, tmp_path / unit)
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8",
           "SYSTEMD_COLORS": "0"}
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                       check=False)
    out = r.stdout + r.stderr
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", out)
    assert m, f"exit {r.returncode}, no exposure level in:\n{out}"
    exposure = float(m.group(1))
    print(m.group(0))
    assert exposure <= MAX_EXPOSURE, out
    # The big items are all closed: not root, filtered system calls, no capabilities.
    for item in ("User=/DynamicUser=", "SystemCallFilter=~@mount", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
                 "MemoryDenyWriteExecute=", "RestrictNamespaces=~user", "ProtectProc="):
        lines = [ln for ln in out.splitlines() if item in ln]
        assert lines and all("✗" not in ln for ln in lines), f"{item}:\n" + "\n".join(lines)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers not found (Debian/Ubuntu: apt-get install systemd)")
def test_sysusers_creates_the_two_users(tmp_path: Path) -> None:
    """sysusers.d/syncbit.conf, applied to an empty root: two system users without a login
    shell, syncbit a member of group syncbit-state (to read the state repo's checkout)."""
    (tmp_path / "etc").mkdir()
    conf = (SYSTEMD / "sysusers.d" / "syncbit.conf").read_text()
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", "-"], input=conf, text=True,
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    passwd = {ln.split(":")[0]: ln.split(":") for ln in
              (tmp_path / "etc" / "passwd").read_text().splitlines()}
    groups = {ln.split(":")[0]: ln.split(":") for ln in
              (tmp_path / "etc" / "group").read_text().splitlines()}
    for user, home in (("syncbit", "/var/lib/syncbit"), ("syncbit-state", "/var/lib/syncbit-state")):
        entry = passwd[user]
        assert 0 < int(entry[2]) < 1000, entry  # a system uid, not root
        assert entry[3] == groups[user][2]  # its own primary group
        assert entry[5] == home and entry[6].endswith("nologin")
    assert groups["syncbit-state"][3].split(",") == ["syncbit"]


def test_units_agree_on_users_and_paths() -> None:
    """The reconciler reads what the state sync writes, and its users are the sysusers.d ones."""
    rec = _directives("syncbit-reconcile.service")["Service"]
    sync = _directives("syncbit-state-sync.service")["Service"]
    conf = (SYSTEMD / "sysusers.d" / "syncbit.conf").read_text().splitlines()
    users = {ln.split()[1] for ln in conf if ln.startswith("u ")}
    assert {rec["User"], sync["User"]} == users
    assert f"m     {rec['User']}        {sync['Group']}" in conf
    cfg = load_config(SYSTEMD / "config.example.yaml")
    state_root = Path("/var/lib") / sync["StateDirectory"]
    assert cfg.desired_state == state_root / "current"  # the script's default link
    assert rec["ReadOnlyPaths"].lstrip("-") == str(state_root)
    script = SCRIPT.read_text()
    assert 'ROOT=${SYNCBIT_STATE_ROOT:-/var/lib/syncbit-state}' in script
    assert 'LINK=${SYNCBIT_STATE_LINK:-${ROOT%/}/current}' in script


@needs_git
@needs_flock
def test_state_sync_default_link_is_inside_its_root(tmp_path: Path) -> None:
    """Without SYNCBIT_STATE_LINK the link is `current` in SYNCBIT_STATE_ROOT: the one
    directory the service may write."""
    remote = Remote(tmp_path / "remote")
    c1 = remote.commit()
    sync = StateSync(tmp_path, str(remote.path))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCBIT_", "GIT_"))}
    full.update(SYNCBIT_STATE_REPO=str(remote.path), SYNCBIT_STATE_ROOT=str(sync.root))
    r = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    link = sync.root / "current"
    assert link.is_symlink() and _head(link) == c1
    assert Path(os.readlink(link)).parent == sync.root.resolve()


# --- the example node config ------------------------------------------------------------------

def test_example_config_loads() -> None:
    cfg = load_config(SYSTEMD / "config.example.yaml")
    assert cfg.node == "gpu-01"
    assert cfg.desired_state == Path("/var/lib/syncbit-state/current")
    assert cfg.state_dir == Path("/var/lib/syncbit")
    assert cfg.allowed_roots == ("/data",)
