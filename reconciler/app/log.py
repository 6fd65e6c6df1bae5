"""structlog setup: JSON lines when stderr is not a terminal, readable lines when it is."""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _StderrLogger(structlog.PrintLogger):
    """Looks up sys.stderr on every call, so progress bars that wrap stderr keep logs tidy."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def msg(self, message: str) -> None:  # type: ignore[override]
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(json: bool | None = None, level: str | None = None) -> None:
    json = (not sys.stderr.isatty()) if json is None else json
    level_name = (level or os.environ.get("SYNCBIT_LOG_LEVEL", "info")).upper()
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
