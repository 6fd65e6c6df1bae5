"""One node against an origin that caps every connection, side by side with aria2c.

    python -m bench.single_origin [--mib 48] [--files 4] [--conn-kibps 128] [--latency 0.05]
                                  [--origin-connections N] [--repeat 1]

An HTTP origin (tests/origin_server.py) serves a dataset of `--files` files whose total is
`--mib` MiB, every response capped at `--conn-kibps` KiB/s after `--latency` seconds, like an
object store or a busy web server. In the same run, against the same server:

1. `aria2c -x16 -s16 -j4` (16 connections per file, 4 files at once): the reference;
2. syncbit on a one-node cluster (the dataset locked beforehand, with the caps lifted so that
   locking does not take minutes): `--start cold` (default) times `syncbit-reconcile --once`
   from its start, imports and session set-up included; `--start warm` times the daemon, as
   systemd runs it, from the commit that adds the dataset to its status showing it Ready
   (the daemon started on the repo without it and idle first, as in `bench.swarm`).
   `--unlocked` gives the node the dataset without `spec.lock`: it builds the torrent itself,
   reading the origin once into staging while hashing (engine/pinning.py), and seeds what it
   built.

It prints, for each, the seconds, MiB/s, the most origin connections open at once, the bytes
the origin sent and the CPU seconds the client used (curl or aria2c; syncbit's process, for the
daemon only between the commit and Ready; the origin server's are not counted), then the ratio of syncbit's throughput to aria2c's (goal: ≥ 0.9) and the
origin bytes over the dataset (goal: ≤ 1.05). Exit status 1 if the data is wrong.

Syncbit runs with its modules' bytecode compiled beforehand (into a temporary
PYTHONPYCACHEPREFIX, as an installed package has it), even where PYTHONDONTWRITEBYTECODE is set:
otherwise every `--once` compiles the whole program first (0.2-0.3 s measured).
`--no-bytecode-cache` measures that too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import (Daemon, NodeHome, StateRepo, dataset_yaml, http_source,  # noqa: E402
                     nodes_yaml, pseudo_random, tree_digest, write_data)
from origin_server import OriginServer  # noqa: E402

MiB = 1 << 20
#: 16 connections per file, 4 files at once; -k1M lets aria2c split files under 20 MiB too
#: (its default min-split-size), so that it really opens up to 64 connections.
ARIA2C = ["-x16", "-s16", "-j4", "-k1M"]
ARIA2C_LABEL = "aria2c " + " ".join(ARIA2C)


def _files(mib: int, count: int) -> dict[str, bytes]:
    """`count` files of slightly different sizes (not piece-aligned) totalling `mib` MiB."""
    total = mib * MiB
    sizes = [total // count + (i * 37_001 if i < count - 1 else 0) for i in range(count)]
    sizes[-1] = total - sum(sizes[:-1])
    return {f"part-{i}.bin": pseudo_random(n, f"so{i}") for i, n in enumerate(sizes)}


def _measure(server: OriginServer, run: "callable[[], None]") -> tuple[float, int, int]:  # type: ignore[valid-type]
    server.max_active, before = 0, server.bytes_sent
    t0 = time.monotonic()
    run()
    return time.monotonic() - t0, server.max_active, server.bytes_sent - before


def _aria2c(server: OriginServer, names: list[str], out: Path) -> None:
    listing = out.parent / "aria2c.txt"
    listing.write_text("".join(f"{server.url}/{n}\n" for n in names))
    subprocess.run(["aria2c", *ARIA2C, "--quiet=true", "--allow-overwrite=true",
                    "--file-allocation=none", "-d", str(out), "-i", str(listing)],
                   check=True, timeout=900)


def _curl(server: OriginServer, names: list[str], out: Path) -> None:
    """One curl for every file, one after the other on one connection: what a user runs."""
    out.mkdir(parents=True, exist_ok=True)
    args: list[str] = []
    for n in names:
        (out / n).parent.mkdir(parents=True, exist_ok=True)
        args += ["-o", str(out / n), f"{server.url}/{n}"]
    subprocess.run(["curl", "-sf", *args], check=True)


def _bytecode_cache(prefix: Path) -> dict[str, str]:
    """The environment that gives syncbit its bytecode compiled beforehand under `prefix`
    (PYTHONDONTWRITEBYTECODE empty is unset); compiles the package and what it imports."""
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(prefix)}
    root = Path(__file__).resolve().parent.parent / "reconciler"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root)], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, **env})
    # The libraries' bytecode (and anything compileall left out) is written on a first start.
    subprocess.run([sys.executable, "-m", "reconciler", "--help"], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, **env})
    return env


#: How often the warm run reads the daemon's status file: well under the times measured.
STATUS_POLL = 0.01


def _status_phase(home: NodeHome) -> tuple[str | None, str | None]:
    try:
        doc = home.status()
    except (OSError, ValueError):
        return None, None
    return doc.get("lastAppliedRevision"), (doc["datasets"].get("ds") or {}).get("phase")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _daemon_run(home: NodeHome, repo: StateRepo, given: str, env: dict[str, str] | None,
                timeout: float) -> tuple[float, float, str, bool]:
    """(seconds from the commit to Ready, the daemon's CPU seconds in that time, its log,
    Ready reached). The daemon starts on the repo without the dataset and is idle (its
    status at that revision) first."""
    if (repo.root / "ds.yaml").exists():
        (repo.root / "ds.yaml").unlink()
        repo.commit("idle")
    idle = repo.head()
    daemon = Daemon(home, env=env)
    try:
        deadline = time.monotonic() + timeout
        while _status_phase(home)[0] != idle:
            if time.monotonic() > deadline or daemon.proc.poll() is not None:
                return 0.0, 0.0, daemon.logs(), False
            time.sleep(STATUS_POLL)
        t0, c0 = time.monotonic(), _cpu_seconds(daemon.proc.pid)
        repo.write("ds.yaml", given)
        repo.commit("add ds")
        deadline = time.monotonic() + timeout
        while _status_phase(home)[1] != "Ready":
            if time.monotonic() > deadline or daemon.proc.poll() is not None:
                return time.monotonic() - t0, 0.0, daemon.logs(), False
            time.sleep(STATUS_POLL)
        return (time.monotonic() - t0, _cpu_seconds(daemon.proc.pid) - c0, daemon.logs(),
                True)
    finally:
        daemon.stop()


def _libtorrent_alone(server: OriginServer, root: Path, torrent: Path, out: Path,
                      urls: int, timeout: float) -> tuple[float, float, bool]:
    """bench/lt_webseed.py against the origin: (seconds, CPU seconds, complete)."""
    name = "ds"
    for link in [name, *(f"s{k}" for k in range(1, urls))]:  # every URL resolves to the root
        if not (root / link).exists():
            (root / link).symlink_to(".")
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "bench.lt_webseed", "--torrent", str(torrent),
                          "--url", server.url, "--out", str(out), "--urls", str(urls),
                          "--timeout", f"{timeout:g}"], capture_output=True, text=True,
                         timeout=timeout + 60, cwd=Path(__file__).resolve().parent.parent)
    doc = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
    if not doc.get("complete"):
        print(res.stderr[-2000:], file=sys.stderr)
    return float(doc.get("seconds", 0.0)), float(doc.get("cpu_seconds", 0.0)), bool(
        doc.get("complete"))


def _show_requests(requests: list[tuple[str, str, str | None]]) -> None:
    sizes: dict[int, int] = {}
    for _, _, rng in requests:
        if rng:
            a, _, b = rng.removeprefix("bytes=").partition("-")
            n = int(b) - int(a) + 1 if b else -1
            sizes[n] = sizes.get(n, 0) + 1
    print(f"  origin GETs: {len(requests)}; by size (KiB: count): "
          + ", ".join(f"{n / 1024:g}: {c}" for n, c in sorted(sizes.items(), key=lambda x: -x[1])[:8]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=48)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--conn-kibps", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--origin-connections", type=int, default=None,
                    help="originConnections in the node config (default: the product's)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--logs", help="write each syncbit run's output to this directory")
    ap.add_argument("--show-requests", action="store_true",
                    help="print the sizes of syncbit's origin range requests")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="let each syncbit run compile its modules (see the module doc)")
    ap.add_argument("--libtorrent-alone", action="store_true",
                    help="also run libtorrent by itself, its web seeds straight at the origin "
                         "(bench/lt_webseed.py): the ceiling of the product's download path")
    ap.add_argument("--start", choices=("cold", "warm"), default="cold",
                    help="cold: `--once` from its start; warm: the running daemon, from the "
                         "commit to Ready (see the module doc)")
    ap.add_argument("--unlocked", action="store_true",
                    help="give the node the dataset without spec.lock: it builds the torrent "
                         "itself, reading the origin once into staging while hashing")
    ap.add_argument("--baseline", choices=("aria2c", "curl"), default="aria2c",
                    help="the reference (curl: against a fast origin, --conn-kibps 0 --latency 0)")
    args = ap.parse_args(argv)
    if shutil.which(args.baseline) is None:
        print(f"{args.baseline} is not installed", file=sys.stderr)
        return 2
    fetch, label = ((_aria2c, ARIA2C_LABEL) if args.baseline == "aria2c"
                    else (_curl, "curl (one connection)"))

    tmp = Path(tempfile.mkdtemp(prefix="single-origin-"))
    files = _files(args.mib, args.files)
    total = sum(map(len, files.values()))
    root = write_data(tmp / "origin", files)
    server = OriginServer(root).start()
    ok = True
    try:
        repo = StateRepo.create(tmp / "state")
        repo.write("nodes.yaml", nodes_yaml(["n1"]))
        repo.write("ds.yaml", dataset_yaml("ds", http_source(server.url, list(files))))
        unlocked = (repo.root / "ds.yaml").read_text()
        res = repo.lock()
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return 2
        given = unlocked if args.unlocked else (repo.root / "ds.yaml").read_text()
        repo.write("ds.yaml", given)  # what the node is given: with spec.lock, or without
        repo.commit()
        env = None if args.no_bytecode_cache else _bytecode_cache(tmp / "pycache")
        server.conn_rate, server.latency = args.conn_kibps << 10, args.latency
        print(f"dataset {total / MiB:.1f} MiB in {len(files)} files; origin caps each "
              f"connection at {args.conn_kibps} KiB/s, {args.latency * 1000:.0f} ms first byte")
        print(f"{'run':<30} {'s':>7} {'MiB/s':>7} {'origin conns':>13} {'origin/dataset':>15} "
              f"{'cpu s':>7}")
        for r in range(args.repeat):
            out = tmp / f"{args.baseline}-{r}"
            c0 = _children_cpu()
            a_s, a_conns, a_sent = _measure(server, lambda: fetch(server, list(files), out))
            a_cpu = _children_cpu() - c0
            ok &= tree_digest(out) == tree_digest(root)
            print(f"{label:<30} {a_s:7.1f} {total / MiB / a_s:7.2f} "
                  f"{a_conns:13d} {a_sent / total:15.3f} {a_cpu:7.2f}")
            extra = {} if args.origin_connections is None else {
                "originConnections": args.origin_connections}
            home = NodeHome("n1", tmp / f"n1-{r}", repo.root, extra=extra).write_config()
            first = len(server.requests)
            if args.start == "warm":
                server.max_active, before = 0, server.bytes_sent
                s_s, s_cpu, output, ready = _daemon_run(home, repo, given, env, args.timeout)
                s_conns, s_sent = server.max_active, server.bytes_sent - before
            else:
                done: list[subprocess.CompletedProcess[str]] = []
                c0 = _children_cpu()
                s_s, s_conns, s_sent = _measure(server, lambda: done.append(home.once(
                    "--timeout", f"{args.timeout:g}", timeout=args.timeout + 60, env=env)))
                s_cpu = _children_cpu() - c0
                output, ready = done[0].stdout + done[0].stderr, done[0].returncode == 0
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                (Path(args.logs) / f"node-{r}.log").write_text(output)
            good = ready and tree_digest(home.data / "ds") == tree_digest(root)
            if not good:
                print(output[-2000:], file=sys.stderr)
            ok &= good
            node_label = ("syncbit --once" if args.start == "cold" else "syncbit daemon") + (
                f" (oc={args.origin_connections})" if args.origin_connections else "") + (
                " unlocked" if args.unlocked else "")
            print(f"{node_label:<30} {s_s:7.1f} {total / MiB / s_s:7.2f} {s_conns:13d} "
                  f"{s_sent / total:15.3f} {s_cpu:7.2f}")
            if args.show_requests:
                _show_requests(server.requests[first:])
            goal = "0.9" if args.baseline == "aria2c" else "0.5"
            print(f"ratio syncbit/{args.baseline} throughput: {a_s / s_s:.2f}  (goal >= {goal})"
                  f"{'' if good else '  DATA WRONG'}")
            if args.libtorrent_alone:
                server.max_active, before = 0, server.bytes_sent
                out = tmp / f"lt-{r}"
                l_s, l_cpu, l_ok = _libtorrent_alone(
                    server, root, next(repo.root.glob("**/ds.torrent")), out, 2, args.timeout)
                l_ok = l_ok and tree_digest(out / "ds") == tree_digest(root)
                ok &= l_ok
                print(f"{'libtorrent alone (2 web seeds)':<30} {l_s:7.1f} "
                      f"{total / MiB / max(l_s, 1e-9):7.2f} {server.max_active:13d} "
                      f"{(server.bytes_sent - before) / total:15.3f} {l_cpu:7.2f}")
                print(f"ratio libtorrent alone/{args.baseline} throughput: "
                      f"{a_s / max(l_s, 1e-9):.2f}{'' if l_ok else '  DATA WRONG'}")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
