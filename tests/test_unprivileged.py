"""`syncbit-reconcile --once` as an unprivileged user, the way syncbit-reconcile.service runs it
(User=syncbit with supplementary group syncbit-state, no capabilities, UMask=0027): it reads a
state repo owned by another user through its group only (root's here, syncbit-state's in
production; git's "dubious ownership" check must not stop it), converges one dataset from an
HTTP origin and one from a peer (a second node, a root daemon seeding it), leaves its data
readable by its group (the consumers) and nobody else, and writes nowhere but its stateDir and
allowed roots.

Two more layers of the unit, where this machine can apply them without systemd:
- PR_SET_MDWE (Linux >= 6.3): the kernel's MemoryDenyWriteExecute, so Python, libtorrent and
  git are shown to need no writable+executable memory;
- the unit's own seccomp filters (SystemCallFilter=, SystemCallErrorNumber=,
  MemoryDenyWriteExecute=, RestrictAddressFamilies= read from systemd/syncbit-reconcile.service
  and expanded with `systemd-analyze syscall-filter`), applied with libseccomp's Python binding
  (Debian: python3-seccomp) when installed.
The test prints which layers ran, and checks that each one denies what it should.

The tests run as root and drop to a uid/gid that no account uses, with setpriv(1):
`--reuid --regid --clear-groups`, no capabilities (bounding and inheritable sets empty),
no_new_privs, umask 0027. The child needs to read the interpreter, the venv and this checkout;
where an ancestor directory is closed to other users (e.g. a Python under /root, mode 0700),
the child runs in a private mount namespace in which that directory is replaced by a tmpfs
holding only bind mounts of the needed entries (same paths, nothing else of it visible).
Without root, setpriv, or (when needed) unshare, the tests skip and say why.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import json
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from harness import (Daemon, NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml,
                     pseudo_random, tree_digest, write_data)
from origin_server import OriginServer

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = {"model-00001.safetensors": pseudo_random(600_000, "u1"),
           "model-00002.safetensors": pseudo_random(250_000, "u2"), "config.json": b"{}\n"}
SHARED = {"tokenizer.json": pseudo_random(400_000, "u3"), "vocab.txt": b"a\nb\n" * 1000}
SMALL = {"small.bin": pseudo_random(20_000, "u4")}

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                       reason="needs root to drop to an unprivileged uid with setpriv"),
    pytest.mark.skipif(shutil.which("setpriv") is None,
                       reason="setpriv not found (util-linux: apt-get install util-linux)"),
]


def _free_ids(n: int) -> list[int]:
    """`n` ids used by no user and no group of this machine."""
    out = []
    for i in range(61000, 62000):  # bounded
        try:
            pwd.getpwuid(i)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(i)
            continue
        except KeyError:
            pass
        out.append(i)
        if len(out) == n:
            return out
    pytest.skip("no free uid/gid in 61000-61999")


def _closed(d: Path) -> bool:
    """A directory other users cannot traverse (x for others missing)."""
    try:
        return not os.stat(d).st_mode & stat.S_IXOTH
    except OSError:
        return False


def _blockers(paths: list[Path]) -> dict[Path, set[str]]:
    """Closed ancestor directories of `paths` -> the entries below them that the child needs."""
    out: dict[Path, set[str]] = {}
    for p in paths:
        p = Path(os.path.abspath(p))
        parts = p.parts
        for i in range(1, len(parts)):
            d = Path(*parts[:i])
            if _closed(d):
                out.setdefault(d, set()).add(parts[i])
    return out


def _shadow_script(blockers: dict[Path, set[str]], scratch: Path) -> str:
    """sh commands (run as root in a private mount namespace) that replace each closed
    directory by a 0755 tmpfs holding bind mounts of the needed entries, shallowest first."""
    # The scratch dirs traversable whatever the child's umask, which is restored for it.
    lines = ["set -e", 'child_umask="$(umask)"', "umask 022"]
    for n, (d, names) in enumerate(sorted(blockers.items(), key=lambda kv: len(kv[0].parts))):
        keep = scratch / f"keep{n}"
        lines.append(f"mkdir -p {shlex.quote(str(keep))}")
        entries = [(d / name, keep / name, "mkdir -p" if (d / name).is_dir() else "touch")
                   for name in sorted(names)]
        for src, tmp, make in entries:
            lines += [f"{make} {shlex.quote(str(tmp))}",
                      f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(tmp))}"]
        lines.append(f"mount -t tmpfs -o mode=0755 syncbit-test {shlex.quote(str(d))}")
        for src, tmp, make in entries:
            lines += [f"{make} {shlex.quote(str(src))}",
                      f"mount --bind {shlex.quote(str(tmp))} {shlex.quote(str(src))}"]
    lines += ['umask "$child_umask"', 'exec "$@"']
    return "\n".join(lines)


# Exec argv[1:] with PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN) (Linux >= 6.3): no mapping can be
# made writable+executable, nor gain exec, from here on, across execve too. The kernel's form
# of MemoryDenyWriteExecute= (systemd's is a seccomp filter with the same rule: no mmap with
# PROT_WRITE|PROT_EXEC, no mprotect adding PROT_EXEC). Exit 3 where the kernel lacks it.
_MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(3)
os.execvp(sys.argv[1], sys.argv[1:])
"""


