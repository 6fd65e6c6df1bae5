"""Passes at fleet scale: what loading, validating, placing and planning cost against a plain
YAML parse of the same files (issue 13).

    python -m bench.plan [--datasets 10000] [--nodes 1000] [--files 120] [--keep DIR] [--repeat N]
    python -m bench.plan --healthz [--datasets 10000] [--nodes 1000] [--files 120]

Generates a state repo (Node and Dataset documents across about `--files` YAML files, with
label selectors, replica counts, `all: true`, explicit node lists, capacities and storage
groups), then runs every step in a subprocess of its own, so that each step's peak memory
(`ru_maxrss`) is its own and nothing is warm that should not be:

- parse:    every file through PyYAML's C loader (yaml.CSafeLoader), the yardstick;
- load:     reconciler.desired.loader.load_documents (ruamel round trip, positions kept);
- validate: load_desired_state (load + validation + the model);
- place:    core.placement.place over the validated state (timed alone);
- plan:     what `syncbit-reconcile plan` does: load, validate, place, make_plan for one node;
- pass:     the pure part of a daemon pass (engine.inputs.prepare: revision, load, validate,
            place, plan) run twice in one process; the second one, nothing changed, is timed;
- pass1:    the same process's first pass (cold caches);
- edit:     a pass after one dataset file was edited (one of ~120 files re-read).

Times are CPU seconds of the step's process (time.process_time), not wall-clock time. Prints
seconds, the ratio to the plain parse (the `parse` step) and to a plain parse timed
again in the step's own process right before it (steadier on a shared machine), and the peak
RSS of each step (its own process: `parse` is the yardstick's own peak). `--repeat N` runs
each step N times and shows the median run by that second ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def _clock() -> float:
    """CPU seconds of this process (all threads): what a step costs, steady on a shared
    machine where wall-clock time depends on the neighbours."""
    return time.process_time()


GPUS = ("h100", "a100", "l40s", "h200")
ZONES = tuple(f"zone-{i}" for i in range(1, 9))
TIERS = ("train", "infer", "eval")


def generate(root: Path, datasets: int, nodes: int, files: int, seed: int = 13,
             loopback: bool = False, prefix: str = "ds") -> None:
    """A state repo: ~files/12 node files and the rest dataset files, all documents valid.

    `loopback` (for a real daemon, `--healthz`): node addresses in 127.0.0.0/8, every source
    an HTTP origin on 127.0.0.1 and every dataset suspended, so nothing is fetched and no
    traffic leaves the machine. `prefix`: dataset names (a new prefix: nothing cached)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    node_files = max(1, min(files // 12, nodes))
    data_files = max(1, files - node_files)
    node_names = [f"gpu-{i:05d}" for i in range(nodes)]
    for f in range(node_files):
        docs = []
        for i in range(f, nodes, node_files):
            labels = {"gpu": GPUS[i % len(GPUS)], "zone": ZONES[(i // 7) % len(ZONES)],
                      "tier": TIERS[i % len(TIERS)]}
            extra = ""
            if i % 5 == 0:
                extra += f"  capacity: {rng.choice((2, 4, 8))}TiB\n"
            if i % 11 == 0:
                extra += f"  storageGroup: nfs-{i // 110}\n"
            net = 127 if loopback else 10
            ip = f"{net}.{i // 64516 % 256}.{i // 254 % 254 + 1}.{i % 254 + 1}"  # valid
            docs.append(
                "apiVersion: syncbit/v1\nkind: Node\nmetadata:\n"
                f"  name: {node_names[i]}\n  labels:\n"
                + "".join(f"    {k}: {v}\n" for k, v in labels.items())
                + f"spec:\n  peer: \"{ip}:6881\"\n  api: \"{ip}:7070\"\n" + extra)
        (root / f"nodes-{f:03d}.yaml").write_text("# inventory\n" + "---\n".join(docs))
    (root / "datasets").mkdir(exist_ok=True)
    for f in range(data_files):
        docs = []
        for i in range(f, datasets, data_files):
            name = f"{prefix}-{i:06d}"
            kind = rng.random()
            if kind < 0.55:
                sel = {"gpu": rng.choice(GPUS)}
                if rng.random() < 0.4:
                    sel["zone"] = rng.choice(ZONES)
                placement = (f"    replicas: {rng.randint(1, 5)}\n    selector:\n"
                             + "".join(f"      {k}: {v}\n" for k, v in sel.items()))
            elif kind < 0.80:
                placement = f"    replicas: {rng.randint(1, 3)}\n"
            elif kind < 0.95:
                placement = (f"    all: true\n    selector:\n      gpu: {rng.choice(GPUS)}\n"
                             f"      zone: {rng.choice(ZONES)}\n")
            else:
                picks = rng.sample(node_names, min(3, len(node_names)))
                placement = "    nodes: [" + ", ".join(picks) + "]\n"
            src = rng.random()
            if loopback:
                source = (f"    http:\n      baseUrl: http://127.0.0.1:9/{name}/\n"
                          f"      files: [part-0.bin]\n")
            elif src < 0.5:
                source = (f"    http:\n      baseUrl: https://data.example.com/{name}/\n"
                          f"      files: [part-0.bin, part-1.bin, meta/index.json]\n"
                          f"      headers:\n        Authorization: \"Bearer ${{DATA_TOKEN}}\"\n")
            elif src < 0.8:
                source = (f"    s3:\n      bucket: fleet-data\n      prefix: {name}/\n"
                          f"      region: eu-west-1\n")
            else:
                source = f"    hf:\n      repo: org/{name}\n      revision: main\n"
            opt = ""
            if rng.random() < 0.2:
                opt += f"  priority: {rng.choice(('low', 'high', 'critical'))}\n"
            if rng.random() < 0.1:
                opt += "  keepVersions: 2\n"
            if loopback:
                opt += "  suspend: true\n"
            docs.append(
                f"# dataset {i}\napiVersion: syncbit/v1\nkind: Dataset\nmetadata:\n  name: {name}\n"
                f"spec:\n  version: \"v{rng.randint(1, 40)}\"\n  source:\n{source}"
                f"  placement:\n{placement}  path: datasets/{name}\n{opt}")
        (root / "datasets" / f"batch-{f:03d}.yaml").write_text("---\n".join(docs))


def _config(tmp: Path, root: Path, node: str) -> Path:
    cfg = tmp / "node.yaml"
    cfg.write_text(f"node: {node}\ndesiredState: {root}\nstateDir: {tmp / 'state'}\n"
                   f"allowedRoots: [{tmp / 'data'}]\n")
    return cfg


def _yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))


def plain_parse(root: Path) -> tuple[float, int]:
    """Seconds to parse every YAML file with PyYAML's C loader (else ruamel's fastest), and
    the number of documents."""
    try:
        import yaml
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        def docs(data: bytes) -> list[object]:
            return list(yaml.load_all(data, Loader=loader))
    except ImportError:
        from ruamel.yaml import YAML
        fast = YAML(typ="safe")

        def docs(data: bytes) -> list[object]:
            return list(fast.load_all(data))
    t = _clock()
    n = 0
    for p in _yaml_files(root):
        n += sum(1 for d in docs(p.read_bytes()) if d is not None)
    return _clock() - t, n


def step(name: str, root: Path, tmp: Path, node: str) -> dict[str, float]:
    """Run one step in this process; seconds of the timed part."""
    out: dict[str, float] = {}
    if name == "parse":
        out["seconds"], out["documents"] = plain_parse(root)
        return out
    if name == "load":
        from reconciler.desired.loader import load_documents
        t = _clock()
        res = load_documents(root)
        out["seconds"] = _clock() - t
        assert not res.errors, res.errors[:3]
        return out
    if name == "validate":
        from reconciler.desired.validate import load_desired_state
        t = _clock()
        state = load_desired_state(root, "bench")
        out["seconds"] = _clock() - t
        assert not isinstance(state, list), state[:3]
        return out
    if name == "place":
        from reconciler.core.placement import place
        from reconciler.desired.validate import load_desired_state
        state = load_desired_state(root, "bench")
        assert not isinstance(state, list)
        t = _clock()
        placed = place(state)
        out["seconds"] = _clock() - t
        out["replicas"] = sum(len(a.nodes) for a in placed.values())
        return out
    from reconciler.adapters.config import load_config
    cfg = load_config(_config(tmp, root, node))
    if name == "plan":
        from reconciler.core.plan import make_plan
        from reconciler.desired.validate import load_desired_state
        t = _clock()
        state = load_desired_state(cfg.desired_state, "bench")
        assert not isinstance(state, list)
        plan = make_plan(state, cfg.node, cfg.allowed_roots, {})
        out["seconds"] = _clock() - t
        out["actions"] = len(plan.actions)
        return out
    if name in ("pass", "pass1", "edit"):
        prepare = _prepare()
        t = _clock()
        first = prepare(cfg)
        out["pass1"] = _clock() - t
        if name == "edit":
            victim = sorted((root / "datasets").glob("*.yaml"))[0]
            victim.write_text(victim.read_text().replace('version: "v', 'version: "w', 1))
        t = _clock()
        again = prepare(cfg)
        out["pass"] = _clock() - t
        out["seconds"] = out["pass1"] if name == "pass1" else out["pass"]
        if name == "pass":
            assert again == first, "a pass with nothing changed gave another result"
        return out
    raise SystemExit(f"unknown step {name}")


def _prepare():  # type: ignore[no-untyped-def]
    """The pure part of a pass: engine.inputs.prepare if it exists, else what the runner and
    the executor did before it (revision, load and validate, place, plan)."""
    from reconciler.engine import inputs
    if hasattr(inputs, "prepare"):
        def run(cfg):  # type: ignore[no-untyped-def]
            p = inputs.prepare(cfg)
            return (p.loaded.revision, p.assignments, p.plan.actions if p.plan else None)
        return run
    from reconciler.core.placement import place
    from reconciler.core.plan import make_plan

    def old(cfg):  # type: ignore[no-untyped-def]
        loaded = inputs.load(cfg)
        assert loaded.state is not None, loaded.errors[:3]
        assignments = place(loaded.state)
        plan = make_plan(loaded.state, cfg.node, cfg.allowed_roots, {}, assignments)
        return (loaded.revision, assignments, plan.actions)
    return old


STEPS = ("parse", "load", "validate", "place", "plan", "pass1", "pass", "edit")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this directory")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each step this many times; show the median by /parse-here")
    ap.add_argument("--healthz", action="store_true",
                    help="instead: a real daemon's /healthz latency during a cold pass")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--node", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:  # the child
        # The yardstick again, in this process right before the step (a fresh heap, as the
        # plain parse a user would time; after the step, the collector walking the step's
        # objects would slow it down and flatter the ratio): on a shared machine the ratio of
        # two timings taken together is steadier than either timing.
        parse_here, _ = plain_parse(args.root)
        with tempfile.TemporaryDirectory(prefix="bench-plan-step-") as tmp:
            res = step(args.step, args.root, Path(tmp), args.node)
        res["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["parse_here"] = parse_here
        print(json.dumps(res))
        return 0

    if args.healthz:
        from bench.plan_api import healthz_during_cold_pass
        return healthz_during_cold_pass(args.datasets, args.nodes, args.files)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as t:
        root = args.keep or Path(t) / "repo"
        if not (root / "datasets").is_dir():
            generate(root, args.datasets, args.nodes, args.files)
        files = _yaml_files(root)
        size = sum(p.stat().st_size for p in files)
        print(f"state repo: {args.datasets} datasets, {args.nodes} nodes, {len(files)} files, "
              f"{size / 2**20:.1f} MiB", flush=True)
        print("step    CPU seconds  /parse  /parse-here  peak RSS   (parse-here: the plain parse "
              "timed again in the step's own process)", flush=True)
        rows = []
        base = None
        for name in args.steps:
            runs = []
            for i in range(args.repeat):  # bounded by --repeat
                work = Path(t) / f"copy-{name}-{i}"  # `edit` changes a file: a copy each run
                subprocess.run(["cp", "-a", str(root), str(work)], check=True)
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [str(Path(__file__).resolve().parent.parent)] + sys.path[1:2]))
                r = subprocess.run([sys.executable, "-m", "bench.plan", "--step", name,
                                    "--root", str(work), "--node", "gpu-00000"],
                                   capture_output=True, text=True, env=env,
                                   cwd=Path(__file__).resolve().parent.parent)
                subprocess.run(["rm", "-rf", str(work)], check=True)
                if r.returncode != 0:
                    print(f"{name}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                    return 1
                runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            # The median run by its ratio to the plain parse timed in the same process.
            runs.sort(key=lambda res: res["seconds"] / res["parse_here"])
            res = runs[len(runs) // 2]
            if name == "parse":
                base = res["seconds"]
            rows.append((name, res))
            ratio = f"{res['seconds'] / base:7.2f}x" if base else "      -"
            here = res["seconds"] / res["parse_here"]
            print(f"{name:9s} {res['seconds']:8.2f} s  {ratio}  {here:7.2f}x  "
                  f"peak {res['maxrss_mib']:6.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
