"""reconciler.adapters.api: the node's HTTP API, a real aiohttp server and real client requests."""

from __future__ import annotations

import json
import logging
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.app import log as logging_setup
from reconciler.adapters.api import ApiServer, parse_listen
from reconciler.adapters.status_file import DatasetStatus, NodeReport, now_rfc3339, render_status

TIMEOUT = aiohttp.ClientTimeout(total=10)
OLD = "2020-01-01T00:00:00Z"


def status_doc(*, started: str | None = None, finished: str | None = "now",
               done: int = 100) -> dict:
    now = now_rfc3339()
    ds = {"llama": DatasetStatus("Ready" if done == 100 else "Fetching", "v1", "/data/llama",
                                 "c" * 64, bytes_total=100, bytes_done=done, bytes_from_origin=40,
                                 bytes_from_peers=60, peers=2),
          "shards": DatasetStatus("Draining", "v0", "/data/shards", "d" * 64, bytes_total=7,
                                  bytes_done=7)}
    return render_status(NodeReport(
        node="gpu-01", observed_revision="a" * 40, last_applied_revision="a" * 40,
        started_at=started or now, finished_at=now if finished == "now" else finished,
        result="Converged" if done == 100 else "Progressing", datasets=ds))


class Holder:
    """What the reconciler would hand the API: the latest status document, or None."""

    def __init__(self, doc: dict | None = None) -> None:
        self.doc = doc

    def __call__(self) -> dict | None:
        return self.doc


async def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.request(method, url) as r:
            return r.status, dict(r.headers), await r.read()


async def test_before_the_first_status_everything_but_404s_is_503(api_servers) -> None:
    srv = await api_servers(Holder(None))
    assert srv.port and srv.url == f"http://127.0.0.1:{srv.port}"
    code, headers, body = await get(srv.url + "/status")
    assert code == 503 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"error": "no pass has finished yet"}
    code, _, body = await get(srv.url + "/metrics")
    assert code == 503 and json.loads(body) == {"error": "no pass has finished yet"}
    code, _, body = await get(srv.url + "/healthz")
    assert code == 503
    h = json.loads(body)
    assert h["status"] != "ok" and "no pass" in h["reason"]


async def test_status_serves_the_document(api_servers) -> None:
    holder = Holder(None)
    srv = await api_servers(holder)
    assert (await get(srv.url + "/status"))[0] == 503
    holder.doc = status_doc()
    code, headers, body = await get(srv.url + "/status")
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == holder.doc


async def test_metrics_are_prometheus_text_of_the_same_document(api_servers) -> None:
    srv = await api_servers(Holder(status_doc(done=42)))
    code, headers, body = await get(srv.url + "/metrics")
    assert code == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(body.decode()))
    assert families and all(f.name.startswith("syncbit_") for f in families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families for s in f.samples}
    assert samples[("syncbit_dataset_bytes_done",
                    (("dataset", "llama"), ("node", "gpu-01")))] == 42
    assert samples[("syncbit_dataset_phase",
                    (("dataset", "shards"), ("node", "gpu-01"), ("phase", "Draining")))] == 1
    assert samples[("syncbit_ready", (("node", "gpu-01"),))] == 0


async def test_healthz_fresh_is_ok_and_stale_is_503(api_servers) -> None:
    holder = Holder(status_doc())
    srv = await api_servers(holder)
    code, _, body = await get(srv.url + "/healthz")
    h = json.loads(body)
    assert code == 200 and h["status"] == "ok" and h["node"] == "gpu-01"

    holder.doc = status_doc(started=OLD, finished=OLD)  # the loop stopped publishing long ago
    code, _, body = await get(srv.url + "/healthz")
    h = json.loads(body)
    assert code == 503 and h["status"] == "stale"
    assert "last pass finished" in h["reason"] and "stale after 300s" in h["reason"]
    # stale is about liveness only: the same document is still served as it is
    assert (await get(srv.url + "/status"))[0] == 200


