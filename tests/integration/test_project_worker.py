"""A project configured in pyproject.toml alone: ``flowkit worker`` with no arguments.

``[tool.flowkit]`` names the app, RabbitMQ, PostgreSQL and the worker's processes and
threads; the commands run from a subfolder with no FLOWKIT_* variables, and the
supervisor's children find the same configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import WorkerProcess

import flowkit

pytestmark = pytest.mark.integration

FLOWS = """
import flowkit

@flowkit.stage(queue="proj.double")
def double(n: int) -> int:
    return 2 * n

app = flowkit.App("proj", flows=[flowkit.Pipeline("proj-double", [double])])
"""


def test_a_worker_started_with_no_arguments_serves_the_project(
    rabbitmq_url: str, pg_url: str, tmp_path: Path
) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.flowkit]\n"
        'app = "flows.py:app"\n'
        f'broker_url = "{rabbitmq_url}"\n'
        f'database_url = "{pg_url}"\n'
        "processes = 2\n"
        "threads = 3\n"
    )
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    env = {
        **os.environ,
        "FLOWKIT_APP": "",
        "FLOWKIT_BROKER_URL": "",
        "FLOWKIT_DATABASE_URL": "",
        "PYTHONUNBUFFERED": "1",
    }

    def flowkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowkit", *args],
            cwd=sub, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    upgraded = flowkit_cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "postgresql" in upgraded.stdout
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "flowkit", "worker", "--shutdown-timeout", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=sub, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = WorkerProcess(proc, log, argv)
    try:
        lines = worker.wait_started(count=2)
        assert len({m.group("pid") for m in lines}) == 2
        assert all(m.group("threads") == "3" and m.group("flows") == "proj-double" for m in lines)
        submitted = flowkit_cli("submit", "--data", "21")
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        with flowkit.App("check", database_url=pg_url) as check:
            assert check.run(run_id).wait(timeout=60) is flowkit.RunStatus.SUCCEEDED
            info = check.store.get_run(run_id)
            assert info is not None and info.output == 42
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, worker.output()
    assert "Traceback" not in worker.output()
