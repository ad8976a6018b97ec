"""``flowkit dev``: one process, embedded default, resumes and picks up outside submits."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
from conftest import flowkit_cmd

FLOWS = str(Path(__file__).parent / "sample_flows.py")


class Proc:
    """A running command whose output lines (stdout and stderr) can be awaited."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen in: {''.join(self.seen)}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "FLOWKIT_BROKER_URL": "memory://",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
    }


@pytest.fixture
def dev(env: dict[str, str]) -> Iterator[Proc]:
    p = Proc(flowkit_cmd("dev", f"{FLOWS}:pipeline", "--threads", "2"), env)
    try:
        yield p
    finally:
        p.stop()


def test_dev_runs_what_another_process_submits(dev: Proc, cli: Any, env: dict[str, str]) -> None:
    start = dev.wait_for("flowkit dev pid=")
    assert "queues=cli.fail,cli.price" in start and "threads=2" in start
    assert "broker=memory://" in start
    sub = cli("submit", f"{FLOWS}:pipeline", "--data", '{"tenant_id": "t", "amount": 2}', env=env)
    run_id = sub.stdout.strip()
    dev.wait_for("recovery sweep re-published 1 step")
    with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
        assert app.run(run_id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    assert dev.stop() == 0


def test_dev_resumes_runs_left_by_a_previous_process(cli: Any, env: dict[str, str]) -> None:
    assert cli("db", "upgrade", env=env).returncode == 0  # a plain submit creates no schema
    submitted = cli(
        "submit", f"{FLOWS}:pipeline", "--data", '{"tenant_id": "t", "amount": 1}', env=env
    )
    run_id = submitted.stdout.strip()
    p = Proc(flowkit_cmd("dev", f"{FLOWS}:pipeline"), env)
    try:
        p.wait_for("resumed 1 step(s) left by a previous run")
        with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
            assert app.run(run_id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    finally:
        assert p.stop() == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_serves_the_dashboard_in_the_same_process(env: dict[str, str]) -> None:
    pytest.importorskip("uvicorn")
    import json
    import urllib.error
    import urllib.request

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    p = Proc(flowkit_cmd("dev", f"{FLOWS}:pipeline", "--dashboard-port", str(port)), env)
    try:
        p.wait_for("flowkit dev pid=")
        p.wait_for(f"flowkit dashboard on http://127.0.0.1:{port}")  # printed once listening
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            assert r.status == 200
        # --no-auth: an action needs no token; the worker of the same process runs it.
        body = json.dumps({"input": {"tenant_id": "t", "amount": 1}}).encode()
        req = urllib.request.Request(
            f"{base}/api/flows/cli-orders/runs",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
            run_id = json.loads(r.read())["id"]
        with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
            assert app.run(run_id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    finally:
        assert p.stop() == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)


def test_dev_dashboard_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit.cli import commands_dashboard, exits
    from flowkit.cli.main import main

    monkeypatch.setattr(commands_dashboard, "_missing_extra", lambda: ["uvicorn"])
    assert main(["dev", f"{FLOWS}:pipeline", "--dashboard-port", "8123"]) == exits.USAGE
    err = capsys.readouterr().err
    assert "pip install '.[dashboard]'" in err and len(err.strip().splitlines()) == 1
