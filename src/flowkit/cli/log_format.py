"""``--log-format``: text or JSON log lines, on the console and in ``--log-file`` alike."""

from __future__ import annotations

import argparse
import os

from ..logs import FORMATS

__all__ = ["add_option", "chosen"]

ENV = "FLOWKIT_LOG_FORMAT"


def add_option(p: argparse.ArgumentParser) -> None:
    """Add ``--log-format`` to a command that logs as it serves (worker, dev, scheduler)."""
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="text (the default) or json: one JSON object per line with time, level, "
        "logger, message and, where there is one, run_id, step, attempt, trace_id "
        f"and span_id; also for --log-file (default: ${ENV} or text)",
    )


def chosen(args: argparse.Namespace) -> str:
    """The format asked for: ``--log-format``, else ``$FLOWKIT_LOG_FORMAT``, else ``text``.

    An unknown ``$FLOWKIT_LOG_FORMAT`` is refused by :func:`flowkit.logs.formatter`.
    """
    given: str | None = getattr(args, "log_format", None)
    return given or os.environ.get(ENV, "").strip().lower() or "text"