# Exec argv[2:] under the seccomp rules systemd builds from a unit (libseccomp's Python binding,
# Debian package python3-seccomp): argv[1] is JSON {"allow": [syscalls], "errno": n,
# "families": [AF numbers], "mdwe": bool}. Two filters, like systemd: one allow list (anything
# else fails with errno), one for MemoryDenyWriteExecute= (no mmap with PROT_WRITE|PROT_EXEC,
# no mprotect/pkey_mprotect adding PROT_EXEC, no shmat with SHM_EXEC) and
# RestrictAddressFamilies= (socket() of another family fails with EAFNOSUPPORT).
_SECCOMP_EXEC = """
import errno, json, os, sys
import seccomp
spec = json.loads(sys.argv[1])
g = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
deny = seccomp.ERRNO(errno.EPERM)
if spec["mdwe"]:
    W, X = 0x2, 0x4
    g.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, W | X))
    g.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
    g.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
    g.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))
for family in range(64):
    if family not in spec["families"]:
        g.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
g.load()
f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(spec["errno"]))
for name in spec["allow"]:
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError, OSError):
        pass  # not a system call of this architecture
f.load()
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _expand(group: str, seen: set[str]) -> set[str]:
    """The system calls of a systemd group (@name), recursively; a plain name is itself."""
    if not group.startswith("@"):
        return {group}
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        tok = line.split("#")[0].strip()
        if tok and tok not in seen:
            seen.add(tok)
            names |= _expand(tok, seen)
    return names


def _unit_seccomp(unit: Path) -> dict[str, object] | None:
    """The seccomp spec of `unit`'s SystemCallFilter= lines (in order: the first sets an allow
    list, `~` removes, later lines add), RestrictAddressFamilies= and MemoryDenyWriteExecute=;
    None without systemd-analyze."""
    if shutil.which("systemd-analyze") is None:
        return None
    keys: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    allow: set[str] = set()
    for value in keys["SystemCallFilter"]:
        deny = value.startswith("~")
        names = set().union(*(_expand(n, set()) for n in value.lstrip("~").split()))
        allow = allow - names if deny else allow | names
    families = [int(getattr(socket, f)) for f in keys["RestrictAddressFamilies"][-1].split()]
    err = keys.get("SystemCallErrorNumber", ["EPERM"])[-1]
    return {"allow": sorted(allow), "errno": int(getattr(errno, err)), "families": families,
            "mdwe": keys.get("MemoryDenyWriteExecute", ["false"])[-1] == "true"}


def _seccomp_python() -> str | None:
    """A Python with libseccomp's binding (python3-seccomp), if this machine has one."""
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run(
                [py, "-c", "import seccomp"], capture_output=True, timeout=60).returncode == 0:
            return py
    return None


