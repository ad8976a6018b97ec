"""``--log-format json``: the real ``flowkit dev`` and ``scheduler``, every stderr line parsed.

And :class:`flowkit.logs.JsonFormatter` in this process: a step's fields, the
current span's ids, an exception as one field, secrets masked.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from log_flows import LIBRARY_LINE, STEP_LINE

import flowkit
from conftest import flowkit_cmd
from flowkit.logs import JsonFormatter, step_fields
from flowkit.redact import protect, remember

APP = f"{Path(__file__).parent / 'log_flows.py'}:app"
PIPELINE = f"{Path(__file__).parent / 'log_flows.py'}:pipeline"
CARD = "4111111111111111"
#: a line of TEXT_FORMAT: "2027-01-02 10:00:00,123 INFO [123] flowkit.worker: ..."
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] [\w.-]+: .*$")


class Served:
    """A ``flowkit`` command whose stderr lines are kept; stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
                timeout,
            )
        assert found and any(text in line for line in self.lines), self.lines

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(10)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "FLOWKIT_BROKER_URL": "memory://",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'logs.db'}",
    }


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.stop()


def _submitted(cli: Any, env: dict[str, str]) -> str:
    assert cli("db", "upgrade", env=env).returncode == 0
    data = json.dumps({"order_id": "o-1", "card": CARD})
    done = cli("submit", PIPELINE, "--data", data, env=env)
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip().splitlines()[-1])


def _records(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = json.loads(line)  # every line, not only flowkit's
        assert {"time", "level", "logger", "message", "pid"} <= set(record), line
        records.append(record)
    return records


def test_dev_logs_one_json_object_per_line_with_the_steps_fields(
    cli: Any, env: dict[str, str], served: list[Served], tmp_path: Path
) -> None:
    run_id = _submitted(cli, env)  # stored; dev publishes it when it starts
    log_file = tmp_path / "dev.log"
    dev = Served(flowkit_cmd("dev", APP, "--log-format", "json", "--log-file", str(log_file)), env)
    served.append(dev)
    with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
        assert app.run(run_id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    assert dev.stop() == 0
    records = _records(dev.lines)

    (step,) = [r for r in records if r["message"] == STEP_LINE]  # ctx.logger: no [tags] prefix
    assert step["logger"] == "flowkit.step.logs-orders.check" and step["level"] == "INFO"
    assert (step["run_id"], step["step"], step["attempt"]) == (run_id, "check", 1)
    assert step["flow"] == "logs-orders"
    (library,) = [r for r in records if r["message"].startswith(LIBRARY_LINE)]
    assert (library["logger"], library["run_id"], library["step"]) == ("somelib", run_id, "check")
    assert CARD not in "\n".join(dev.lines) and library["message"].endswith("***")
    (retry,) = [r for r in records if "retrying in" in r["message"]]
    assert (retry["logger"], retry["level"]) == ("flowkit.engine", "WARNING")
    assert (retry["run_id"], retry["step"], retry["attempt"]) == (run_id, "book", 1)
    start = next(r for r in records if r["message"].startswith("flowkit dev pid="))
    assert "run_id" not in start and "trace_id" not in start  # outside any step or span

    # The log file: the same format, the same records from the start line on.
    in_file = _records(log_file.read_text().splitlines())
    assert [r["message"] for r in in_file] == [r["message"] for r in records][-len(in_file) :]
    assert any(r["message"] == STEP_LINE and r["run_id"] == run_id for r in in_file)


def test_the_log_file_uses_the_consoles_text_format(
    cli: Any, env: dict[str, str], served: list[Served], tmp_path: Path
) -> None:
    run_id = _submitted(cli, env)
    log_file = tmp_path / "dev.log"
    dev = Served(flowkit_cmd("dev", APP, "--log-file", str(log_file)), env)
    served.append(dev)
    with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
        assert app.run(run_id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    assert dev.stop() == 0
    in_file = log_file.read_text().splitlines()
    assert in_file and all(TEXT_LINE.match(line) for line in in_file), in_file
    assert all(TEXT_LINE.match(line) for line in dev.lines), dev.lines
    assert in_file == dev.lines[-len(in_file) :]  # line for line what the console shows
    assert any(f"[run_id={run_id} step=check attempt=1" in line for line in in_file)


def test_the_scheduler_logs_json_when_the_environment_asks(
    env: dict[str, str], served: list[Served]
) -> None:
    sched = Served(
        flowkit_cmd("scheduler", APP, "--sweep-every", "0"), {**env, "FLOWKIT_LOG_FORMAT": "json"}
    )
    served.append(sched)
    sched.wait_for("flowkit scheduler pid=")
    assert sched.stop() == 0
    records = _records(sched.lines)
    assert any(r["message"] == "flowkit scheduler stopped" for r in records)


def test_an_unknown_log_format_is_one_clear_error(cli: Any, env: dict[str, str]) -> None:
    done = cli("dev", APP, env={**env, "FLOWKIT_LOG_FORMAT": "yaml"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("flowkit: error: log format 'yaml' is not one of: text, json"), (
        done.stderr
    )
    wrong = cli("worker", APP, "--log-format", "yaml", env=env)
    assert wrong.returncode == 2 and "invalid choice: 'yaml'" in wrong.stderr
    assert "Traceback" not in done.stderr + wrong.stderr


def _json_logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    protect(handler)
    logger = logging.getLogger("flowkit.tests.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_the_formatter_writes_step_fields_span_ids_and_one_exc_field() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from otel_support import recording

    logger, out = _json_logger()
    remember("s3cr3t-value")
    with recording() as rec, rec.tracer.start_as_current_span("work") as work:
        with step_fields(run_id="r1", step="s", attempt=2, item=None):
            try:
                raise ValueError("bad value s3cr3t-value")
            except ValueError:
                logger.exception("failed with %s", "s3cr3t-value")
        logger.info("after the step")
    failed, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert (failed["run_id"], failed["step"], failed["attempt"]) == ("r1", "s", 2)
    assert "item" not in failed
    assert failed["message"] == "failed with ***"
    assert failed["exc"].startswith("Traceback") and "ValueError: bad value ***" in failed["exc"]
    assert "s3cr3t-value" not in out.getvalue()
    ids = work.get_span_context()
    assert (failed["trace_id"], failed["span_id"]) == (
        f"{ids.trace_id:032x}",
        f"{ids.span_id:016x}",
    )
    assert "run_id" not in after and after["trace_id"] == failed["trace_id"]
