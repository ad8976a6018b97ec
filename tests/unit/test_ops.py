"""Metrics, health and status on the embedded default."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import flowkit
from flowkit.health import serve_health
from flowkit.metrics import serve_metrics
from flowkit.testing import embedded


@flowkit.stage(queue="ops.work", retries=1, min_backoff="1ms", max_backoff="2ms")
def work(n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return n


pipeline = flowkit.Pipeline("ops", [work])
app = flowkit.App("ops", flows=[pipeline])
FLOWS = f"{Path(__file__)}:app"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_count_steps_and_runs(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        port = _port()
        server = serve_metrics(a, port, host="127.0.0.1")
        try:
            assert pipeline.submit(1).result(timeout=10) == 1
            failed = pipeline.submit(-1)
            failed.wait(timeout=10)
            code, text = _get(f"http://127.0.0.1:{port}/metrics")
        finally:
            server.shutdown()
    assert code == 200
    labels = 'flow="ops",queue="ops.work",step="work"'
    assert f"flowkit_steps_succeeded_total{{{labels}}} 1.0" in text
    assert f"flowkit_steps_failed_total{{{labels}}} 1.0" in text
    assert f"flowkit_steps_retried_total{{{labels}}} 1.0" in text
    assert f"flowkit_steps_started_total{{{labels}}} 3.0" in text
    assert "flowkit_step_duration_seconds_bucket" in text
    assert 'flowkit_runs{flow="ops",status="succeeded"} 1.0' in text
    assert 'flowkit_runs{flow="ops",status="failed"} 1.0' in text


def test_health_endpoints(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        port = _port()
        server = serve_health(a, port, host="127.0.0.1")
        try:
            assert _get(f"http://127.0.0.1:{port}/live")[0] == 200
            code, body = _get(f"http://127.0.0.1:{port}/ready")
        finally:
            server.shutdown()
    assert code == 200 and json.loads(body)["status"] == "ready"


def test_health_cli_reports_an_unreachable_database(cli: Any) -> None:
    env = {
        "FLOWKIT_DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/x",
        "FLOWKIT_BROKER_URL": "memory://",
    }
    result = cli("health", FLOWS, env=env)
    assert result.returncode == 6
    assert "database  FAILED" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_health_cli_checks_the_schema_without_creating_it(cli: Any, tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    env = {"FLOWKIT_DATABASE_URL": f"sqlite:///{db}", "FLOWKIT_BROKER_URL": "memory://"}
    result = cli("health", FLOWS, env=env)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "no flowkit database at" in result.stdout
    assert not db.exists()  # not even an empty file
    import sqlite3

    sqlite3.connect(db).close()
    result = cli("health", FLOWS, env=env)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "no flowkit tables" in result.stdout
    assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:  # nothing was created in it
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    assert cli("db", "upgrade", env=env).returncode == 0
    assert cli("health", FLOWS, env=env).returncode == 0


def test_status_on_the_embedded_default(cli: Any, tmp_path: Path) -> None:
    env = {
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "FLOWKIT_BROKER_URL": "memory://",
    }
    assert cli("db", "upgrade", env=env).returncode == 0  # a plain submit creates no schema
    assert cli("submit", FLOWS, "--data", "3", env=env).returncode == 0
    result = cli("status", FLOWS, "--json", env=env)
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert snap["queues"] is None and "RabbitMQ" in snap["queues_note"]
    assert snap["runs"] == {"pending": 1}
    assert snap["flows"] == {"ops": {"pending": 1}}
    assert snap["oldest_live_run"]["status"] == "pending"
