"""`GET /`: the cluster page, rendered by a real headless browser (Debian's chromium driven by
Playwright), asserted on the DOM: first against API servers holding hand-made documents (a
dataset Pending everywhere, a rejected revision, an unreachable node), then against three real
daemons while a dataset converges. A screenshot of each is kept under the test's tmp dir and
under `test-artifacts/` (gitignored)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from factories import dataset, node, state
from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     until, write_data)
from origin_server import OriginServer

from reconciler.adapters.status_file import DatasetStatus, NodeReport, now_rfc3339, render_status
from reconciler.model.desired import ValidationError
from reconciler.model.status import Rejected

CHROMIUM = os.environ.get("SYNCBIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
playwright = pytest.importorskip("playwright", reason="pip install playwright (test extra)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing: apt-get install chromium")
LAUNCH = {"executable_path": CHROMIUM, "args": ["--no-sandbox", "--disable-gpu"]}
WAIT_MS = 60_000  # a bound on waiting for the page, not a timing assertion


def keep_screenshot(png: bytes, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(png)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)


def _doc(name: str, phase: str, *, rejected: Rejected | None = None) -> dict:
    now = now_rfc3339()
    return render_status(NodeReport(
        node=name, observed_revision=rejected.revision if rejected else "rev1",
        last_applied_revision="rev1", started_at=now, finished_at=None,
        result="Rejected" if rejected else "Progressing", rejected=rejected,
        datasets={"weights": DatasetStatus(phase, "v1", None, None, bytes_total=0)}), None)  # type: ignore[arg-type]


async def test_page_renders_pending_everywhere_a_rejection_and_an_unreachable_node(
        api_servers, tmp_path) -> None:
    from playwright.async_api import async_playwright

    rej = Rejected("b" * 40, (ValidationError("datasets/weights.yaml", 7, 3, "spec.placement",
                                              "replicas needs a selector"),))
    b = await api_servers(lambda: _doc("gpu-b", "Pending"))
    nodes = [node("gpu-a"), dataclasses.replace(node("gpu-b"), api=f"127.0.0.1:{b.port}"),
             dataclasses.replace(node("gpu-c"), api="127.0.0.1:9")]  # nothing listens on 9
    st = state(nodes, [dataset("weights", size=5 << 20)])
    a = await api_servers(lambda: _doc("gpu-a", "Pending", rejected=rej), desired=st)
    async with async_playwright() as p:
        browser = await p.chromium.launch(**LAUNCH)
        try:
            page = await browser.new_page()
            await page.goto(a.url + "/")
            await page.wait_for_function("document.body.dataset.rendered >= 1", timeout=WAIT_MS)
            assert await page.inner_text("#self") == "gpu-a"
            for n in ("gpu-a", "gpu-b"):
                cell = page.locator(f'#matrix tr[data-node="{n}"] td[data-dataset="weights"]')
                assert await cell.get_attribute("data-phase") == "Pending"
                assert (await cell.locator(".phase").inner_text()) == "Pending"
                assert (await cell.locator(".pct").inner_text()) == "0%"
            nodes_row = await page.inner_text('#nodes tr[data-node="gpu-c"]')
            assert "unreachable" in nodes_row and "connection refused" in nodes_row
            rejected = await page.inner_text("#rejected")
            assert "bbbbbbbbbbbb rejected" in rejected
            assert "datasets/weights.yaml:7: spec.placement: replicas needs a selector" in rejected
            row = page.locator('#datasets tr[data-dataset="weights"]')
            assert await row.locator(".ready").inner_text() == "0/3"
            assert "5.0 MiB" in await row.inner_text()  # the size from the lock
            assert await row.locator(".amplification").inner_text() == "0.00\u00d7"
            assert "weights: Ready on 0 of 3" in await page.inner_text("#under")
            keep_screenshot(await page.screenshot(full_page=True), tmp_path, "page-pending.png")
        finally:
            await browser.close()


FILES = {"a.bin": pseudo_random(3 << 20, "page-a"), "b.bin": pseudo_random(1 << 20, "page-b")}
NAMES = ["p1", "p2", "p3"]


def test_page_of_a_three_node_cluster_while_a_dataset_converges(tmp_path, daemons) -> None:
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    # 512 KiB/s for the whole origin: 4 MiB take seconds, so the page sees the dataset move.
    origin = OriginServer(write_data(tmp_path / "origin", FILES), rate=512 << 10).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(NAMES, first_ip=201))
        repo.write("ds.yaml", dataset_yaml("data", http_source(origin.url, FILES)))
        assert repo.lock().returncode == 0
        repo.commit("v1")
        api = (repo.root / "nodes.yaml").read_text().split("api: ")[1].split("\n")[0].strip('"')
        homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in NAMES]
        total = sum(len(v) for v in FILES.values())

        with sync_playwright() as p:
            browser = p.chromium.launch(**LAUNCH)  # before the daemons: the page sees them move
            try:
                page = browser.new_page()
                procs = [daemons(h) for h in homes]
                def opened() -> bool:
                    try:
                        r = page.goto(f"http://{api}/")
                    except PlaywrightError:  # p1's API not listening yet
                        return False
                    return r is not None and r.ok
                until(opened, 60, "the page of p1")
                page.wait_for_function("document.body.dataset.rendered >= 1", timeout=WAIT_MS)
                assert page.inner_text("#self") == "p1"

                # While it converges: some node shows the dataset not Ready yet, with a percent.
                def moving() -> str | None:
                    for n in NAMES:
                        cell = page.locator(f'#matrix tr[data-node="{n}"] td[data-dataset="data"]')
                        if cell.count() and cell.get_attribute("data-phase") in (
                                "Pending", "Fetching", "Verifying"):
                            return cell.inner_text()
                    return None
                seen = until(moving, 60, "a node shown not Ready yet")
                assert "%" in str(seen)
                keep_screenshot(page.screenshot(full_page=True), tmp_path, "page-converging.png")

                for d in procs:
                    d.wait_phase("data", "Ready", timeout=120)

                def settled() -> tuple[int, int] | None:
                    """The page agrees with the nodes' status files (read again each time: a
                    node may still publish its last counters after Ready)."""
                    docs = [h.status() for h in homes]
                    origin_bytes = sum(d["datasets"]["data"]["bytesFromOrigin"] for d in docs)
                    peer_bytes = sum(d["datasets"]["data"]["bytesFromPeers"] for d in docs)
                    for n in NAMES:
                        cell = page.locator(f'#matrix tr[data-node="{n}"] td[data-dataset="data"]')
                        if cell.get_attribute("data-phase") != "Ready":
                            return None
                    row = page.locator('#datasets tr[data-dataset="data"]')
                    if (row.locator(".origin").get_attribute("data-bytes") == str(origin_bytes)
                            and row.locator(".peers").get_attribute("data-bytes")
                            == str(peer_bytes)):
                        return origin_bytes, peer_bytes
                    return None
                origin_bytes, peer_bytes = until(  # type: ignore[misc]
                    settled, 60, "the page showing every node Ready with the nodes' bytes")
                for n in NAMES:
                    cell = page.locator(f'#matrix tr[data-node="{n}"] td[data-dataset="data"]')
                    assert cell.locator(".pct").inner_text() == "100%"
                    nrow = page.inner_text(f'#nodes tr[data-node="{n}"]')
                    assert "Converged" in nrow and "/s" in nrow
                row = page.locator('#datasets tr[data-dataset="data"]')
                assert row.locator(".ready").inner_text() == "3/3"
                amp = float(row.locator(".amplification").inner_text().rstrip("\u00d7"))
                assert amp == pytest.approx(origin_bytes / total, abs=0.01)
                assert page.locator("#totals .origin").get_attribute("data-bytes") == str(origin_bytes)
                assert "none" in page.inner_text("#under")
                keep_screenshot(page.screenshot(full_page=True), tmp_path, "page-ready.png")

                # A broken commit: the page shows the rejection with its file and line.
                repo.write("ds.yaml", dataset_yaml("data", http_source(origin.url, FILES),
                                                   placement="{all: true, replicas: 2}"))
                bad = repo.commit("broken")
                until(lambda: bad[:12] in page.inner_text("#rejected"), 60, "the rejection")
                assert "ds.yaml:" in page.inner_text("#rejected")
                keep_screenshot(page.screenshot(full_page=True), tmp_path, "page-rejected.png")
            finally:
                browser.close()
    finally:
        origin.stop()
    print(json.dumps({"artifacts": str(ARTIFACTS)}))
