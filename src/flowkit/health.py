"""Health: is this process able to work? (``flowkit health``, ``--health-port``).

``/live`` answers 200 while the process runs; ``/ready`` answers 200 when the
broker and the database answer, 503 with the reasons otherwise.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .config import mask_url
from .errors import FlowkitError

if TYPE_CHECKING:
    from .app import App

__all__ = ["check", "serve_health"]


def check(app: App, *, open_store: bool = True) -> dict[str, str | None]:
    """``{"database": problem or None, "broker": problem or None}``.

    ``open_store=False`` (``flowkit health``) only looks: a missing or older
    schema is a problem, not something to create.
    """
    problems: dict[str, str | None] = {"database": None, "broker": None}
    try:
        _check_database(app, open_store=open_store)
    except Exception as exc:
        problems["database"] = (
            f"{mask_url(app.settings.database_url)}: {type(exc).__name__}: {str(exc)[:200]}"
        )
    if not app.settings.embedded:
        from .runtime.amqp import connect  # pika only when the broker is RabbitMQ

        try:
            connect(app.settings.broker_url, timeout=3).close()
        except FlowkitError as exc:  # the cause in words, with the masked URL
            problems["broker"] = str(exc)
    return problems


def _check_database(app: App, *, open_store: bool) -> None:
    """The database answers; with ``open_store=False`` nothing is created or migrated.

    An App whose store is open (a worker) is asked through its pool; otherwise
    a short-lived engine checks the schema, so ``flowkit health`` never creates one.
    """
    import sqlalchemy as sa

    from .store.db import create_engine
    from .store.migrate import check_schema

    if open_store or app._store is not None:
        with app.store.db.sql.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return
    engine = create_engine(
        app.settings.database_url, pool_size=1, pooler=app.settings.database_pooler
    )
    try:
        check_schema(engine)  # first: a missing SQLite file is reported, not created
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def serve_health(app: App, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/live`` and ``/ready`` on ``port`` in a daemon thread."""
    cache: dict[str, Any] = {"at": 0.0, "problems": {}}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/live"):
                self._send(200, {"status": "live"})
            elif self.path.startswith("/ready"):
                with lock:
                    if time.monotonic() - cache["at"] > 2:
                        cache["problems"] = check(app)
                        cache["at"] = time.monotonic()
                    problems = {k: v for k, v in cache["problems"].items() if v}
                self._send(
                    503 if problems else 200,
                    {"status": "not ready" if problems else "ready", **problems},
                )
            else:
                self._send(404, {"error": "try /live or /ready"})

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="flowkit-health", daemon=True).start()
    return server
