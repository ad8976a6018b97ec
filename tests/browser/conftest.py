"""Fixtures of the browser suite: headless Chromium, real workers and a real dashboard.

Chromium and its chromedriver are Debian's (``.ci/run`` installs them when missing); the
suite skips without them locally and fails without them under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))

import br_flows  # noqa: E402
from br_kit import IN_CI, Fleet  # noqa: E402

SHOTS = ROOT / "docs" / "_static" / "dashboard"


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