async def test_healthz_stale_after_is_configurable(api_servers) -> None:
    srv = await api_servers(Holder(status_doc(started=OLD, finished=OLD)), stale_after=1e12)
    code, _, body = await get(srv.url + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"


async def test_healthz_while_a_pass_runs_uses_started_at_and_progress(api_servers) -> None:
    holder = Holder(status_doc(finished=None, done=10))  # a pass in progress, just started
    srv = await api_servers(holder)
    code, _, body = await get(srv.url + "/healthz")
    h = json.loads(body)
    assert code == 200 and h["passRunning"] is True

    holder.doc = status_doc(started=OLD, finished=None, done=10)  # started long ago...
    code, _, body = await get(srv.url + "/healthz")
    h = json.loads(body)
    assert code == 503 and "running pass started" in h["reason"]
    assert (await get(srv.url + "/healthz"))[0] == 503  # ...and nothing moved since

    holder.doc = status_doc(started=OLD, finished=None, done=20)  # ...but it is progressing
    code, _, body = await get(srv.url + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"


async def test_healthz_is_not_readiness(api_servers) -> None:
    """A node still fetching (Ready=False) is alive: readiness is the Ready condition."""
    doc = status_doc(done=5)
    ready = next(c for c in doc["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    srv = await api_servers(Holder(doc))
    assert (await get(srv.url + "/healthz"))[0] == 200


async def test_unknown_paths_404_and_other_methods_405(api_servers) -> None:
    srv = await api_servers(Holder(status_doc()))
    code, _, body = await get(srv.url + "/nope")
    assert code == 404 and "error" in json.loads(body)
    assert (await get(srv.url + "/nope/"))[0] == 404
    assert (await get(srv.url + "/"))[0] == 200  # the HTML page (DESIGN §6)
    for path in ("/status", "/healthz", "/metrics", "/cluster", "/"):
        code, headers, _ = await get(srv.url + path, "POST")
        assert code == 405, path
        assert "GET" in headers["Allow"]
    assert (await get(srv.url + "/status", "DELETE"))[0] == 405
    code, headers, body = await get(srv.url + "/status", "HEAD")
    assert code == 200 and body == b"" and headers["Content-Type"].startswith("application/json")


async def test_start_stop_twice_frees_the_port(api_servers) -> None:
    first = await api_servers(Holder(status_doc()))
    port = first.port
    await first.stop()
    await first.stop()  # idempotent

    again = ApiServer(f"127.0.0.1:{port}", Holder(status_doc()))
    try:
        for _ in range(2):
            await again.start()
            assert again.port == port
            assert (await get(again.url + "/status"))[0] == 200
            await again.stop()
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(again.url + "/status")
    finally:
        await again.stop()

    with socket.socket() as s:  # nothing holds it any more
        s.bind(("127.0.0.1", port))


async def test_start_twice_without_stop_is_an_error(api_servers) -> None:
    srv = await api_servers(Holder(None))
    with pytest.raises(RuntimeError, match="already listening"):
        await srv.start()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_listen(api_servers) -> None:
    srv = await api_servers(Holder(status_doc()), "[::1]:0")
    assert srv.url == f"http://[::1]:{srv.port}"
    assert (await get(srv.url + "/healthz"))[0] == 200


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert parse_listen("[::1]:7070") == ("::1", 7070)
    assert parse_listen(":7070") == (None, 7070)
    assert parse_listen("localhost:0") == ("localhost", 0)
    for bad in ("7070", "host:", "host:x", "::1:7070", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def test_logs_one_json_line_on_start_and_no_access_log(api_servers, capsys, caplog) -> None:
    logging_setup.configure(json=True)
    caplog.set_level(logging.DEBUG)
    srv = await api_servers(Holder(status_doc()))
    for path in ("/status", "/metrics", "/healthz", "/nope"):
        await get(srv.url + path)
    await srv.stop()
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.err.splitlines() if line.strip()]
    assert [(e["event"], e["url"]) for e in lines] == [("api listening", srv.url)]
    assert captured.out == ""
    assert not [r for r in caplog.records if r.name.startswith("aiohttp.access")]
