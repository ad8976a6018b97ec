"""Shared fixtures: SQLite and PostgreSQL stores, the real RabbitMQ, embedded apps.

Live-service fixtures skip with a reason when the service is unreachable,
except under ``CI=true``, where they fail: CI must run the integration tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The fixtures flowkit offers its users (flowkit_embedded), tested here too.
pytest_plugins = ["flowkit.testing"]

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("FLOWKIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RABBIT_URL = os.environ.get("FLOWKIT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    if IN_CI:
        pytest.fail(f"{service} is not reachable on {host}:{port}, and CI=true requires it")
    pytest.skip(f"{service} is not reachable on {host}:{port}")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    _need("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"flowkit_t_{uuid.uuid4().hex[:12]}"
    dsn = pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'flowkit.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flowkit.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Any]:
    """A :class:`flowkit.store.Store` with its schema, on SQLite and on PostgreSQL."""
    from flowkit.store import Store

    s = Store(database_url, pool_size=4)
    s.ensure_schema()
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The real RabbitMQ, in a vhost of its own for this test session when possible."""
    _need("RabbitMQ", "127.0.0.1", 5672)
    ctl = shutil.which("rabbitmqctl")
    vhost = f"flowkit-test-{uuid.uuid4().hex[:8]}"
    if ctl is None:
        yield RABBIT_URL
        return
    made = subprocess.run([ctl, "add_vhost", vhost], capture_output=True).returncode == 0
    if not made:
        yield RABBIT_URL
        return
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )
    yield RABBIT_URL.rstrip("/") + "/" + vhost
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


def flowkit_cmd(*args: str) -> list[str]:
    """The ``flowkit`` command line, run with this interpreter."""
    return [sys.executable, "-m", "flowkit", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        flowkit_cmd(*args),
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def cli() -> Any:
    return run_cli
