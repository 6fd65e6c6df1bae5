"""reconciler.adapters.config: the node's local config (DESIGN §4) and its `FILE:LINE:COL: FIELD: MESSAGE` errors."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.config import (DEFAULT_PATH, Bandwidth, ConfigError, config_path, load_config)

MINIMAL = """\
node: gpu-01
desiredState: /srv/syncbit-state
allowedRoots: [/data]
"""

FULL = """\
# every key of DESIGN §4
node: gpu-01                     # required
desiredState: state              # relative: against this file's directory
stateDir: var/lib/syncbit
statusFile: /run/syncbit/status.json
metricsFile: textfile/syncbit.prom
allowedRoots: [/data, models]
listen: {peer: "0.0.0.0:6881", api: "127.0.0.1:7070"}
cache: {limit: 2TiB}
bandwidth: {download: 200MiB, upload: 1000, origin: "10MB"}
gracePeriod: 1h30m
"""

# FILE:LINE:COL: FIELD: MESSAGE
LINE_RE = re.compile(r"(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<field>\S+): (?P<message>.+)")


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def _error(path: Path) -> list[dict[str, str]]:
    """Load a bad config; every line of the error, parsed, all naming `path`."""
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert lines
    parsed = []
    for line in lines:
        m = LINE_RE.fullmatch(line)
        assert m, f"not FILE:LINE:COL: FIELD: MESSAGE: {line!r}"
        assert m["file"] == str(path)
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1
        parsed.append(m.groupdict())
    return parsed


# -- good configs -----------------------------------------------------------------------------


def test_full_config(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL, "etc/config.yaml")
    etc = (tmp_path / "etc").resolve()
    cfg = load_config(path)
    assert cfg.source == path
    assert cfg.node == "gpu-01"
    assert cfg.desired_state == etc / "state"
    assert cfg.state_dir == etc / "var/lib/syncbit"
    assert cfg.status_file == Path("/run/syncbit/status.json")
    assert cfg.metrics_file == etc / "textfile/syncbit.prom"
    assert cfg.allowed_roots == ("/data", str(etc / "models"))
    assert cfg.listen_peer == "0.0.0.0:6881" and cfg.listen_api == "127.0.0.1:7070"
    assert type(cfg.listen_peer) is str and type(cfg.listen_api) is str
    assert cfg.cache_limit == 2 * 1024**4
    assert cfg.bandwidth == Bandwidth(download=200 * 1024**2, upload=1000, origin=10_000_000)
    assert cfg.grace_period == 5400.0


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.state_dir == Path("/var/lib/syncbit")
    assert cfg.status_file == Path("/var/lib/syncbit/status.json")
    assert cfg.metrics_file == Path("/var/lib/syncbit/syncbit.prom")
    assert cfg.grace_period == 600.0
    assert cfg.bandwidth == Bandwidth(0, 0, 0)
    assert cfg.cache_limit is None
    assert cfg.listen_peer is None and cfg.listen_api is None
    assert cfg.allowed_roots == ("/data",)


def test_status_and_metrics_default_under_state_dir(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL + "stateDir: st\n"))
    base = tmp_path.resolve()
    assert cfg.state_dir == base / "st"
    assert cfg.status_file == base / "st" / "status.json"
    assert cfg.metrics_file == base / "st" / "syncbit.prom"


def test_relative_paths_do_not_depend_on_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, FULL, "etc/config.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../etc/config.yaml"))
    assert cfg.desired_state == (tmp_path / "etc" / "state").resolve()
    assert cfg.desired_state.is_absolute() and cfg.state_dir.is_absolute()
    assert dataclasses.replace(cfg, source=path) == load_config(path)


@pytest.mark.parametrize("text, expected", [
    ("bandwidth: {download: 0}\n", Bandwidth(0, 0, 0)),
    ("bandwidth: {download: 512}\n", Bandwidth(512, 0, 0)),
    ("bandwidth: {upload: 1.5GiB}\n", Bandwidth(0, 3 * 2**29, 0)),
    ("bandwidth: {origin: 10GB}\n", Bandwidth(0, 0, 10**10)),
])
def test_sizes(tmp_path: Path, text: str, expected: Bandwidth) -> None:
    assert load_config(_write(tmp_path, MINIMAL + text)).bandwidth == expected


@pytest.mark.parametrize("text, seconds", [
    ("gracePeriod: 30s\n", 30.0),
    ("gracePeriod: 250ms\n", 0.25),
    ("gracePeriod: 2d\n", 172800.0),
    ("gracePeriod: 0\n", 0.0),
    ("gracePeriod: 90\n", 90.0),
    ("gracePeriod: 1.5\n", 1.5),
])
def test_durations(tmp_path: Path, text: str, seconds: float) -> None:
    assert load_config(_write(tmp_path, MINIMAL + text)).grace_period == seconds


# -- where the config is ----------------------------------------------------------------------


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCBIT_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_PATH == Path("/etc/syncbit/config.yaml")
    monkeypatch.setenv("SYNCBIT_CONFIG", "/env/config.yaml")
    assert config_path(None) == Path("/env/config.yaml")
    assert config_path("/cli/config.yaml") == Path("/cli/config.yaml")
    monkeypatch.delenv("SYNCBIT_CONFIG")
    assert config_path("/cli/config.yaml") == Path("/cli/config.yaml")


# -- errors -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    [e] = _error(path)
    assert "not found" in e["message"]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "node: gpu-01\ndesiredState: /srv\nallowedRoots: [/data\n")
    [e] = _error(path)
    assert e["field"] == "(yaml)"
    assert int(e["line"]) >= 3


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "node: gpu-02\n")
    [e] = _error(path)
    assert e["line"] == "4" and "duplicate" in e["message"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    [e] = _error(_write(tmp_path, text))
    assert e["field"] == "(root)" and "mapping" in e["message"]


@pytest.mark.parametrize("key", ["node", "desiredState", "allowedRoots"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(key)) + "\n"
    [e] = _error(_write(tmp_path, text))
    assert e["field"] == key
    assert key in e["message"] and "required" in e["message"]


def test_unknown_key(tmp_path: Path) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + "gracePeriode: 5m\n"))
    assert (e["line"], e["col"], e["field"]) == ("4", "1", "gracePeriode")
    assert "gracePeriode" in e["message"] and "unknown" in e["message"]


def test_unknown_nested_keys(tmp_path: Path) -> None:
    errs = _error(_write(tmp_path, MINIMAL + "bandwidth:\n  download: 0\n  uplaod: 1\n  zz: 2\n"))
    assert [(e["line"], e["col"], e["field"]) for e in errs] == [
        ("6", "3", "bandwidth.uplaod"), ("7", "3", "bandwidth.zz")]
    assert "'uplaod'" in errs[0]["message"]


def test_bad_size_string(tmp_path: Path) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + "bandwidth:\n  download: fast\n"))
    assert (e["line"], e["col"], e["field"]) == ("5", "3", "bandwidth.download")
    assert "fast" in e["message"] and "200MiB" in e["message"]


def test_size_the_schema_accepts_but_the_parser_does_not(tmp_path: Path) -> None:
    """`5kiB` matches the schema's loose pattern but is no unit: still located and named."""
    [e] = _error(_write(tmp_path, MINIMAL + "bandwidth: {origin: 1, download: 5kiB}\n"))
    assert (e["line"], e["field"]) == ("4", "bandwidth.download")
    assert "5kiB" in e["message"]
    [e] = _error(_write(tmp_path, MINIMAL + "cache:\n  limit: 1.5\n"))
    assert (e["line"], e["col"], e["field"]) == ("5", "3", "cache.limit")


