"""Fuzzing the node-config loader (issue 11 item 10): any bytes in the config file give a
`NodeConfig` or a `ConfigError` whose lines are `FILE:LINE:COL: FIELD: MESSAGE`, never another
exception (the CLI turns ConfigError into exit code 2; anything else is a traceback).

Bounded: few examples, no deadline, each test well under 10 s on a 2-core machine.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from reconciler.adapters.config import ConfigError, NodeConfig, load_config

pytestmark = pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")

LINE_RE = re.compile(r".+?:\d+:\d+: .+: .+")  # FIELD may quote a key with spaces

FRAGMENTS = [
    "node: gpu-01", "node: [a]", "node: GPU_01", "node: ''", "desiredState: /srv/state",
    "desiredState: state", "desiredState: 1", "stateDir: var", "stateDir: ~",
    "statusFile: s.json", "metricsFile: m.prom", "allowedRoots: [/data]", "allowedRoots: []",
    "allowedRoots: [/data, /data]", "allowedRoots: /data", "allowedRoots:", "  - /data",
    "  - [x]", "listen: {peer: \"0.0.0.0:6881\", api: \"127.0.0.1:7070\"}", "listen: 1",
    "listen: {peer: 1}", "cache: {limit: 2TiB}", "cache: {limit: 2XB}", "cache: {limit: -1}",
    "cache: {minFree: 5%}", "cache: {limit: 1e999}", "bandwidth: {download: 200MiB}",
    "bandwidth: {upload: 99999999999999999999999999TiB}", "bandwidth: {origin: 0.5}",
    "bandwidth: {download: '   '}", "gracePeriod: 10m", "gracePeriod: 1h30m",
    "gracePeriod: -5s", "gracePeriod: 99999999999999999999999h", "gracePeriod: 1e400s",
    "gracePeriod: 10", "gracePeriod: ''", "extra: 1", "---", "...", "&a {x: *a}", "k: *a",
    "<<: {node: x}", "<<: *a", "? [a, b]", ": c", "!!binary aGk=", "k: !!int 0x",
    "k: !!timestamp 2001-99-99", "k: !!float x", "%YAML 1.1", "\t", "'", "{", "[", "- a",
    "node: !!set {a}", "# c", "", "node: gpu-01 # c", "é: \u2028", "1: 2", "null: x",
    "[1]: x", "{a: 1}: x", "\"a\\nb\": 1", "listen: {\"p\\u2028\": 1}", "node: \"\\u0000\"", "gracePeriod: !!binary aGk=",
]

yaml_ish = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("\n".join)


def check_load(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="syncbit-cfg-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        try:
            cfg = load_config(path)
        except ConfigError as e:
            lines = str(e).splitlines()
            assert lines, "a ConfigError says what is wrong"
            for line in lines:
                assert LINE_RE.fullmatch(line), line
                assert line.startswith(f"{path}:")
            return
        assert isinstance(cfg, NodeConfig)


@settings(max_examples=250, deadline=None)
@given(yaml_ish)
def test_yaml_ish_configs(text: str) -> None:
    check_load(text.encode())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check_load(data)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check_load(text.encode("utf-8", "surrogatepass"))
