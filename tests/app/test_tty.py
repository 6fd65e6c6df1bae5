"""What `status` and `wait` show on a terminal (issue 15): a coloured table, a progress bar.
Off a terminal, `status` prints today's plain table and `wait` prints no bar at all."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from reconciler.app.ui import WaitProgress, print_status

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MiB = 1024 * 1024


def ds(phase: str, done: int, total: int, **kw: object) -> dict[str, object]:
    d: dict[str, object] = {"phase": phase, "version": "1", "path": f"/data/{phase.lower()}",
                            "infoHash": None, "bytesTotal": total, "bytesDone": done,
                            "bytesFromOrigin": done // 2, "bytesFromPeers": done - done // 2,
                            "downloadRate": 3 * MiB if phase == "Fetching" else 0,
                            "uploadRate": 0, "peers": 2, "error": None}
    d.update(kw)
    return d


def status_doc(**datasets: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "syncbit/v1", "kind": "NodeStatus", "node": "node-a",
            "observedRevision": "b" * 40, "lastAppliedRevision": "a" * 40,
            "rejected": {"revision": "b" * 40, "errors": [
                {"file": "d.yaml", "line": 7, "field": "spec.placement.replicas",
                 "message": "must be an integer"}]},
            "lastPass": {"startedAt": "2026-11-30T23:00:00Z", "finishedAt": "2026-11-30T23:00:05Z",
                         "result": "Progressing"},
            "conditions": [{"type": "Ready", "status": "False", "reason": "Progressing",
                            "message": "1 of 3 datasets Ready", "lastTransitionTime": "x"}],
            "datasets": datasets}


DOC = status_doc(**{"llama": ds("Ready", 8 * MiB, 8 * MiB),
                    "corpus": ds("Fetching", 3 * MiB, 6 * MiB),
                    "evals": ds("Failed", 0, MiB, error="all origins failed: a: HTTP 503")})


def render(doc: dict[str, object], terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, color_system="truecolor" if terminal
                      else None, width=150)
    print_status(doc, console)
    return buf.getvalue()


def test_status_on_a_terminal_is_a_coloured_table() -> None:
    raw = render(DOC, terminal=True)
    text = ANSI.sub("", raw)
    assert "\x1b[" in raw  # colours
    lines = text.splitlines()
    assert lines[0].split() == ["node", "node-a", "Progressing", "revision", "a" * 12,
                                "last", "pass", "2026-11-30T23:00:05Z"]
    # The rejection is on top, before the table.
    assert text.index("rejected") < text.index("DATASET")
    assert "d.yaml:7: spec.placement.replicas: must be an integer" in text
    assert "3 datasets: 1 Ready, " in text and "1 Fetching" in text and "1 Failed" in text
    row = {l.split()[0]: l for l in lines if l.split() and l.split()[0] in ("llama", "corpus", "evals")}
    assert "✔ Ready" in row["llama"] and "100% of 8.0 MiB" in row["llama"]
    assert "↓ Fetching" in row["corpus"] and "50% of 6.0 MiB" in row["corpus"]
    assert "3.0 MiB/s" in row["corpus"]
    assert "✖ Failed" in row["evals"]
    assert "✖ evals: all origins failed: a: HTTP 503" in text
    assert "Ready=False (Progressing): 1 of 3 datasets Ready" in text
    # Each phase in its colour: green Ready, red Failed (truecolor SGR sequences differ).
    ready = re.search(r"(\x1b\[[0-9;]*m)✔ Ready", raw)
    failed = re.search(r"(\x1b\[[0-9;]*m)✖ Failed", raw)
    assert ready and failed and ready.group(1) != failed.group(1)


def test_status_off_a_terminal_is_unchanged() -> None:
    text = render(DOC, terminal=False)
    assert "\x1b[" not in text
    assert f"node node-a — revision {'a' * 40} — Progressing" in text
    assert "50% of 6.0 MiB" in text and "✔" not in text
    assert f"revision {'b' * 40} rejected:" in text
    assert "Ready=False (Progressing): 1 of 3 datasets Ready" in text


def test_wait_progress_bar_on_a_terminal_and_nothing_elsewhere() -> None:
    buf = io.StringIO()
    with WaitProgress("corpus", Console(file=buf, force_terminal=True, width=120)) as view:
        view.update(ds("Fetching", 3 * MiB, 6 * MiB))
    text = ANSI.sub("", buf.getvalue())
    assert "corpus" in text and "Fetching" in text and "3.0/6.0 MiB" in text
    quiet = io.StringIO()
    with WaitProgress("corpus", Console(file=quiet, width=120)) as view:
        view.update(ds("Fetching", 3 * MiB, 6 * MiB))
    assert quiet.getvalue() == ""


# --- the real CLI on a pseudo-terminal ------------------------------------------------------

def cli_setup(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "data").mkdir(parents=True)
    (state / "data" / "f.bin").write_bytes(b"x" * 10)
    (state / "nodes.yaml").write_text(
        "apiVersion: syncbit/v1\nkind: Node\nmetadata: {name: node-a}\n"
        "spec: {peer: '127.0.0.1:6881', api: '127.0.0.1:7070'}\n")
    (state / "d.yaml").write_text(
        "apiVersion: syncbit/v1\nkind: Dataset\nmetadata: {name: corpus}\nspec:\n"
        "  version: '1'\n  source: {file: {path: data}}\n  placement: {all: true}\n"
        "  path: corpus\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"node: node-a\ndesiredState: {state}\nstateDir: {tmp_path / 'sd'}\n"
                   f"allowedRoots: [{tmp_path / 'data'}]\n")
    (tmp_path / "sd").mkdir()
    return cfg


def write_status(tmp_path: Path, doc: dict[str, object]) -> None:
    tmp = tmp_path / "sd" / ".status.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(tmp_path / "sd" / "status.json")


def run_on_pty(argv: list[str], until: re.Pattern[str] | None = None,
               then: object = None, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stdin/stdout/stderr on a pty; once `until` shows, call `then`.
    Bounded by `timeout`; the process is killed if it is still running then."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="150", LINES="40", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", *argv], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    fired = False
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the pty
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
            if until is not None and not fired and until.search(ANSI.sub("", out.decode(errors="replace"))):
                fired = True
                then()  # type: ignore[operator]
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(10)
        os.close(master)
    return code, out.decode(errors="replace")


def test_cli_status_on_a_pty_is_coloured(tmp_path: Path) -> None:
    cfg = cli_setup(tmp_path)
    write_status(tmp_path, DOC)
    code, raw = run_on_pty(["status", "--config", str(cfg)])
    assert code == 0, raw
    assert "\x1b[" in raw
    text = ANSI.sub("", raw)
    assert "✔ Ready" in text and "↓ Fetching" in text and "DATASET" in text
    plain = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout and "✔" not in plain.stdout


def test_cli_wait_on_a_pty_shows_a_progress_bar(tmp_path: Path) -> None:
    cfg = cli_setup(tmp_path)
    write_status(tmp_path, status_doc(corpus=ds("Fetching", 3 * MiB, 6 * MiB)))
    done = status_doc(corpus=ds("Ready", 6 * MiB, 6 * MiB, path="/data/corpus"))
    code, raw = run_on_pty(["wait", "corpus", "--config", str(cfg), "--timeout", "50"],
                           until=re.compile(r"3\.0/6\.0 MiB"),
                           then=lambda: write_status(tmp_path, done))
    text = ANSI.sub("", raw)
    assert code == 0, text
    assert "Fetching" in text and "3.0/6.0 MiB" in text
    assert "corpus: Ready at /data/corpus (version 1)" in text
    # Not a terminal: the one result line, no bar.
    plain = subprocess.run([sys.executable, "-m", "reconciler", "wait", "corpus", "--config",
                            str(cfg), "--timeout", "20"], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert plain.returncode == 0
    assert plain.stdout == "corpus: Ready at /data/corpus (version 1)\n"
    assert "MiB" not in plain.stderr