@pytest.mark.parametrize("value", ["10 minutes", "-5m", "5x", "m10", "true"])
def test_bad_duration(tmp_path: Path, value: str) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + f"gracePeriod: {value}\n"))
    assert (e["line"], e["col"], e["field"]) == ("4", "1", "gracePeriod")
    assert "10m" in e["message"]  # says what a duration looks like


@pytest.mark.parametrize("text, field, line", [
    ("allowedRoots: /data\n", "allowedRoots", "3"),
    ("allowedRoots: [/data, 7]\n", "allowedRoots.1", "3"),
    ("allowedRoots: []\n", "allowedRoots", "3"),
    ("desiredState: [a, b]\n", "desiredState", "2"),
    ("node: 12\n", "node", "1"),
    ("node: GPU_01\n", "node", "1"),
])
def test_wrong_type(tmp_path: Path, text: str, field: str, line: str) -> None:
    key = text.split(":")[0]
    base = [ln for ln in MINIMAL.splitlines() if not ln.startswith(key)]
    lines = {"node": 0, "desiredState": 1, "allowedRoots": 2}
    base.insert(lines[key], text.rstrip("\n"))
    [e] = _error(_write(tmp_path, "\n".join(base) + "\n"))
    assert (e["field"], e["line"]) == (field, line)


