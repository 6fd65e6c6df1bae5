"""The node's local config (DESIGN §4): where it is, what it may touch, how fast it may go."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.desired.schema_errors import position, schema_problems
from reconciler.desired.schemas import schema
from reconciler.core.units import parse_duration, parse_size

DEFAULT_PATH = Path("/etc/syncbit/config.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/syncbit")
DEFAULT_ORIGIN_CONNECTIONS = 64  # about what `aria2c -x16 -j4` opens (see the README)


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
    publish_roots: tuple[Path, ...]  # what file: sources may read (default: desiredState)
    listen_peer: str | None
    listen_api: str | None
    cache_limit: int | None
    bandwidth: Bandwidth
    grace_period: float  # seconds
    data_mode: int | None = None  # chmod of stored files; None: as written
    data_group: int | None = None  # chgrp of stored files (a gid); None: unchanged
    max_active_downloads: int = 4  # downloads running at once; the rest wait (Pending)
    min_free: int | float = 0.05  # cache.minFree: bytes, or a fraction of the filesystem
    origin_connections: int = DEFAULT_ORIGIN_CONNECTIONS  # concurrent origin range requests, all datasets together


def config_path(cli_value: str | None) -> Path:
    """`--config`, else `SYNCBIT_CONFIG`, else /etc/syncbit/config.yaml."""
    return Path(cli_value or os.environ.get("SYNCBIT_CONFIG") or DEFAULT_PATH)


def load_config(path: Path) -> NodeConfig:
    """Read, validate and convert the node config; ConfigError lines are
    `FILE:LINE:COL: FIELD: MESSAGE`."""
    try:
        text = _read_small_regular_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}:1:1: (file): node config not found "
                          "(use --config or SYNCBIT_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}:1:1: (file): cannot read node config: {e}") from None
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else f"{path}:1:1"
        raise ConfigError(f"{where}: (yaml): {_one_line(getattr(e, 'problem', None) or e)}"
                          ) from None
    except Exception as e:  # noqa: BLE001 - ruamel's constructors on hostile input
        # Found by fuzzing: `!!int 0x` (IndexError), `!!timestamp 2001-99-99` (ValueError).
        raise ConfigError(f"{path}:1:1: (yaml): invalid YAML: cannot construct a value "
                          f"({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1:1: (root): the node config must be a mapping")

    validator = jsonschema.Draft202012Validator(schema("config.schema.json"))
    try:
        plain = _plain(doc)
    except RecursionError:  # an alias inside itself: `&a {x: *a}` (found by fuzzing)
        raise ConfigError(f"{path}:1:1: (yaml): a value refers to itself through an alias"
                          ) from None
    errors = sorted(validator.iter_errors(plain), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(line for e in errors for line in _format(path, doc, e)))

    base = path.parent.resolve()

    def rel(p: str) -> Path:
        q = Path(str(p))
        return q if q.is_absolute() else base / q

    def convert(parse, keys: tuple[str, ...], default):  # type: ignore[no-untyped-def]
        node: object = doc
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        try:
            return parse(node)
        except ValueError as e:  # the schema's patterns are looser than the parsers
            line, col = _locate(doc, keys)
            raise ConfigError(f"{path}:{line}:{col}: {'.'.join(keys)}: {e}") from None

    state_dir = rel(doc.get("stateDir", str(DEFAULT_STATE_DIR)))
    listen = doc.get("listen") or {}
    return NodeConfig(
        source=path,
        node=str(doc["node"]),
        desired_state=rel(doc["desiredState"]),
        state_dir=state_dir,
        status_file=rel(doc["statusFile"]) if "statusFile" in doc else state_dir / "status.json",
        metrics_file=rel(doc["metricsFile"]) if "metricsFile" in doc else state_dir / "syncbit.prom",
        allowed_roots=tuple(str(rel(r)) for r in doc["allowedRoots"]),
        publish_roots=tuple(rel(r) for r in doc.get("publishRoots", [doc["desiredState"]])),
        listen_peer=str(listen["peer"]) if "peer" in listen else None,
        listen_api=str(listen["api"]) if "api" in listen else None,
        cache_limit=convert(parse_size, ("cache", "limit"), None),
        bandwidth=Bandwidth(*(convert(parse_size, ("bandwidth", k), 0)
                              for k in ("download", "upload", "origin"))),
        grace_period=convert(parse_duration, ("gracePeriod",), 600.0),
        data_mode=convert(lambda v: int(str(v), 8), ("dataMode",), None),
        data_group=convert(_gid, ("dataGroup",), None),
        max_active_downloads=int(doc.get("maxActiveDownloads", 4)),
        min_free=convert(parse_min_free, ("cache", "minFree"), 0.05),
        origin_connections=int(doc.get("originConnections", DEFAULT_ORIGIN_CONNECTIONS)),
    )


def parse_min_free(value: object) -> int | float:
    """cache.minFree: a size (bytes, "2GiB") or a percentage of the filesystem ("5%")."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}") from None
        if not 0 <= pct < 100:
            raise ValueError(f"invalid percentage {value!r}: from 0% to under 100%")
        return pct / 100
    return parse_size(value if isinstance(value, int) else text)


def _gid(value: object) -> int:
    """A group name or gid, resolved now: a typo fails at start, not at the first download."""
    import grp

    if isinstance(value, int):
        return value
    try:
        return grp.getgrnam(str(value)).gr_gid
    except KeyError:
        raise ValueError(f"no group named {value!r} on this machine") from None


MAX_CONFIG_BYTES = 1 << 20


def _read_small_regular_file(path: Path) -> str:
    """The config's text. A FIFO or device is refused without blocking on it, and a file over
    MAX_CONFIG_BYTES is refused: a node config is a page of YAML."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file: refused without reading it")
        if st.st_size > MAX_CONFIG_BYTES:
            raise OSError(f"{st.st_size} bytes, over the {MAX_CONFIG_BYTES}-byte cap")
        return f.read(MAX_CONFIG_BYTES + 1).decode("utf-8")


def _one_line(value: object) -> str:
    """A message on one line: the CLI prints one `FILE:LINE:COL: FIELD: MESSAGE` per line."""
    return " ".join(str(value).split()) or "syntax error"


def _plain(node: object) -> object:
    if isinstance(node, dict):
        return {_key(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _key(key: object) -> str:
    """A mapping key as the schema sees it: `{a: 1}: x` is the key '{"a": 1}', not
    'ordereddict([...])' (found by fuzzing)."""
    if isinstance(key, str):
        return key
    return json.dumps(_plain(key), default=str, ensure_ascii=False)


def _locate(doc: object, keys: Sequence[object]) -> tuple[int, int]:
    """1-based line and column of the key (or list item) at `keys`, or of its closest parent."""
    return position(doc, tuple(keys), False, (1, 1))


def _format(path: Path, doc: object, err: jsonschema.ValidationError) -> list[str]:
    """`FILE:LINE:COL: FIELD: MESSAGE` lines for one schema error, pointing at the key; the
    words are the state repo's (desired/schema_errors.py), FIELD is dotted (`allowedRoots.1`)."""
    out = []
    for p in schema_problems(err):
        line, col = _locate(doc, p.pos_path if p.pos_path is not None else p.path)
        keys = p.field_path if p.field_path is not None else p.path
        field = _one_line('.'.join(map(str, keys))) or "(root)"
        out.append(f"{path}:{line}:{col}: {field}: {_one_line(p.message)}")
    return out
