"""What the same nodes would get without Syncbit: each pulls the whole dataset straight from the
origin, all at once, through the same shaped links and the same per-connection capped origin.

- naive: one `curl` per node, files one after another on one connection (a `wget -i`/`hf
  download` with one worker);
- aria2: `aria2c -x16 -s16 -k1M -j<files>`, 16 connections per file and every file at once, the
  best a single client does against a per-connection cap (DESIGN §5 names aria2c -x16 as the
  yardstick). `-k1M` because aria2's default minimum split (20 MiB) would not split files of a
  few MiB at all.

Both need `apt-get install aria2 curl`. Files are written to disk (as the product does) and
removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import OriginProcess
from bench.dataset import Version
from bench.namespaces import Host


@dataclass
class Baseline:
    tool: str
    seconds: float | None = None  # the slowest node (None: a node failed or timed out)
    per_node: list[float | None] = field(default_factory=list)
    origin_bytes: int = 0
    ok: bool = False


def _argv(tool: str, v: Version, url: str, out: Path) -> list[str]:
    urls = [f"{url}/{v.prefix}/{f}" for f in sorted(v.sizes)]
    if tool == "curl":
        argv = ["curl", "-sS", "--fail"]
        for f, u in zip(sorted(v.sizes), urls):
            argv += ["-o", str(out / f), u]
        return argv
    listing = out / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    return ["aria2c", "-x16", "-s16", "-k1M", f"-j{len(urls)}", "--file-allocation=none",
            "--allow-overwrite=true", "--auto-file-renaming=false", "--console-log-level=warn",
            "--summary-interval=0", "--download-result=hide", "-d", str(out), "-i", str(listing)]


def run(tool: str, hosts: list[Host], v: Version, origin: OriginProcess, workdir: Path,
        timeout: float) -> Baseline:
    """Every host downloads `v` with `tool` ("curl" or "aria2c") at the same moment."""
    res = Baseline(tool)
    if shutil.which(tool) is None:
        print(f"note: {tool} not installed (apt-get install aria2 curl); baseline skipped")
        return res
    outs = [workdir / f"{tool}-{h.name}" for h in hosts]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    origin.reset()
    t0 = time.monotonic()
    procs = [subprocess.Popen(h.argv(_argv(tool, v, origin.url, out)), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for h, out in zip(hosts, outs)]
    done: list[float | None] = [None] * len(procs)
    try:
        while time.monotonic() - t0 < timeout and None in done:
            for i, p in enumerate(procs):
                if done[i] is None and p.poll() is not None:
                    done[i] = time.monotonic() - t0 if p.returncode == 0 else -1.0
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
    res.origin_bytes = origin.stats()["bytes"]
    res.per_node = [None if d is None or d < 0 else round(d, 2) for d in done]
    complete = all((out / f).is_file() and (out / f).stat().st_size == n
                   for out in outs for f, n in v.sizes.items())
    res.ok = None not in res.per_node and complete
    res.seconds = max(d for d in res.per_node if d is not None) if res.ok else None
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    return res
