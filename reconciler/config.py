"""The node's local config (DESIGN §4): where it is, what it may touch, how fast it may go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .schemas_path import schema
from .units import parse_duration, parse_size

DEFAULT_PATH = Path("/etc/syncbit/config.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/syncbit")


class ConfigError(Exception):
    """The node config is missing or wrong; the CLI exits 2 with this message."""


@dataclass(frozen=True)
class Bandwidth:
    download: int = 0  # bytes/s, 0 = unlimited
    upload: int = 0
    origin: int = 0


@dataclass(frozen=True)
class NodeConfig:
    source: Path  # the config file itself
    node: str
    desired_state: Path
    state_dir: Path
    status_file: Path
    metrics_file: Path
    allowed_roots: tuple[str, ...]
    listen_peer: str | None
    listen_api: str | None
    cache_limit: int | None
    bandwidth: Bandwidth
    grace_period: float  # seconds


def config_path(cli_value: str | None) -> Path:
    """`--config`, else `SYNCBIT_CONFIG`, else /etc/syncbit/config.yaml."""
    return Path(cli_value or os.environ.get("SYNCBIT_CONFIG") or DEFAULT_PATH)


def load_config(path: Path) -> NodeConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: node config not found (use --config or SYNCBIT_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read node config: {e}") from None
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: (yaml): {getattr(e, 'problem', None) or e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1:1: (root): the node config must be a mapping")

    validator = jsonschema.Draft202012Validator(schema("config.schema.json"))
    errors = sorted(validator.iter_errors(_plain(doc)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_format(path, doc, e) for e in errors))

    base = path.parent.resolve()

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    try:
        state_dir = rel(doc.get("stateDir", str(DEFAULT_STATE_DIR)))
        listen = doc.get("listen") or {}
        bw = doc.get("bandwidth") or {}
        cache = doc.get("cache") or {}
        return NodeConfig(
            source=path,
            node=str(doc["node"]),
            desired_state=rel(doc["desiredState"]),
            state_dir=state_dir,
            status_file=rel(doc["statusFile"]) if "statusFile" in doc else state_dir / "status.json",
            metrics_file=rel(doc["metricsFile"]) if "metricsFile" in doc else state_dir / "syncbit.prom",
            allowed_roots=tuple(str(rel(r)) for r in doc["allowedRoots"]),
            listen_peer=listen.get("peer"),
            listen_api=listen.get("api"),
            cache_limit=parse_size(cache["limit"]) if "limit" in cache else None,
            bandwidth=Bandwidth(*(parse_size(bw.get(k, 0)) for k in ("download", "upload", "origin"))),
            grace_period=parse_duration(doc.get("gracePeriod", "10m")),
        )
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def _plain(node: object) -> object:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _format(path: Path, doc: object, err: jsonschema.ValidationError) -> str:
    """`FILE:LINE:COL: FIELD: MESSAGE` for one schema error, pointing at the closest key."""
    line, col = 1, 1
    node = doc
    field = ".".join(str(p) for p in err.absolute_path) or "(root)"
    for part in err.absolute_path:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                if isinstance(node, dict):
                    line, col = lc.key(part)
                else:
                    line, col = lc.item(part)
                line, col = line + 1, col + 1
            node = node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            break
    message = err.message
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        if extra:
            field = ".".join([*map(str, err.absolute_path), extra[0]])
            lc = getattr(node, "lc", None)
            if lc is not None:
                line, col = (x + 1 for x in lc.key(extra[0]))
            message = f"unknown field {extra[0]!r}"
    return f"{path}:{line}:{col}: {field}: {message}"