@dataclass
class Unprivileged:
    """Runs commands as uid:gid without capabilities, groups, or new privileges."""

    uid: int
    gid: int
    prefix: list[str]
    consumer: int  # another unused id: a training job's user
    state_gid: int  # the state repo's group (syncbit-state in production): u's supplementary one
    mdwe: bool = False  # run the reconciler under PR_SET_MDWE
    seccomp: list[str] | None = None  # the launcher applying syncbit-reconcile.service's filters

    def argv(self, *cmd: str, groups: tuple[int, ...] = (), uid: int | None = None,
             gid: int | None = None, seccomp: list[str] | None = None) -> list[str]:
        ids = [f"--reuid={self.uid if uid is None else uid}",
               f"--regid={self.gid if gid is None else gid}"]
        ids += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        filters = self.seccomp if seccomp is None else seccomp
        wrap = [*(filters or []), *([sys.executable, "-c", _MDWE_EXEC] if self.mdwe else [])]
        return [*self.prefix, "setpriv", *ids, "--no-new-privs", "--inh-caps=-all",
                "--bounding-set=-all", "--", *wrap, *cmd]

    def reconcile(self, *cmd: str, cwd: Path, env: dict[str, str], timeout: float = 150
                  ) -> subprocess.CompletedProcess[str]:
        """As the service: its user and group, plus the state repo's group (the unit's
        User=syncbit, a member of syncbit-state)."""
        return self.run(*cmd, cwd=cwd, env=env, timeout=timeout, groups=(self.state_gid,))

    def run(self, *cmd: str, cwd: Path, env: dict[str, str], timeout: float = 150,
            **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*cmd, **kw), cwd=cwd, env=env,  # type: ignore[arg-type]
                              capture_output=True, text=True, timeout=timeout, umask=0o027,
                              stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch directory other users can traverse (pytest's tmp_path is under a 0700
    directory), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="syncbit-unpriv-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        # A failed test may leave a mount namespace's scratch dirs: plain dirs on the host.
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def unprivileged(base: Path) -> Unprivileged:
    uid, consumer, state_gid = _free_ids(3)
    needed = [Path(sys.executable), Path(os.path.realpath(sys.executable)), Path(sys.prefix),
              Path(sys.base_prefix), ROOT, base,
              *(Path(p) for p in sys.path if p and os.path.isdir(p))]
    blockers = _blockers(needed)
    prefix: list[str] = []
    if blockers:
        if shutil.which("unshare") is None:
            pytest.skip(f"{sorted(map(str, blockers))} closed to other users and no unshare")
        scratch = base / ".ns"
        scratch.mkdir()
        prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                  _shadow_script(blockers, scratch), "sh"]
    u = Unprivileged(uid, uid, prefix, consumer, state_gid)
    imports = "import libtorrent, yaml, aiohttp, reconciler.engine.executor"
    probe = u.run(sys.executable, "-c", imports, cwd=base, env=_env(base))
    if probe.returncode != 0:
        pytest.skip(f"uid {uid} cannot run this Python/checkout ({sys.executable}, {ROOT}):"
                    f" {probe.stderr.strip()[-500:]}")
    u.mdwe = True
    probe = u.run(sys.executable, "-c", imports, cwd=base, env=_env(base))
    if probe.returncode == 3:
        u.mdwe = False  # kernel < 6.3: no PR_SET_MDWE; the rest still runs
        print("PR_SET_MDWE unsupported by this kernel: running without it")
    else:
        assert probe.returncode == 0, f"imports fail under PR_SET_MDWE: {probe.stderr}"
    # systemd's own seccomp filters of the unit, where libseccomp's binding is installed.
    spec = _unit_seccomp(ROOT / "systemd" / "syncbit-reconcile.service")
    py = _seccomp_python()
    if spec is None or py is None:
        print("no systemd-analyze or python3-seccomp: running without the unit's seccomp filters")
    else:
        u.seccomp = [py, "-c", _SECCOMP_EXEC, json.dumps(spec)]
        probe = u.run(sys.executable, "-c", imports, cwd=base, env=_env(base))
        assert probe.returncode == 0, f"imports fail under the unit's seccomp filters: {probe}"
    if u.mdwe or u.seccomp:
        # The layers bite: no W+X memory, no @resources call, no packet socket.
        r = u.run(sys.executable, "-c", _SANDBOX_PROBE, cwd=base, env=_env(base))
        expected = {"wx": "denied", "affinity": "denied" if u.seccomp else "ok",
                    "packet": "denied" if u.seccomp else r.stdout.split("packet=")[-1].strip()}
        got = dict(kv.split("=") for kv in r.stdout.split())
        assert got == expected, (got, r.stderr)
    print(f"sandbox layers: PR_SET_MDWE={u.mdwe}, the unit's seccomp filters={bool(u.seccomp)}")
    return u


