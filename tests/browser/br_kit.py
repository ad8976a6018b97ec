"""The browser suite's fixtures: headless Chromium, and a fleet (a database, a vhost, worker
processes and a dashboard).

Chromium and its chromedriver are Debian's (``.ci/run`` installs them when missing); the
suite skips without them locally and fails without them under ``CI=true``. The fixtures live
here rather than in a ``conftest.py``: another conftest would shadow the top one's
``from conftest import ...``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
sys.path.append(str(HERE.parent / "integration"))

import br_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

SHOTS = ROOT / "docs" / "_static" / "dashboard"
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


@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the session (as root it needs --no-sandbox)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if IN_CI:
            pytest.fail("chromium and chromium-driver are required when CI=true")
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1360,1000")
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def fleet(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pg_url, rabbitmq_url, tmp_path)
    os.environ.update(f.env)
    f.sql("CREATE TABLE br_ledger (id serial primary key, what text)")
    f.sql("CREATE TABLE br_broken (name text primary key)")
    app = br_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - the schema exists before any process starts
    app.broker.flush_all()  # the vhost lives for the whole session
    try:
        yield f
    finally:
        f.procs.stop()
        app.close()
        for k in f.env:
            os.environ.pop(k, None)


@pytest.fixture
def shot(chrome: Any) -> Callable[[str], None]:
    """Save what the browser shows as docs/_static/dashboard/NAME.png (the docs show them)."""

    def save(name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        chrome.save_screenshot(str(SHOTS / f"{name}.png"))

    return save
