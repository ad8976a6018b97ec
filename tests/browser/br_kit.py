"""The browser suite's fleet: a database, a vhost, worker processes and a dashboard."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from fk_procs import Procs, wait_until

HERE = Path(__file__).parent
TARGET = f"{HERE / 'br_flows.py'}:app"
HEARTBEAT = 0.5
IN_CI = os.environ.get("CI", "").lower() == "true"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class Fleet:
    """The test's database, broker vhost, workers and dashboard; stopped at the end."""

    def __init__(self, pg_url: str, rabbitmq_url: str, tmp_path: Path) -> None:
        self.pg_url = pg_url
        self.env = {
            "FLOWKIT_BROKER_URL": rabbitmq_url,
            "FLOWKIT_DATABASE_URL": pg_url,
            "FLOWKIT_HEARTBEAT_SECONDS": str(HEARTBEAT),
        }
        self.procs = Procs(self.env, tmp_path)
        self.tmp = tmp_path
        self.url = ""
        self.token = "browser-suite-token-0123456789"

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(_dsn(self.pg_url), autocommit=True) as c:
            cur = c.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []

    def workers(self, n: int = 1) -> list[Any]:
        return [self.procs.start("worker", TARGET, "--threads", "4") for _ in range(n)]

    def dashboard(self, *args: str) -> str:
        """Start ``flowkit dashboard`` (with the suite's token) and wait until it answers."""
        port = _port()
        token_file = self.tmp / "token"
        token_file.write_text(self.token)
        self.procs.start(
            "dashboard", TARGET, "--port", str(port), "--token-file", str(token_file), *args
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(up, 60, "the dashboard to answer /healthz")
        self.url = url
        return url