_SANDBOX_PROBE = """
import mmap, os, socket
def attempt(name, f):
    try:
        f()
        print(name + "=ok")
    except OSError:
        print(name + "=denied")
attempt("wx", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
attempt("affinity", lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
"""


def _env(home: Path) -> dict[str, str]:
    """What the unit gives the service: a HOME in its state directory, no root environment."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1", "SYNCBIT_LOG_LEVEL": "info"}


def _owned_by(top: Path, uid: int) -> list[Path]:
    out = []
    for dirpath, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            p = Path(dirpath) / name
            if os.lstat(p).st_uid == uid:
                out.append(p)
    return out


def _share_with_group(repo: Path, gid: int) -> None:
    """The state repo as syncbit-state-sync leaves it under UMask=0027: readable by its group
    only (here root's repo with group `gid`; in production syncbit-state's)."""
    for p in [repo, *repo.rglob("*")]:
        if not p.is_symlink():
            os.chown(p, -1, gid)
            mode = os.stat(p).st_mode
            os.chmod(p, (mode & 0o700) | ((mode & 0o500) >> 3))  # g=u-w, o=


def _snapshot(d: Path) -> dict[str, tuple[int, int, int, int]]:
    return {str(p.relative_to(d)): (s.st_mode, s.st_uid, s.st_size, s.st_mtime_ns)
            for p in [d, *d.rglob("*")] for s in [os.lstat(p)]}


@pytest.fixture
def origins(base: Path) -> Iterator[tuple[OriginServer, OriginServer]]:
    a = OriginServer(write_data(base / "origin-a", {**WEIGHTS, **SMALL})).start()
    b = OriginServer(write_data(base / "origin-b", SHARED)).start()
    try:
        yield a, b
    finally:
        for server in (a, b):
            if not server._loop.is_closed():  # the test may have stopped it already
                server.stop()


def test_unprivileged_once_converges_from_origin_and_peer_and_writes_nowhere_else(
        base: Path, unprivileged: Unprivileged, origins: tuple[OriginServer, OriginServer]
) -> None:
    u = unprivileged
    origin_a, origin_b = origins

    # The state repo belongs to another user (root here, syncbit-state on a node), readable
    # through its group only.
    repo = StateRepo.create(base / "state")
    repo.write("nodes.yaml", nodes_yaml(["seed", "worker"], first_ip=151))
    repo.write("datasets.yaml",
               dataset_yaml("weights", http_source(origin_a.url, WEIGHTS),
                            placement={"nodes": ("worker",)}, path="models/weights")
               + "---\n"
               + dataset_yaml("shared", http_source(origin_b.url, SHARED), path="shared"))
    assert repo.lock().returncode == 0
    v1 = repo.commit("two datasets")
    _share_with_group(repo.root, u.state_gid)
    closed = u.run("cat", str(repo.root / "nodes.yaml"), cwd=base, env=_env(base))
    assert closed.returncode != 0, "the state repo must be readable through its group only"

    # The seed: a root daemon that fetches `shared` from origin B and keeps seeding it.
    seed = NodeHome("seed", base / "seed", repo.root).write_config()
    daemon = Daemon(seed)
    try:
        _scenario(base, u, repo, v1, daemon, origin_a, origin_b)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.logs()[-3000:]


def _scenario(base: Path, u: Unprivileged, repo: StateRepo, v1: str, daemon: Daemon,
              origin_a: OriginServer, origin_b: OriginServer) -> None:
    daemon.wait_phase("shared", "Ready", v1, timeout=90)
    origin_b.stop()  # from now on `shared` exists only on the seed

    # The worker, as an operator sets it up: config root's and readable, stateDir and the
    # allowed root `data` owned by the service user, mode 0750 (StateDirectoryMode=0750);
    # a second allowed root `locked` that stays root's (a mistake the sandbox contains),
    # with a file of root's in it.
    locked = base / "locked"
    locked.mkdir(mode=0o755)
    (locked / "keep.txt").write_text("root's\n")
    outside = base / "outside"
    outside.mkdir()
    outside.chmod(0o1777)  # writable by anyone, like /tmp: only the reconciler refuses
    worker = NodeHome("worker", base / "worker", repo.root,
                      {"allowedRoots": [str(base / "worker" / "data"), str(locked)]}
                      ).write_config()
    for d in (worker.state_dir, worker.data):
        d.mkdir(mode=0o750)
        os.chown(d, u.uid, u.gid)
    locked_before = _snapshot(locked)
    env = _env(worker.state_dir)
    once = [sys.executable, "-m", "reconciler", "--once", "--config", str(worker.config),
            "--timeout", "90"]

    # git itself refuses a repository of another owner ("dubious ownership"); the reconciler
    # passes safe.directory for its read-only `rev-parse` (reconciler/desired/revision.py).
    plain = u.reconcile("git", "-C", str(repo.root), "rev-parse", "HEAD", cwd=worker.state_dir,
                        env=env)
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr, plain

    # 1. Converge: `weights` from origin A, `shared` from the seed (its origin is gone).
    r = u.reconcile(*once, cwd=worker.state_dir, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    status = worker.status()
    # The revision is the git commit: git read the root-owned repo (safe.directory).
    assert status["lastAppliedRevision"] == v1
    ds = status["datasets"]
    assert tree_digest(worker.data / "models" / "weights") == {
        name: hashlib.sha256(data).hexdigest() for name, data in WEIGHTS.items()}
    assert tree_digest(worker.data / "shared") == tree_digest(base / "origin-b")
    w_size, s_size = sum(map(len, WEIGHTS.values())), sum(map(len, SHARED.values()))
    assert (ds["weights"]["phase"], ds["weights"]["bytesFromOrigin"]) == ("Ready", w_size)
    # All of `shared` from the peer (payload plus piece padding), nothing from an origin.
    assert (ds["shared"]["phase"], ds["shared"]["bytesFromOrigin"]) == ("Ready", 0)
    assert ds["shared"]["bytesFromPeers"] >= s_size

    # Everything it wrote is its own, under its stateDir and data, and (UMask=0027) its
    # data files are not world-readable: consumers read through the group.
    mine = _owned_by(base, u.uid)
    assert mine and all(p.is_relative_to(worker.state_dir) or p.is_relative_to(worker.data)
                        for p in mine), [str(p) for p in mine
                                         if not p.is_relative_to(worker.base)]
    data_file = (worker.data / "models" / "weights" / "config.json").resolve()
    assert data_file.is_relative_to(worker.state_dir / "store")
    st = os.stat(data_file)
    assert (st.st_uid, st.st_gid) == (u.uid, u.gid)
    assert st.st_mode & 0o040 and not st.st_mode & 0o007, oct(st.st_mode)  # 0440 or 0640
    link = str(worker.data / "models" / "weights" / "config.json")
    reader = u.run("cat", link, cwd=base, env=env, uid=u.consumer, gid=u.consumer,
                   groups=(u.gid,))
    assert (reader.returncode, reader.stdout) == (0, "{}\n"), reader.stderr
    stranger = u.run("cat", link, cwd=base, env=env, uid=u.consumer, gid=u.consumer)
    assert stranger.returncode != 0 and "Permission denied" in stranger.stderr

    # 2. Datasets it must not place: a path outside the allowed roots (in a directory
    # anyone may write) and one in the root-owned allowed root.
    repo.write("bad.yaml",
               dataset_yaml("escape", http_source(origin_a.url, SMALL),
                             placement={"nodes": ("worker",)}, path=str(outside / "escape"))
               + "---\n"
               + dataset_yaml("intruder", http_source(origin_a.url, SMALL),
                              placement={"nodes": ("worker",)}, path=str(locked / "model")))
    assert repo.lock("escape", "intruder").returncode == 0  # origin B is gone: not `shared`
    v2 = repo.commit("two datasets it cannot place")
    _share_with_group(repo.root, u.state_gid)
    r = u.reconcile(*once, cwd=worker.state_dir, env=env)
    assert r.returncode != 0, r.stdout + r.stderr
    status = worker.status()
    assert status["lastAppliedRevision"] == v2
    ds = status["datasets"]
    print("escape:", ds["escape"]["error"], "\nintruder:", ds["intruder"]["error"])
    assert ds["escape"]["phase"] == "Failed"
    assert "is not under the node's allowedRoots" in ds["escape"]["error"], ds["escape"]
    assert ds["intruder"]["phase"] == "Failed"
    assert "Permission denied" in ds["intruder"]["error"], ds["intruder"]
    assert ds["weights"]["phase"] == ds["shared"]["phase"] == "Ready"
    assert list(outside.iterdir()) == []
    assert _snapshot(locked) == locked_before
    assert (locked / "keep.txt").read_text() == "root's\n"
    mine = _owned_by(base, u.uid)
    assert all(p.is_relative_to(worker.state_dir) or p.is_relative_to(worker.data)
               for p in mine), [str(p) for p in mine if not p.is_relative_to(worker.base)]
    # The state repo is exactly what was committed.
    git = subprocess.run(["git", "-C", str(repo.root), "status", "--porcelain",
                          "--ignored"], capture_output=True, text=True, check=True)
    assert git.stdout == ""


def test_state_sync_as_its_own_user_publishes_a_checkout_only_the_reconciler_reads(
        base: Path, unprivileged: Unprivileged) -> None:
    """syncbit-state-sync as `syncbit-state` (here the id state_gid, umask 0027, the state-sync
    unit's own seccomp filters where available) mirrors a remote owned by another user and
    publishes `current` in its state directory; the reconciler's user reads it through the
    group (revision = the commit, despite the foreign owner), a consumer cannot."""
    u = unprivileged
    state_user = u.state_gid
    remote = StateRepo.create(base / "remote")
    remote.write("nodes.yaml", nodes_yaml(["worker"], first_ip=161))
    head = remote.commit("inventory")
    root = base / "var-lib-syncbit-state"  # StateDirectory=syncbit-state, 0750
    root.mkdir(mode=0o750)
    os.chown(root, state_user, state_user)
    # The remote is a local path of another owner: trusted in syncbit-state's home (README).
    (root / ".gitconfig").write_text(f"[safe]\n\tdirectory = {remote.root}/.git\n")
    env = {**_env(root), "SYNCBIT_STATE_REPO": str(remote.root),
           "SYNCBIT_STATE_ROOT": str(root)}
    spec = _unit_seccomp(ROOT / "systemd" / "syncbit-state-sync.service")
    py = _seccomp_python()
    filters = [py, "-c", _SECCOMP_EXEC, json.dumps(spec)] if spec and py and u.seccomp else []

    def sync() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            u.argv("bash", str(ROOT / "systemd" / "syncbit-state-sync"), uid=state_user,
                   gid=state_user, seccomp=filters),
            cwd=root, env=env, capture_output=True, text=True, timeout=150, umask=0o027,
            stdin=subprocess.DEVNULL, check=False)

    r = sync()
    assert r.returncode == 0, r.stdout + r.stderr
    link = root / "current"
    checkout = Path(os.readlink(link))
    assert link.is_symlink() and checkout.parent == root
    st = os.stat(checkout / "nodes.yaml")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (state_user, state_user, 0o640)
    head2 = remote.commit("again")
    r = sync()
    assert r.returncode == 0 and "updated" in r.stdout, r.stdout + r.stderr

    read = ("import sys; from pathlib import Path; "
            "from reconciler.desired.revision import state_revision; "
            "print(state_revision(Path(sys.argv[1])), Path(sys.argv[1], 'nodes.yaml').exists())")
    got = u.reconcile(sys.executable, "-c", read, str(link), cwd=base, env=_env(base))
    assert got.returncode == 0 and got.stdout.split() == [head2, "True"], got
    assert head2 != head
    consumer = u.run("cat", str(link / "nodes.yaml"), cwd=base, env=_env(base),
                     uid=u.consumer, gid=u.consumer, groups=(u.gid,))
    assert consumer.returncode != 0 and "Permission denied" in consumer.stderr
    # Everything it wrote is in its state directory.
    assert all(p.is_relative_to(root) for p in _owned_by(base, state_user))
