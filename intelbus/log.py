"""structlog configuration for every intelbus process.

Logs are structured (key/value) and must never carry record contents, keys or plaintext. Callers log
ids, counts, sizes, offsets and reason codes only. :func:`configure` renders JSON lines when stderr
is not a terminal (for log shippers) and a readable console format when it is.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now* (test runners and CLIs swap it and close the old one)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog once per process. Idempotent; later calls only change the level."""
    global _configured  # noqa: PLW0603 - one process-wide logging configuration
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    render_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if render_json
        # NO_COLOR (no-color.org): plain text even on a terminal.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=not _configured,
    )
    _configured = True


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
