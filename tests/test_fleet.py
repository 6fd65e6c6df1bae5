"""The swarm at fleet scale (issue 16), with real processes: many datasets committed together
over several nodes, all started with `--once` at the same moment, share one throttled origin;
each byte leaves it about once (owners come from the placement, not from who is connected),
and a node killed with its origin runs unfinished leaves nothing unfetched.

`run_fleet` is also the 8 nodes x 30 datasets measurement of the README ("Fleet scale"):
    PYTHONPATH=.:tests python -c 'import sys; sys.path.insert(0, "tests"); \
        from test_fleet import main; main(8, 30)'
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, wait_all, write_data)
from origin_server import OriginServer

DATASET_BYTES = 2 << 20
ORIGIN_RATE = 32 << 20  # bytes/s for the whole origin, set after locking


def files_of(i: int) -> dict[str, bytes]:
    return {f"ds{i}/weights.bin": pseudo_random(DATASET_BYTES - 1000 - 77 * i, f"w{i}"),
            f"ds{i}/config.json": pseudo_random(1000 + 77 * i, f"c{i}")}


@dataclass
class Fleet:
    origin: OriginServer
    homes: list[NodeHome]
    names: list[str]  # dataset names
    total: int  # bytes of all datasets together

    def digests_match(self, homes: list[NodeHome]) -> list[str]:
        """The datasets some node of `homes` does not hold byte for byte."""
        bad = []
        for i, name in enumerate(self.names):
            want = tree_digest(self.origin.root / f"ds{i}")
            for h in homes:
                if tree_digest(h.data / name) != want:
                    bad.append(f"{h.name}:{name}")
        return bad


def make_fleet(tmp: Path, nodes: int, datasets: int, first_ip: int) -> Fleet:
    everything: dict[str, bytes] = {}
    for i in range(datasets):
        everything.update(files_of(i))
    origin = OriginServer(write_data(tmp / "origin", everything)).start()
    repo = StateRepo.create(tmp / "state")
    names = [f"n{i}" for i in range(nodes)]
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=first_ip))
    docs = []
    for i in range(datasets):
        base = f"{origin.url}/ds{i}"
        docs.append(dataset_yaml(f"d{i}", http_source(base, [f.split("/", 1)[1]
                                                             for f in files_of(i)]),
                                 path=f"d{i}"))
    repo.write("datasets.yaml", "---\n".join(docs))
    res = repo.lock()
    assert res.returncode == 0, res.stderr
    repo.commit()
    homes = [NodeHome(n, tmp / n, repo.root).write_config() for n in names]
    origin.rate = ORIGIN_RATE
    origin.bytes_sent = 0
    return Fleet(origin, homes, [f"d{i}" for i in range(datasets)],
                 sum(map(len, everything.values())))


def _stop(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_many_datasets_over_several_nodes_leave_the_origin_once(tmp_path):
    fleet = make_fleet(tmp_path, nodes=4, datasets=12, first_ip=201)
    try:
        procs = [h.start_once(timeout=50) for h in fleet.homes]
        try:
            codes = wait_all(procs, timeout=55)
        finally:
            _stop(procs)
        logs = [(h.base / "once.log").read_text()[-3000:] for h in fleet.homes]
        assert codes == [0] * 4, logs
        assert fleet.digests_match(fleet.homes) == []
        ratio = fleet.origin.bytes_sent / fleet.total
        print(f"4 nodes x 12 datasets: origin {ratio:.3f}x")
        # Equal nodes once judged each other lagging in the first second (a web seed queued
        # behind other torrents' holds none of its pieces yet) and two takers read the same
        # runs: 1.013-1.088x, failing about 1 run in 4. No lag is judged before LAG_AFTER
        # (core/transfer.py): 1.000x in 5 of 5 alternating runs (README "Fleet scale").
        assert fleet.total <= fleet.origin.bytes_sent <= 1.05 * fleet.total, ratio
    finally:
        fleet.origin.stop()


def test_a_node_killed_holding_owned_runs_leaves_nothing_unfetched(tmp_path):
    fleet = make_fleet(tmp_path, nodes=4, datasets=6, first_ip=211)
    fleet.origin.rate = 4 << 20  # slow enough that n0 dies with most of its runs unfetched
    try:
        procs = [h.start_once(timeout=50) for h in fleet.homes]
        try:
            deadline = time.monotonic() + 30
            while fleet.origin.bytes_sent < fleet.total // 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            at_kill = fleet.origin.bytes_sent
            procs[0].kill()  # kill -9: n0 owns about a quarter of every dataset's runs
            codes = wait_all(procs[1:], timeout=55)
        finally:
            _stop(procs)
        logs = [(h.base / "once.log").read_text()[-3000:] for h in fleet.homes[1:]]
        assert codes == [0, 0, 0], logs
        assert fleet.digests_match(fleet.homes[1:]) == []
        ratio = fleet.origin.bytes_sent / fleet.total
        print(f"4 nodes x 6 datasets, n0 killed at {at_kill / fleet.total:.2f}x: "
              f"origin {ratio:.3f}x")
        # What n0 had fetched and not passed on is fetched again (at most its quarter of what
        # the origin had sent when it died), nothing else twice.
        assert fleet.origin.bytes_sent <= 1.05 * fleet.total + at_kill / 4, ratio
    finally:
        fleet.origin.stop()


class _Kept:
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> str:
        Path(self.path).mkdir(parents=True, exist_ok=False)
        return self.path

    def __exit__(self, *exc: object) -> None:
        pass


def main(nodes: int = 8, datasets: int = 30, runs: int = 1, timeout: float = 150,
         keep: str | None = None) -> None:
    """The fleet measurement: every node Ready, origin bytes / dataset bytes, wall time.
    `keep`: a directory to run in and leave (node logs), instead of a temporary one."""
    for _ in range(runs):
        with (tempfile.TemporaryDirectory() if keep is None else _Kept(keep)) as d:
            fleet = make_fleet(Path(d), nodes, datasets, first_ip=221)
            try:
                t0 = time.monotonic()
                procs = [h.start_once(timeout=timeout) for h in fleet.homes]
                try:
                    codes = wait_all(procs, timeout=timeout + 30)
                finally:
                    _stop(procs)
                took = time.monotonic() - t0
                bad = fleet.digests_match(fleet.homes)
                print(f"{nodes} nodes x {datasets} datasets: origin "
                      f"{fleet.origin.bytes_sent / fleet.total:.3f}x, {took:.1f} s, "
                      f"exit codes {codes}, mismatched {len(bad)}", flush=True)
            finally:
                fleet.origin.stop()


def test_the_simulation_at_a_hundred_nodes_keeps_the_origin_once_and_near_the_bound():
    """bench/offload_sim.py (the product's rules in a round-based model) stays runnable and
    keeps its figures: the README's tables come from it at 1,000 and 5,000 nodes."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / "offload_sim.py"
    spec = importlib.util.spec_from_file_location("offload_sim", path)
    assert spec is not None and spec.loader is not None
    sim = importlib.util.module_from_spec(spec)
    sys.modules["offload_sim"] = sim
    spec.loader.exec_module(sim)
    for scenario in ("all", "die"):
        res = sim.simulate(100, scenario, pieces=400, origin=10, up=20)
        assert res.complete, res
        assert res.amplification <= 1.05, res
        assert res.slowest_ratio <= 1.3, res  # rounds, not seconds: no wall clock involved
        assert res.max_degree <= 8
