"""``flowkit``: argument parsing, dispatch, and one-line errors with named exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..__about__ import __version__
from ..errors import FlowkitError
from ..redact import protect, redact, remember_environment
from . import (
    commands_control,
    commands_dashboard,
    commands_db,
    commands_dead,
    commands_flows,
    commands_ops,
    commands_runs,
    commands_worker,
    exits,
)

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connections")
    group.add_argument(
        "--broker-url",
        metavar="URL",
        help="memory:// or amqp://user:pass@host:5672/ (default: $FLOWKIT_BROKER_URL or memory://)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///file.db or postgresql://user@host/db "
        "(default: $FLOWKIT_DATABASE_URL or sqlite:///flowkit.db)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return common


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Durable, typed workflows on Dramatiq: run workers, submit and inspect runs.",
        epilog=(
            "examples:\n"
            "  flowkit dev examples/exceptions/app.py:pipeline\n"
            "  flowkit worker myapp.flows:app --processes 2 --threads 8\n"
            '  flowkit submit myapp.flows:pipeline --data \'{"tenant_id": "t1"}\'\n'
            "  flowkit runs list --status failed\n\n" + exits.TABLE
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands_worker.register(sub, common, _Formatter)
    commands_runs.register(sub, common, _Formatter)
    commands_flows.register(sub, common, _Formatter)
    commands_control.register(sub, common, _Formatter)
    commands_dead.register(sub, common, _Formatter)
    commands_ops.register(sub, common, _Formatter)
    commands_db.register(sub, common, _Formatter)
    commands_dashboard.register(sub, common, _Formatter)
    return parser


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if not verbose:
            # pika logs every connection step, alembic every migration check, at INFO.
            logging.getLogger("pika").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
    # Whatever is logged, URL passwords, keys and a running step's secrets are masked.
    remember_environment()
    for handler in root.handlers:
        protect(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if getattr(args, "quiet_logs", False):
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _setup_logging(getattr(args, "verbose", False))
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("flowkit: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except BrokenPipeError:
        # `flowkit runs list | head`: the reader left; Python's recommended exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exits.OK
    except FlowkitError as exc:
        if os.environ.get("FLOWKIT_DEBUG"):
            raise
        print(f"flowkit: error: {redact(str(exc))}", file=sys.stderr)
        return exits.for_error(exc)
    except Exception as exc:
        if os.environ.get("FLOWKIT_DEBUG"):
            raise
        print(
            f"flowkit: unexpected error: {type(exc).__name__}: {redact(str(exc))} "
            "(set FLOWKIT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return exits.UNEXPECTED
