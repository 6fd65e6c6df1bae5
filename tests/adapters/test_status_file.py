"""reconciler.adapters.status_file: the NodeStatus document (DESIGN §6), its conditions and the metrics file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from reconciler.model.desired import ValidationError
from reconciler.desired.schemas import schema
from reconciler.adapters.status_file import (PHASES, DatasetStatus, NodeReport, Rejected, now_rfc3339,
                               pass_result, read_status, render_metrics, render_status,
                               write_status)

VALIDATOR = Draft202012Validator(schema("status.schema.json"),
                                 format_checker=Draft202012Validator.FORMAT_CHECKER)

T0, T1, T2, T3 = ("2024-05-01T10:00:00Z", "2024-05-01T10:00:05Z", "2024-05-01T10:01:00Z",
                  "2024-05-01T10:02:00Z")
REV_A, REV_B = "a" * 40, "b" * 40


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _valid(doc: dict[str, object]) -> None:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    # "format": "date-time" is only checked when rfc3339-validator is installed: check here
    lp = doc["lastPass"]
    assert isinstance(lp, dict) and isinstance(doc["conditions"], list)
    times = [lp["startedAt"], lp["finishedAt"], *(c["lastTransitionTime"] for c in doc["conditions"])]
    for t in times:
        assert t is None or RFC3339.fullmatch(t), t


def _ready(name: str = "llama") -> DatasetStatus:
    return DatasetStatus("Ready", "v1", f"/data/{name}", "c" * 64, bytes_total=100, bytes_done=100,
                         bytes_from_origin=40, bytes_from_peers=60, upload_rate=5, peers=2)


def _report(datasets: dict[str, DatasetStatus], *, rejected: Rejected | None = None,
            started: str = T0, finished: str | None = T1) -> NodeReport:
    return NodeReport(node="gpu-01", observed_revision=rejected.revision if rejected else REV_A,
                      last_applied_revision=REV_A, started_at=started, finished_at=finished,
                      result=pass_result(datasets, rejected is not None), datasets=datasets,
                      rejected=rejected)


def _conds(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    conds = doc["conditions"]
    assert isinstance(conds, list)
    assert [c["type"] for c in conds] == ["Ready", "Reconciling", "Stalled", "PlacementSatisfied"]
    return {c["type"]: c for c in conds}


REJECTED = Rejected(REV_B, [
    ValidationError("datasets/llama.yaml", 7, 5, "spec.placement.replicas",
                    "-1 is less than the minimum of 1"),
    ValidationError("nodes.yaml", 3, 1, "metadata.name", "must be a lowercase DNS label")])

REPORTS = {
    "Converged": lambda: _report({"llama": _ready(), "old": DatasetStatus("Draining", "v0"),
                                  "frozen": DatasetStatus("Suspended", "v3")}),
    "Progressing": lambda: _report({"llama": _ready(), "mistral": DatasetStatus(
        "Fetching", "v2", "/data/mistral", "d" * 64, bytes_total=1000, bytes_done=10,
        download_rate=123456)}),
    "Failed": lambda: _report({"llama": _ready(), "bad": DatasetStatus(
        "Failed", "v9", "/data/bad", None, error="origin returned 404")}),
    "Rejected": lambda: _report({"llama": _ready()}, rejected=REJECTED),
}


# -- pass_result ------------------------------------------------------------------------------


@pytest.mark.parametrize("phases, rejected, result", [
    ([], False, "Converged"),
    (["Ready"], False, "Converged"),
    (["Ready", "Suspended", "Draining"], False, "Converged"),
    (["Ready", "Pending"], False, "Progressing"),
    (["Fetching"], False, "Progressing"),
    (["Verifying", "Ready"], False, "Progressing"),
    (["Failed", "Fetching"], False, "Failed"),
    (["Failed", "Ready"], False, "Failed"),
    (["Ready"], True, "Rejected"),
    (["Failed"], True, "Rejected"),
    ([], True, "Rejected"),
])
def test_pass_result(phases: list[str], rejected: bool, result: str) -> None:
    datasets = {f"d{i}": DatasetStatus(p) for i, p in enumerate(phases)}  # type: ignore[arg-type]
    assert pass_result(datasets, rejected) == result


# -- the document -----------------------------------------------------------------------------


@pytest.mark.parametrize("result", list(REPORTS))
def test_render_status_validates_against_schema(result: str) -> None:
    report = REPORTS[result]()
    assert report.result == result
    doc = render_status(report)
    _valid(doc)
    assert doc["apiVersion"] == "syncbit/v1" and doc["kind"] == "NodeStatus"
    assert doc["node"] == "gpu-01"
    assert doc["lastPass"] == {"startedAt": T0, "finishedAt": T1, "result": result}
    assert doc["lastAppliedRevision"] == REV_A
    datasets = doc["datasets"]
    assert isinstance(datasets, dict)
    assert list(datasets) == sorted(report.datasets)
    assert set(datasets["llama"]) == {
        "phase", "version", "path", "infoHash", "bytesTotal", "bytesDone", "bytesFromOrigin",
        "bytesFromPeers", "downloadRate", "uploadRate", "peers", "error"}
    json.dumps(doc)  # serialisable as is


def test_rejected_document_carries_revision_and_errors() -> None:
    doc = render_status(REPORTS["Rejected"]())
    assert doc["observedRevision"] == REV_B
    assert doc["lastAppliedRevision"] == REV_A
    assert doc["rejected"] == {"revision": REV_B, "errors": [
        {"file": "datasets/llama.yaml", "line": 7, "field": "spec.placement.replicas",
         "message": "-1 is less than the minimum of 1"},
        {"file": "nodes.yaml", "line": 3, "field": "metadata.name",
         "message": "must be a lowercase DNS label"}]}
    assert doc["datasets"]["llama"]["phase"] == "Ready"  # type: ignore[index]
    for result in ("Converged", "Progressing", "Failed"):
        assert render_status(REPORTS[result]())["rejected"] is None


def test_pass_still_running_validates() -> None:
    doc = render_status(_report({"llama": DatasetStatus("Pending", "v1")}, finished=None))
    _valid(doc)
    assert doc["lastPass"]["finishedAt"] is None  # type: ignore[index]
    assert all(c["lastTransitionTime"] == T0 for c in _conds(doc).values())


def test_no_revision_yet_validates() -> None:
    r = NodeReport("gpu-01", None, None, T0, T1, "Converged")
    _valid(render_status(r))


# -- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize("result, ready, reconciling, stalled", [
    ("Converged", ("True", "Converged"), ("False", "Idle"), ("False", "Healthy")),
    ("Progressing", ("False", "Progressing"), ("True", "Progressing"), ("False", "Healthy")),
    ("Failed", ("False", "Failed"), ("False", "Idle"), ("True", "Failed")),
    ("Rejected", ("False", "RevisionRejected"), ("False", "Idle"), ("True", "RevisionRejected")),
])
def test_conditions(result: str, ready: tuple[str, str], reconciling: tuple[str, str],
                    stalled: tuple[str, str]) -> None:
    c = _conds(render_status(REPORTS[result]()))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ready
    assert (c["Reconciling"]["status"], c["Reconciling"]["reason"]) == reconciling
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == stalled
    for cond in c.values():
        assert isinstance(cond["message"], str) and cond["message"]
        assert cond["lastTransitionTime"] == T1


def test_condition_messages_name_the_datasets() -> None:
    c = _conds(render_status(REPORTS["Progressing"]()))
    assert "mistral" in c["Ready"]["message"] and "mistral" in c["Reconciling"]["message"]
    c = _conds(render_status(REPORTS["Failed"]()))
    assert "bad" in c["Ready"]["message"] and "bad" in c["Stalled"]["message"]
    c = _conds(render_status(REPORTS["Rejected"]()))
    msg = c["Ready"]["message"]
    assert REV_B in msg and REV_A in msg and "datasets/llama.yaml:7:5" in msg


def test_failed_while_others_fetch_is_stalled_and_reconciling() -> None:
    report = _report({"bad": DatasetStatus("Failed", error="x"),
                      "slow": DatasetStatus("Fetching")})
    assert report.result == "Failed"
    c = _conds(render_status(report))
    assert c["Ready"]["status"] == "False"
    assert c["Reconciling"]["status"] == "True"
    assert c["Stalled"]["status"] == "True"


def test_last_transition_time_kept_while_status_unchanged() -> None:
    first = render_status(REPORTS["Converged"]())  # all conditions at T1
    again = render_status(_report({"llama": _ready()}, started=T2, finished=T3), first)
    assert {c["lastTransitionTime"] for c in _conds(again).values()} == {T1}
    _valid(again)


def test_last_transition_time_updated_when_status_changes() -> None:
    first = render_status(REPORTS["Converged"]())
    progressing = _report({"llama": _ready(), "new": DatasetStatus("Fetching", "v1")},
                          started=T2, finished=T3)
    c = _conds(render_status(progressing, first))
    assert c["Ready"]["status"] == "False" and c["Ready"]["lastTransitionTime"] == T3
    assert c["Reconciling"]["status"] == "True" and c["Reconciling"]["lastTransitionTime"] == T3
    assert c["Stalled"]["status"] == "False" and c["Stalled"]["lastTransitionTime"] == T1


def test_last_transition_time_with_unusable_previous_document() -> None:
    for previous in ({}, {"conditions": None}, {"conditions": "garbage"},
                     {"conditions": ["x", 3]},
                     {"conditions": [{"type": "Ready", "status": "True"}]}):
        doc = render_status(REPORTS["Converged"](), previous)  # type: ignore[arg-type]
        _valid(doc)
        assert {c["lastTransitionTime"] for c in _conds(doc).values()} == {T1}


# -- metrics ----------------------------------------------------------------------------------


def _families(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


@pytest.mark.parametrize("result", list(REPORTS))
def test_render_metrics_parses(result: str) -> None:
    doc = render_status(REPORTS[result]())
    fams = _families(render_metrics(doc))
    assert fams
    for name, samples in fams.items():
        assert name.startswith("syncbit_"), name
        for sample_name, labels, _value in samples:
            assert sample_name.startswith("syncbit_")
            assert labels["node"] == "gpu-01"
    # one series per dataset and phase, 1 for the current phase
    phases = fams["syncbit_dataset_phase"]
    datasets = doc["datasets"]
    assert isinstance(datasets, dict)
    assert len(phases) == len(datasets) * len(PHASES)
    for name, d in datasets.items():
        current = {labels["phase"]: value for _n, labels, value in phases
                   if labels["dataset"] == name}
        assert set(current) == set(PHASES)
        assert current == {p: (1.0 if p == d["phase"] else 0.0) for p in PHASES}
    results = {labels["result"]: value for _n, labels, value in fams["syncbit_last_pass_result"]}
    assert results == {r: (1.0 if r == result else 0.0) for r in REPORTS}
    assert fams["syncbit_ready"][0][2] == (1.0 if result == "Converged" else 0.0)
    assert fams["syncbit_revision_rejected"][0][2] == (1.0 if result == "Rejected" else 0.0)


def test_metric_values() -> None:
    doc = render_status(REPORTS["Progressing"]())
    fams = _families(render_metrics(doc))

    def value(metric: str, dataset: str) -> float:
        return next(v for _n, labels, v in fams[metric] if labels["dataset"] == dataset)

    assert value("syncbit_dataset_bytes", "mistral") == 1000
    assert value("syncbit_dataset_bytes_done", "mistral") == 10
    assert value("syncbit_dataset_download_rate_bytes", "mistral") == 123456
    assert value("syncbit_dataset_origin_bytes", "llama") == 40
    assert value("syncbit_dataset_peer_bytes", "llama") == 60
    assert value("syncbit_dataset_peers", "llama") == 2
    ts = fams["syncbit_last_pass_timestamp_seconds"][0][2]
    assert ts == 1714557605.0  # T1 as Unix time
    info = fams["syncbit_info"][0][1]
    assert info["observed_revision"] == REV_A and info["applied_revision"] == REV_A


def test_metrics_without_revision_or_datasets() -> None:
    doc = render_status(NodeReport("gpu-01", None, None, T0, None, "Converged"))
    fams = _families(render_metrics(doc))
    info = fams["syncbit_info"][0][1]
    assert info["observed_revision"] == "" and info["applied_revision"] == ""
    assert fams.get("syncbit_dataset_phase", []) == []
    assert fams["syncbit_last_pass_timestamp_seconds"][0][2] == 1714557600.0  # T0: still running


# -- files ------------------------------------------------------------------------------------


def test_write_status_writes_both_files_and_round_trips(tmp_path: Path) -> None:
    status_file = tmp_path / "state" / "status.json"
    metrics_file = tmp_path / "textfile" / "syncbit.prom"
    doc = write_status(status_file, metrics_file, REPORTS["Progressing"]())
    assert read_status(status_file) == doc
    _valid(json.loads(status_file.read_text()))
    assert metrics_file.read_bytes() == render_metrics(doc)
    assert "syncbit_dataset_phase" in _families(metrics_file.read_bytes())
    leftovers = [p.name for d in (status_file.parent, metrics_file.parent) for p in d.iterdir()
                 if p.name.startswith(".")]
    assert leftovers == [".status.json.reserve"]  # room kept for writing on a full disk


def test_a_full_disk_gives_up_the_reserve_to_write_the_status(tmp_path: Path, monkeypatch) -> None:
    import errno

    from reconciler.adapters import atomic, status_file as sf

    status = tmp_path / "status.json"
    write_status(status, tmp_path / "m.prom", REPORTS["Progressing"]())
    reserve = tmp_path / ".status.json.reserve"
    assert reserve.stat().st_blocks * 512 >= sf.RESERVE_BYTES
    real = atomic.write_bytes

    def full_unless_reserve_gone(path, data, mode=0o644):  # type: ignore[no-untyped-def]
        if reserve.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(atomic, "write_bytes", full_unless_reserve_gone)
    monkeypatch.setattr(sf, "_keep_reserve", lambda p: None)
    doc = write_status(status, tmp_path / "m.prom", REPORTS["Progressing"]())
    assert read_status(status) == doc and not reserve.exists()


def test_write_status_keeps_transition_times_from_the_file(tmp_path: Path) -> None:
    status_file, metrics_file = tmp_path / "status.json", tmp_path / "syncbit.prom"
    write_status(status_file, metrics_file, REPORTS["Converged"]())
    doc = write_status(status_file, metrics_file,
                       _report({"llama": _ready()}, started=T2, finished=T3))
    assert {c["lastTransitionTime"] for c in _conds(doc).values()} == {T1}
    doc = write_status(status_file, metrics_file,
                       _report({"bad": DatasetStatus("Failed", error="boom")}, started=T2,
                               finished=T3))
    c = _conds(doc)
    assert c["Stalled"]["lastTransitionTime"] == T3 and c["Reconciling"]["lastTransitionTime"] == T1
    assert read_status(status_file) == doc


def test_write_status_over_a_corrupt_file(tmp_path: Path) -> None:
    status_file, metrics_file = tmp_path / "status.json", tmp_path / "syncbit.prom"
    status_file.write_text("{not json")
    doc = write_status(status_file, metrics_file, REPORTS["Converged"]())
    _valid(doc)
    assert read_status(status_file) == doc


def test_read_status_missing_or_corrupt(tmp_path: Path) -> None:
    assert read_status(tmp_path / "missing.json") is None
    assert read_status(tmp_path / "no" / "dir" / "status.json") is None
    bad = tmp_path / "bad.json"
    for content in (b"", b"{truncated", b"[1, 2]", b"\xff\xfe\x00garbage", b"null"):
        bad.write_bytes(content)
        assert read_status(bad) is None, content
    assert read_status(tmp_path) is None  # a directory


def test_now_rfc3339() -> None:
    assert RFC3339.fullmatch(now_rfc3339())
    _valid(render_status(NodeReport("gpu-01", REV_A, REV_A, now_rfc3339(), now_rfc3339(),
                                    "Converged")))


def test_status_command_before_any_pass_says_so_and_exits_0(tmp_path: Path) -> None:
    from harness import NodeHome, run_cli

    home = NodeHome("n1", tmp_path / "n1", tmp_path / "state").write_config()
    r = run_cli("status", "--config", str(home.config))
    assert r.returncode == 0 and "no status yet" in r.stderr and r.stdout == ""
    r = run_cli("status", "--json", "--config", str(home.config))
    assert r.returncode == 0 and r.stdout.strip() == "null"


# -- NodeMetrics: the process's registry behind metricsFile and /metrics ------------------------

def _samples(body: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _one(samples: dict, name: str, **labels: str) -> float | None:
    vals = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(vals) <= 1, (name, labels, vals)
    return vals[0] if vals else None


def test_node_metrics_time_each_finished_pass_once_and_count_it_by_result(tmp_path) -> None:
    from reconciler.adapters.status_file import NodeMetrics
    m = NodeMetrics(tmp_path)
    m.pass_started(T0)
    running = render_status(_report({"llama": _ready()}, started=T0, finished=None), None)
    s = _samples(m.render(running))
    assert _one(s, "syncbit_pass_duration_seconds_count") == 0  # not finished yet
    assert _one(s, "syncbit_passes_total", result="Converged") == 0
    done = render_status(_report({"llama": _ready()}, started=T0, finished=T1), None)
    m.render(done)
    s = _samples(m.render(dict(done)))  # the same pass seen again: counted once
    assert _one(s, "syncbit_pass_duration_seconds_count") == 1
    assert _one(s, "syncbit_passes_total", result="Converged") == 1
    # another pass that starts within the same second: counted too
    m.pass_started(T0)
    m.render(render_status(_report({"llama": _ready()}, started=T0, finished=None), None))
    s = _samples(m.render(dict(done)))
    assert _one(s, "syncbit_passes_total", result="Converged") == 2
    m.pass_started(T0)  # announced again but not finished yet, then seen twice: once
    s = _samples(m.render(dict(done)))
    s = _samples(m.render(dict(done)))
    assert _one(s, "syncbit_passes_total", result="Converged") == 3
    # a pass not announced with pass_started: timed from its document (whole seconds)
    rej = Rejected(REV_B, [ValidationError("ds.yaml", 3, 1, "spec", "bad")])
    s = _samples(m.render(render_status(
        _report({"llama": _ready()}, rejected=rej, started=T2, finished=T3), None)))
    assert _one(s, "syncbit_pass_duration_seconds_count") == 4
    assert _one(s, "syncbit_pass_duration_seconds_sum") == pytest.approx(60.0, abs=1.0)
    assert _one(s, "syncbit_passes_total", result="Rejected") == 1
    assert _one(s, "syncbit_revision_rejected") == 1
    assert _one(s, "syncbit_revision_rejected_info", revision=REV_B, errors="1") == 1
    assert _one(s, "syncbit_dataset_ready", dataset="llama", version="v1") == 1
    assert _one(s, "syncbit_dataset_origin_bytes_total", dataset="llama", version="v1") == 40
    assert _one(s, "syncbit_store_bytes") == 0 and (_one(s, "syncbit_store_free_bytes") or 0) > 0


def test_write_status_with_node_metrics_writes_its_registry(tmp_path) -> None:
    from reconciler.adapters.status_file import NodeMetrics
    m = NodeMetrics(tmp_path)
    doc = write_status(tmp_path / "status.json", tmp_path / "syncbit.prom",
                       _report({"llama": _ready()}), m)
    body = (tmp_path / "syncbit.prom").read_bytes()
    assert body == m.render(doc)
    assert b"syncbit_pass_duration_seconds_bucket" in body and b"syncbit_passes_total" in body


@pytest.mark.parametrize("message, reason", [
    ("http source: http://o/a.bin: 404 Not Found for a.bin", "http_4xx"),
    ("s3: HTTP 503 Slow Down", "http_5xx"),
    ("the origin sent 400 of 500 bytes from offset 0", "short_read"),
    ("timeout after 30s", "timeout"),
    ("Cannot connect to host o:443", "connection"),
    ("served bytes that failed a hash check", "hash_mismatch"),
    ("something else", "other"),
])
def test_origin_error_reasons_are_a_few_fixed_words(message: str, reason: str) -> None:
    from reconciler.adapters.origin_errors import REASONS, reason_of
    assert reason_of(message) == reason and reason in REASONS