def test_bad_listen_address(tmp_path: Path) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + "listen:\n  api: localhost\n"))
    assert (e["line"], e["col"], e["field"]) == ("5", "3", "listen.api")
    assert "host:port" in e["message"]


def test_several_errors_one_per_line(tmp_path: Path) -> None:
    errs = _error(_write(tmp_path, "node: gpu-01\nallowedRoots: /data\nbogus: 1\n"))
    assert {e["field"] for e in errs} == {"desiredState", "allowedRoots", "bogus"}


# -- the real CLI -----------------------------------------------------------------------------


def test_cli_exits_2_on_config_error(tmp_path: Path) -> None:
    bad = _write(tmp_path, MINIMAL + "bandwidth: {download: fast}\n")
    r = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--config", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{bad}:4:13: bandwidth.download: " in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_exits_2_on_missing_config(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    r = subprocess.run([sys.executable, "-m", "reconciler", "plan"], capture_output=True,
                       text=True, timeout=120,
                       env={**os.environ, "SYNCBIT_CONFIG": str(missing)})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{missing}:1:1: (file): " in r.stderr
    assert "Traceback" not in r.stderr


def test_publish_roots_default_to_the_state_repo_and_data_mode_and_group(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.publish_roots == (Path("/srv/syncbit-state"),)
    assert (cfg.data_mode, cfg.data_group) == (None, None)
    cfg = load_config(_write(tmp_path, MINIMAL + 'publishRoots: [/data/ckpt, ckpt]\n'
                                                 'dataMode: "0640"\ndataGroup: 65534\n'))
    assert cfg.publish_roots == (Path("/data/ckpt"), tmp_path.resolve() / "ckpt")
    assert (cfg.data_mode, cfg.data_group) == (0o640, 65534)
    assert load_config(_write(tmp_path, MINIMAL + "publishRoots: []\n")).publish_roots == ()
    assert load_config(_write(tmp_path, MINIMAL + "dataGroup: root\n")).data_group == 0


def test_bad_data_mode_and_unknown_data_group(tmp_path: Path) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + "dataMode: 640\n"))  # YAML 1.2: the integer 640
    assert (e["field"], e["line"]) == ("dataMode", "4") and '"0640"' in e["message"]
    [e] = _error(_write(tmp_path, MINIMAL + "dataGroup: no-such-group-here\n"))
    assert (e["field"], e["line"]) == ("dataGroup", "4")
    assert "no group named 'no-such-group-here'" in e["message"]


def test_a_fifo_as_config_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    [e] = _error(fifo)  # would block forever on open(), read() if it were read
    assert e["field"] == "(file)" and "not a regular file" in e["message"]


@pytest.mark.parametrize("text,expected", [
    ("", 0.05), ("cache: {minFree: 0}\n", 0), ("cache: {minFree: 10GiB}\n", 10 * 1024**3),
    ('cache: {minFree: "12.5%"}\n', 0.125), ("cache: {minFree: 1%}\n", 0.01)])
def test_min_free(tmp_path: Path, text: str, expected: int | float) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL + text))
    assert cfg.min_free == expected and type(cfg.min_free) is type(expected)


@pytest.mark.parametrize("value", ['"150%"', "lots"])
def test_bad_min_free_is_located(tmp_path: Path, value: str) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + f"cache:\n  minFree: {value}\n"))
    assert (e["line"], e["field"]) == ("5", "cache.minFree")


def test_origin_connections(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, MINIMAL)).origin_connections == 64
    cfg = load_config(_write(tmp_path, MINIMAL + "originConnections: 8\n"))
    assert cfg.origin_connections == 8 and type(cfg.origin_connections) is int


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "many", "true", "[4]", "100000"])
def test_bad_origin_connections_is_located(tmp_path: Path, value: str) -> None:
    [e] = _error(_write(tmp_path, MINIMAL + f"# comment\noriginConnections: {value}\n"))
    assert (e["line"], e["field"]) == ("5", "originConnections")
