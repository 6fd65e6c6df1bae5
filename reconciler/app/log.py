"""structlog setup: JSON lines when stderr is not a terminal, readable lines when it is.

Every event carries `node` (bound by the CLI, `set_node`; also on threads, which do not inherit
context variables), and, where they apply, `dataset`, `version` and `revision`, as the call
sites bind them. The last processor before rendering is `redact`: a guard that replaces
credentials wherever they are in an event (its message, any field, nested values, a
formatted traceback) by `<redacted>`: header values of credential headers, bearer/basic
tokens, URL userinfo, signed-URL query parameters (`X-Amz-Signature=`, `sig=`, `token=`, ...),
well-known token shapes (Hugging Face, AWS access keys), and the values of environment
variables whose names say they are secrets (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*KEY*`...),
which is where `${NAME}` references in the state repo take credentials from.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Mapping, MutableMapping

import structlog

REDACTED = "<redacted>"

#: Field names whose values are credentials, whatever they hold.
_SECRET_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api[-_]?key|"
    r"x-amz-security-token|x-goog-signature|.*token|.*secret.*|.*password.*|passwd|"
    r"credentials?|signature|aws_secret_access_key)$")
#: Environment variables whose values are treated as secrets wherever they show up.
_SECRET_ENV = re.compile(r"(?i)(token|secret|passw|credential|api_?key|access_?key|auth|"
                         r"signature|session)")
_MIN_SECRET = 6  # shorter environment values are too likely to occur by chance

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://<redacted>@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@"), rf"\1{REDACTED}@"),
    # `Authorization: Bearer x`, `Cookie: x`, `X-Api-Key: x` in text (headers, curl lines, reprs)
    (re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|"
                r"x-amz-security-token)(['\"]?\s*[:=]\s*['\"]?)[^'\"\n,}]+"),
     rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # signed URLs and token-bearing query strings: the value of any sensitive parameter
    (re.compile(r"(?i)([?&;](?:x-amz-[a-z-]+|x-goog-[a-z-]+|sig|signature|se|sp|sv|skoid|"
                r"sktid|token|access_token|id_token|refresh_token|auth|key|api_key|apikey|"
                r"password|secret|credential|session|policy|key-pair-id)=)[^&#\s'\"<>]*"),
     rf"\1{REDACTED}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
)

_node: str | None = None


def set_node(node: str | None) -> None:
    """The node name every event carries (also events logged from threads)."""
    global _node
    _node = node


def _secrets_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    vals = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET}
    return tuple(sorted(vals, key=len, reverse=True))  # longest first: no partial leftovers


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, (bytes, bytearray)):
        return redact_text(bytes(value).decode("utf-8", "replace"), secrets)
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) and v
                    else _redact_value(v, secrets, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v, secrets, depth + 1) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}", secrets)
    return redact_text(str(value), secrets)  # anything else is rendered as its text anyway


class Redactor:
    """The structlog processor: redacts every field of the event (keys that name credentials
    lose their value entirely). Secrets from the environment are read once, at configure."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.secrets = _secrets_from_env(env)

    def __call__(self, logger: object, method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for k in list(event_dict):
            v = event_dict[k]
            if k != "event" and _SECRET_KEY.match(k) and v:
                event_dict[k] = REDACTED
            else:
                event_dict[k] = _redact_value(v, self.secrets)
        return event_dict


def _add_node(logger: object, method: str,
              event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _node is not None:
        event_dict.setdefault("node", _node)
    return event_dict


class _StderrLogger(structlog.PrintLogger):
    """Looks up sys.stderr on every call, so progress bars that wrap stderr keep logs tidy."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def msg(self, message: str) -> None:  # type: ignore[override]
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(json: bool | None = None, level: str | None = None,
              node: str | None = None) -> None:
    json = (not sys.stderr.isatty()) if json is None else json
    if node is not None:
        set_node(node)
    level_name = (level or os.environ.get("SYNCBIT_LOG_LEVEL", "info")).upper()
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_node,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor(),  # last before rendering: nothing reaches the output unredacted
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
