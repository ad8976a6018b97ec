"""Status reports RabbitMQ's queue depths; a worker's metrics endpoint counts its steps."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pika
import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import lim_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

TARGET = f"{HERE / 'lim_flows.py'}:app"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_reports_rabbitmq_depths_and_metrics_count_steps(
    pg_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    app = lim_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    procs = Procs(env, tmp_path)
    try:
        runs = [lim_flows.tenant_pipeline.submit({"tenant_id": "t", "n": i}) for i in range(7)]
        assert app.engine.publisher.flush(60)  # the seven messages are on the broker
        status = subprocess.run(
            [sys.executable, "-m", "flowkit", "status", TARGET, "--json"],
            env={**procs.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        snap: dict[str, Any] = json.loads(status.stdout)
        with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as conn:
            depth = conn.channel().queue_declare("lim.tenants", passive=True).method.message_count
        assert depth == 7
        assert snap["queues"]["lim.tenants"]["ready"] == depth
        assert snap["runs"] == {"pending": 7}
        port = _port()
        procs.start(
            "worker",
            TARGET,
            "--threads",
            "4",
            "--metrics-port",
            str(port),
            "--health-port",
            str(port + 100),
        )
        for run in runs:
            assert run.result(timeout=60) == run.info().input["n"]

        def scraped() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return False
            return (
                'flowkit_steps_succeeded_total{flow="lim-tenants",queue="lim.tenants",'
                'step="per_tenant"} 7.0'
            ) in text

        wait_until(scraped, 30, "the metrics endpoint to count 7 steps")
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 100}/ready", timeout=10) as r:
            assert r.status == 200
    finally:
        procs.stop()
        app.close()
