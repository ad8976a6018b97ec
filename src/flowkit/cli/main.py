# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this line)
"""``flowkit``: argument parsing, dispatch, and one-line errors with named exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..__about__ import __version__
from ..errors import FlowkitError
from ..logs import formatter
from ..redact import protect, redact, remember_environment
from . import (
    commands_control,
    commands_dashboard,
    commands_db,
    commands_dead,
    commands_deploys,
    commands_flows,
    commands_ops,
    commands_runs,
    commands_worker,
    exits,
    log_format,
)

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


class _BrokerUrls(argparse.Action):
    """``--broker-url`` given more than once: the nodes of a RabbitMQ cluster, joined by ``;``."""

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        given = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{given};{values}" if given else values)


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connections")
    group.add_argument(
        "--broker-url",
        metavar="URL",
        action=_BrokerUrls,
        help="memory:// or amqp://user:pass@host:5672/; a RabbitMQ cluster: the option once "
        "per node, or 'amqp://a/;amqp://b/' (default: $FLOWKIT_BROKER_URL, else "
        "broker_url in [tool.flowkit] of pyproject.toml, else memory://)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///file.db or postgresql://user@host/db "
        "(default: $FLOWKIT_DATABASE_URL, else database_url in [tool.flowkit] of "
        "pyproject.toml, else sqlite:///flowkit.db in that project's folder or, without "
        "a project, in the current directory)",
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
    commands_deploys.register(sub, common, _Formatter)
    commands_control.register(sub, common, _Formatter)
    commands_dead.register(sub, common, _Formatter)
    commands_ops.register(sub, common, _Formatter)
    commands_db.register(sub, common, _Formatter)
    commands_dashboard.register(sub, common, _Formatter)
    return parser


def _setup_logging(verbose: bool, kind: str = "text") -> None:
    root = logging.getLogger()
    chosen = formatter(kind)  # an unknown format is refused before anything runs
    if not root.handlers:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr)
        for handler in root.handlers:
            handler.setFormatter(chosen)
        if not verbose:
            # pika logs every connection step at INFO and each failed one at ERROR with a
            # traceback: flowkit says why in one line (runtime/amqp.py). Alembic logs
            # every migration check at INFO.
            logging.getLogger("pika").setLevel(logging.CRITICAL)
            logging.getLogger("alembic").setLevel(logging.WARNING)
    # Whatever is logged, URL passwords, keys and a running step's secrets are masked.
    remember_environment()
    for handler in root.handlers:
        protect(handler)


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete) and exit.

    ``eval "$(register-python-argcomplete flowkit)"`` makes the shell run ``flowkit``
    with ``_ARGCOMPLETE`` set; every other run never imports argcomplete.
    """
    import argcomplete

    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command; returns the exit code."""
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:
        _complete(parser)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if getattr(args, "quiet_logs", False):
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        _setup_logging(getattr(args, "verbose", False), log_format.chosen(args))
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
