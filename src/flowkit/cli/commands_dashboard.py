"""``flowkit dashboard``: the web dashboard and its HTTP API, served by uvicorn in-process.

Starlette, Jinja2 and uvicorn are the optional ``dashboard`` extra: they are
imported only when the command runs, so that every other command starts
without them (and this one says how to install them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..app import App
from ..errors import ConfigurationError
from ..redact import remember
from . import exits
from .apps import add_app_arguments, cli_app

TOKEN_ENV = "FLOWKIT_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 12
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
EXTRA = ("starlette", "jinja2", "uvicorn", "python_multipart")


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    d = sub.add_parser(
        "dashboard",
        parents=[common],
        formatter_class=fmt,
        help="serve the web dashboard and its HTTP API",
        description="Serve the web dashboard (runs, flows, queues, workers, dead letters) "
        "and its JSON API. It binds 127.0.0.1 unless --host says otherwise; any other host "
        f"needs a token (${TOKEN_ENV} or --token-file), which reads then need too. Actions "
        "always need the token, unless --no-auth; without a token and without --no-auth the "
        "dashboard is read-only. It runs no steps and never creates the database schema. "
        "Needs the dashboard extra: pip install '.[dashboard]' from flowkit's source.",
        epilog=(
            "examples:\n"
            "  flowkit dashboard examples/approvals/app.py:app\n"
            f"  {TOKEN_ENV}=... flowkit dashboard myapp:app --host 0.0.0.0 --port 8080\n"
            "  flowkit dashboard --read-only --database-url postgresql://db/flowkit\n"
            "  flowkit dashboard myapp:app --no-auth"
        ),
    )
    add_app_arguments(
        d,
        "the App whose flows to show; without one, the runs, workers and dead letters "
        "of the database",
    )
    d.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8080, help="the port (default 8080)")
    d.add_argument("--read-only", action="store_true", help="offer no action at all")
    d.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        help=f"a file holding the token (default: ${TOKEN_ENV})",
    )
    d.add_argument(
        "--no-auth",
        action="store_true",
        help="actions need no token (127.0.0.1 only: anyone on this machine can act)",
    )
    d.set_defaults(handler=dashboard)


def _missing_extra() -> list[str]:
    return [m for m in EXTRA if importlib.util.find_spec(m) is None]


def _token(args: argparse.Namespace) -> str | None:
    path: Path | None = args.token_file
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"--token-file {args.token_file}: cannot read it: {exc.strerror}"
            ) from None
        where = f"--token-file {args.token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"{where}: the token must be at least {MIN_TOKEN_LENGTH} characters"
        )
    return token


def _app(args: argparse.Namespace) -> App:
    # The dashboard runs no steps and creates no schema: no worker threads here.
    return cli_app(args, "flowkit-dashboard", need_flows=False)


def missing_extra_hint() -> str | None:
    """The one-line install hint when the dashboard extra is missing, else ``None``."""
    missing = _missing_extra()
    if not missing:
        return None
    return (
        f"flowkit: error: the dashboard needs its extra ({', '.join(missing)} missing): "
        "pip install '.[dashboard]' from flowkit's source"
    )


def dashboard(args: argparse.Namespace) -> int:
    hint = missing_extra_hint()
    if hint is not None:
        print(hint, file=sys.stderr)
        return exits.USAGE
    if not 0 < args.port < 65536:
        raise ConfigurationError("--port must be in 1..65535")
    local = args.host in LOCAL_HOSTS
    token = _token(args)
    if args.no_auth:
        if not local:
            raise ConfigurationError("--no-auth is for 127.0.0.1 only: give the others a token")
        token = None
    elif not local and token is None:
        raise ConfigurationError(
            f"binding to {args.host} needs a token: set ${TOKEN_ENV} or pass --token-file PATH"
        )
    if token is not None:
        remember(token)  # never in a log line
    read_only = args.read_only or (token is None and not args.no_auth)
    app = _app(args)
    try:
        return _serve(args, app, token, read_only=read_only, reads_need_token=not local)
    finally:
        app.close()


def _serve(
    args: argparse.Namespace,
    app: App,
    token: str | None,
    *,
    read_only: bool,
    reads_need_token: bool,
) -> int:
    server = dashboard_server(
        app,
        args.host,
        args.port,
        token=token,
        read_only=read_only,
        reads_need_token=reads_need_token,
    )
    server.run()
    return exits.OK if server.started else exits.UNAVAILABLE


def dashboard_server(
    app: App,
    host: str,
    port: int,
    *,
    token: str | None,
    read_only: bool = False,
    reads_need_token: bool = False,
) -> Any:
    """The dashboard of ``app`` as a uvicorn server, not started (``run()`` serves it).

    Run in the main thread, SIGINT and SIGTERM stop it gracefully; run in
    another thread (``flowkit dev --dashboard-port``), it leaves the signals to
    the main thread and stops once its ``should_exit`` is set.
    """
    import uvicorn  # the dashboard extra, optional

    from ..dashboard import create_app

    asgi = create_app(
        app, read_only=read_only, token=token, require_token_for_reads=reads_need_token
    )
    mode = asgi.state.dashboard.mode()
    shown = f"[{host}]" if ":" in host else host
    line = f"flowkit dashboard on http://{shown}:{port} ({mode})"

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening: say where, once
                print(line, flush=True)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # As uvicorn's, without raising the signal again once shut down: SIGINT and
            # SIGTERM stop the dashboard gracefully, and the command exits 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning"))
