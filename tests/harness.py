"""Test harness: real git state repos, node configs, and the real CLI in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


def until(cond: Callable[[], object], timeout: float = 60, what: str = "condition") -> object:
    """Poll `cond` every 0.2 s until it returns something truthy (read errors count as not
    yet); fail the test after `timeout` seconds. A bound on waiting, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 150) -> list[int]:
    """Exit codes of `procs`, all within one shared deadline; a process still running then is
    killed and reported as -9."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            codes.append(-9)
    return codes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (following a top-level symlink), by relative path."""
    root = root.resolve()
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_data(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)  # also with no files: a test may write them later
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def pseudo_random(n: int, seed: str) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


@dataclass
class StateRepo:
    """A git repository used as the desired-state directory."""

    root: Path

    @classmethod
    def create(cls, root: Path) -> "StateRepo":
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run([*GIT, "init", "-q", "-b", "main", str(root)], check=True)
        return cls(root)

    @classmethod
    def locked(cls, root: Path, nodes: list[str], docs: Mapping[str, str],
               message: str = "change") -> "StateRepo":
        """A new repo with `nodes.yaml` for `nodes` and the files `docs`, locked and committed
        (the lock must succeed)."""
        repo = cls.create(root)
        repo.write("nodes.yaml", nodes_yaml(nodes))
        for rel, text in docs.items():
            repo.write(rel, text)
        res = repo.lock()
        assert res.returncode == 0, res.stderr
        repo.commit(message)
        return repo

    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip())

    def lock(self, *datasets: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli("lock", str(self.root), *datasets, env=env)

    def commit(self, message: str = "change") -> str:
        subprocess.run([*GIT, "-C", str(self.root), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(self.root), "commit", "-q", "--allow-empty", "-m", message],
                       check=True)
        return self.head()

    def head(self) -> str:
        return subprocess.run([*GIT, "-C", str(self.root), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()


def node_yaml(name: str, host: str, peer_port: int, api_port: int,
              labels: Mapping[str, str] | None = None) -> str:
    """One Node document: its peer and API addresses on `host`."""
    return (f"apiVersion: syncbit/v1\nkind: Node\nmetadata:\n  name: {name}\n"
            f"  labels: {json.dumps(dict(labels or {}))}\n"
            f"spec:\n  peer: \"{host}:{peer_port}\"\n  api: \"{host}:{api_port}\"\n")


def nodes_yaml(names: list[str], first_ip: int = 11, **labels: dict[str, str]) -> str:
    """The inventory: node i on 127.0.0.<first_ip + i>, with free peer and API ports."""
    docs = []
    for i, n in enumerate(names):
        ip = f"127.0.0.{first_ip + i}"
        docs.append(node_yaml(n, ip, free_port(ip), free_port(ip), labels.get(n.replace("-", "_"))))
    return "---\n".join(docs)



_PLAIN = re.compile(r"[A-Za-z/][\w./:@-]*")  # a YAML plain scalar that reads back as this string
_NOT_STR = re.compile(r"(?i)(true|false|yes|no|on|off|null|~)")


def _scalar(v: object, flow: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    plain = _PLAIN.fullmatch(s) and not _NOT_STR.fullmatch(s) and not (flow and ":" in s)
    return s if plain else json.dumps(s)


def _block(value: Mapping[str, object], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for k, v in value.items():
        if isinstance(v, Mapping):
            out += [f"{pad}{k}:", *_block(v, indent + 2)]
        elif isinstance(v, tuple):
            out.append(f"{pad}{k}: [{', '.join(_scalar(x, flow=True) for x in v)}]")
        elif isinstance(v, list):
            out.append(f"{pad}{k}:")
            for item in v:
                if isinstance(item, Mapping):
                    first, *rest = _block(item, indent + 4)
                    out += [f"{pad}  - {first.lstrip()}", *rest]
                else:
                    out.append(f"{pad}  - {_scalar(item)}")
        else:
            out.append(f"{pad}{k}: {_scalar(v)}")
    return out


def dataset_yaml(name: str, source: Mapping[str, object], *, version: str = "v1",
                 placement: Mapping[str, object] | str = {"all": True}, path: str | None = None,
                 mirrors: Sequence[Mapping[str, object]] = (), extra: str = "") -> str:
    """One Dataset document, in the block style a person writes, so that tests can edit it
    with str.replace and errors point at stable lines. Lists are written as blocks (`- x`),
    tuples in flow style (`[x, y]`); `placement` may be a flow mapping as text
    ("{all: true, replicas: 2}"); `extra` is appended verbatim (lines under `spec:`)."""
    spec: dict[str, object] = {"version": version, "source": source}
    if mirrors:
        spec["mirrors"] = list(mirrors)
    if not isinstance(placement, str):
        spec["placement"] = placement
    lines = ["apiVersion: syncbit/v1", "kind: Dataset", "metadata:", f"  name: {name}", "spec:",
             *_block(spec, 2)]
    if isinstance(placement, str):
        lines.append(f"  placement: {placement}")
    lines.append(f"  path: {path or name}")
    return "\n".join(lines) + "\n" + extra


def http_source(base_url: str, files: Sequence[str], **more: object) -> dict[str, object]:
    """`source:`/`mirrors:` entry of an http origin serving `files` (sorted) under `base_url`."""
    return {"http": {"baseUrl": base_url.rstrip("/") + "/", "files": sorted(files), **more}}


@dataclass
class NodeHome:
    """One node's config, state dir and allowed root on this machine."""

    name: str
    base: Path
    desired: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.base / "config.yaml"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    def write_config(self) -> "NodeHome":
        self.base.mkdir(parents=True, exist_ok=True)
        cfg = {"node": self.name, "desiredState": str(self.desired), "stateDir": str(self.state_dir),
               "allowedRoots": [str(self.data)], **self.extra}
        self.config.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        return self

    def status(self) -> dict:
        return json.loads(self.status_file.read_text())

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config), timeout=timeout, env=env)

    def once(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        return run_cli("--once", "--config", str(self.config), *args, timeout=timeout, env=env)

    def start_once(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None,
                   level: str | None = None) -> subprocess.Popen[str]:
        """`--once` in the background, its output in `<base>/once.log`; stop it with wait_all.
        Log level `level`, else $SYNCBIT_TEST_LOG_LEVEL (debug shows peer connections), else
        info."""
        level = level or os.environ.get("SYNCBIT_TEST_LOG_LEVEL", "info")
        with open(self.base / "once.log", "w") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--once", "--config", str(self.config),
                 "--timeout", f"{timeout:g}", *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True,
                env={**os.environ, "SYNCBIT_LOG_LEVEL": level, **(env or {})})



class Daemon:
    """`python -m reconciler --config CFG` (the long-running daemon) in a subprocess, its output
    appended to `<base>/daemon.log`. Log level `level`, else $SYNCBIT_TEST_LOG_LEVEL, else info.
    Stop it with `stop()` (SIGTERM, then SIGKILL after 30 s), or use the `daemons` fixture."""

    def __init__(self, home: NodeHome, env: dict[str, str] | None = None,
                 level: str | None = None) -> None:
        self.home = home
        self.log_path = home.base / "daemon.log"
        self._log = open(self.log_path, "a")
        level = level or os.environ.get("SYNCBIT_TEST_LOG_LEVEL", "info")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--config", str(home.config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "SYNCBIT_LOG_LEVEL": level, **(env or {})})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text()

    def phase(self, dataset: str) -> str | None:
        return self.home.status()["datasets"].get(dataset, {}).get("phase")

    def wait_partly_fetched(self, dataset: str, size: int, timeout: float = 60) -> None:
        """Until `dataset` is Fetching with more than nothing and less than half of its `size`
        bytes done; fails the test with the daemon's log if the daemon exits first."""
        def partly() -> bool:
            assert self.proc.poll() is None, self.logs()
            try:
                s = self.home.status()["datasets"].get(dataset, {})
            except (OSError, ValueError):
                return False
            return s.get("phase") == "Fetching" and 0 < s.get("bytesDone", 0) < size // 2
        until(partly, timeout, f"{dataset} partly fetched on {self.home.name}")

    def wait_phase(self, dataset: str, phase: str, revision: str | None = None,
                   timeout: float = 60) -> dict:
        """The status document once `dataset` is in `phase` (at `revision`, if given); fails
        the test with the daemon's log if the daemon exits first."""
        def check() -> dict | None:
            doc = self.home.status()
            d = doc["datasets"].get(dataset) or {}
            if d.get("phase") == phase and (revision is None or doc["lastAppliedRevision"] == revision):
                return doc
            assert self.proc.poll() is None, self.logs()
            return None
        return until(check, timeout, f"{dataset} {phase} on {self.home.name}")  # type: ignore[return-value]


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SYNCBIT_LOG_LEVEL": "info", **(env or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def assert_origin_offload(statuses: list[dict], total: int, sent: int, origin: str,
                          bound: float = 1.25) -> str:
    """Each byte left the origin about once per cluster (DESIGN §5): what the origin itself
    counts as `sent` and what the nodes' gateways read from it (`bytesFromOrigin`) are both
    within [1, bound] x the dataset, and the peers supplied the rest. Returns the numbers."""
    relayed = sum(d["bytesFromOrigin"] for d in statuses)
    from_peers = sum(d["bytesFromPeers"] for d in statuses)
    measured = (f"{origin} sent {sent} B ({sent / total:.3f}x), gateways read {relayed} B "
                f"({relayed / total:.3f}x), peers {from_peers} B, dataset {total} B; per node "
                f"origin {[d['bytesFromOrigin'] for d in statuses]}")
    print(measured)
    # Without origin sharding each node takes most of the dataset from the origin (2-3x).
    assert total <= relayed <= bound * total, measured
    assert total <= sent <= bound * total, measured
    assert from_peers >= total, measured  # without sharing, peers would have given nothing
    return measured
