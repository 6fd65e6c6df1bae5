"""Metrics against a running node: every metric the README lists and the Grafana dashboard
queries is read from a real daemon's `/metrics` (and its textfile), through a dataset that
converges, one whose origin fails, a rejected revision and a restart."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     until, write_data)
from origin_server import OriginServer
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters.status_file import METRICS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "examples" / "grafana" / "syncbit.json"
GOOD = {"a.bin": pseudo_random(2 << 20, "m-a")}
GONE = {"g.bin": pseudo_random(1 << 16, "m-g")}


def scrape(api: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)] of GET /metrics."""
    with urllib.request.urlopen(f"http://{api}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict, name: str, **labels: str) -> float | None:
    for lab, v in m.get(name, []):
        if all(lab.get(k) == x for k, x in labels.items()):
            return v
    return None


def family_names(samples: dict) -> set[str]:
    """Metric names as the README and PromQL use them: the samples' names, and a histogram's
    family name besides its `_bucket`/`_sum`/`_count` samples (`_created` samples dropped)."""
    names = {n for n in samples if not n.endswith("_created")}
    return names | {re.sub(r"_(bucket|sum|count)$", "", n) for n in names
                    if re.search(r"_(bucket|sum|count)$", n)}


def test_every_metric_from_a_running_node_and_the_dashboard_uses_only_those(tmp_path, daemons):
    good = OriginServer(write_data(tmp_path / "good", GOOD), rate=8 << 20).start()
    gone = OriginServer(write_data(tmp_path / "gone", GONE)).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["m1"], first_ip=211))
        repo.write("good.yaml", dataset_yaml("good", http_source(good.url, GOOD)))
        assert repo.lock().returncode == 0
        locked_good = (repo.root / "good.yaml").read_text()  # with its spec.lock
        v1 = repo.commit("v1")
        home = NodeHome("m1", tmp_path / "m1", repo.root).write_config()
        api = (repo.root / "nodes.yaml").read_text().split("api: ")[1].split("\n")[0].strip('"')
        d = daemons(home)
        d.wait_phase("good", "Ready", v1, timeout=120)
        seen: dict[str, list] = {}

        def scraped(cond) -> dict:  # type: ignore[no-untyped-def]
            return lambda: (lambda m: m if cond(m) else None)(scrape(api))

        # Converged: a pass timed and counted, the version Ready, its bytes, the store.
        m = until(scraped(lambda m: value(m, "syncbit_passes_total", result="Converged")), 60,
                  "a Converged pass in /metrics")
        seen.update(m)  # type: ignore[arg-type]
        assert value(m, "syncbit_dataset_ready", dataset="good", version="v1") == 1
        assert value(m, "syncbit_pass_duration_seconds_count", node="m1")  # >= 1 pass timed
        assert value(m, "syncbit_pass_duration_seconds_sum", node="m1") is not None
        size = len(GOOD["a.bin"])
        assert value(m, "syncbit_dataset_origin_bytes_total", dataset="good", version="v1") == size
        assert value(m, "syncbit_dataset_peer_bytes_total", dataset="good", version="v1") == 0
        assert (value(m, "syncbit_store_bytes") or 0) >= size
        assert (value(m, "syncbit_store_free_bytes") or 0) > 0
        assert value(m, "syncbit_dataset_peers", dataset="good") == 0  # a single node
        assert value(m, "syncbit_revision_rejected") == 0
        assert "syncbit_revision_rejected_info" not in m
        text = (home.state_dir / "syncbit.prom").read_text()  # the textfile: the same registry
        for name in ("syncbit_pass_duration_seconds_bucket", "syncbit_passes_total",
                     "syncbit_store_bytes", "syncbit_store_free_bytes", "syncbit_dataset_ready"):
            assert name in text, name

        # A rejected revision: the gauge, the info metric naming it, a Rejected pass.
        repo.write("good.yaml", dataset_yaml("good", http_source(good.url, GOOD),
                                             placement="{all: true, replicas: 2}"))
        bad = repo.commit("broken")
        # (the daemon may reject the working tree before the commit: wait for the commit's id)
        m = until(scraped(lambda m: value(m, "syncbit_revision_rejected_info", revision=bad)), 60,
                  "the rejected commit in /metrics")
        seen.update(m)  # type: ignore[arg-type]
        assert value(m, "syncbit_passes_total", result="Rejected")
        assert value(m, "syncbit_revision_rejected") == 1
        assert value(m, "syncbit_revision_rejected_info", revision=bad) == 1

        # Fixed, plus a dataset whose file is gone from its origin after locking: 404s.
        # (locked in a scratch repo: the daemon watches the working tree, not only commits)
        prep = StateRepo.create(tmp_path / "prep")
        prep.write("gone.yaml", dataset_yaml("gone", http_source(gone.url, GONE)))
        assert prep.lock().returncode == 0
        (gone.root / "g.bin").unlink()
        for f in [*prep.root.glob("*.yaml"), *prep.root.glob("locks/*")]:
            (repo.root / f.relative_to(prep.root)).parent.mkdir(exist_ok=True)
            (repo.root / f.relative_to(prep.root)).write_bytes(f.read_bytes())
        repo.write("good.yaml", locked_good)  # as locked: without spec.lock it would be pinned
        repo.commit("fixed, and gone")
        try:
            m = until(scraped(lambda m: value(m, "syncbit_origin_errors_total", dataset="gone",
                                              reason="http_4xx")), 60, "origin errors in /metrics")
        except AssertionError:
            print([ (k, v) for k, v in scrape(api).items() if "error" in k])
            print("\n".join(l for l in d.logs().splitlines() if "gone" in l)[-3000:])
            raise
        seen.update(m)  # type: ignore[arg-type]
        assert value(m, "syncbit_dataset_ready", dataset="gone", version="v1") == 0
        assert "syncbit_origin_errors_total" in (home.state_dir / "syncbit.prom").read_text()

        # Byte counters survive a restart (the store keeps them); process counters restart.
        assert d.stop() == 0
        d2 = daemons(home)
        m = until(lambda: scrape(api), 60, "/metrics after the restart")
        assert value(m, "syncbit_dataset_origin_bytes_total", dataset="good", version="v1") == size
        assert d2.stop() == 0
    finally:
        good.stop()
        gone.stop()

    exposed = family_names(seen)
    assert set(METRICS) <= exposed, sorted(set(METRICS) - exposed)  # every listed one, seen
    hist = {f"{n}_{s}" for n, (kind, _) in METRICS.items() if kind == "histogram"
            for s in ("bucket", "sum", "count")}
    unlisted = {n for n in exposed if n.startswith("syncbit_")} - set(METRICS) - hist
    assert not unlisted, f"exposed but not in METRICS (nor the README): {sorted(unlisted)}"

    # The dashboard queries only metrics that a running node exposes.
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v.get("query", "") for v in dash["templating"]["list"] if v.get("type") == "query"]
    for e in exprs:  # no PromQL engine here: at least balanced brackets and quotes
        assert all(e.count(a) == e.count(b) for a, b in ("()", "{}", "[]")), e
        assert e.count('"') % 2 == 0, e
    used = {n for e in exprs for n in re.findall(r"\bsyncbit_\w+", e)}
    assert used and used <= exposed, sorted(used - exposed)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("ready", "amplification", "rate", "pass duration", "rejected", "store"):
        assert topic in titles, topic


def test_readme_lists_every_metric_with_its_meaning():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    for name, (kind, _) in METRICS.items():
        assert re.search(rf"\| `{name}` \| {kind} \|", section), name
