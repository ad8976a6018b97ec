"""``flowkit worker`` as operators run it: start lines, processes, log files, errors, secrets."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
    START_LINE,
    Workers,
    env_fixture,
    kill_app_fixture,
    pid_alive,
    query,
    wait_for_runs,
    wait_until,
    workers_fixture,
)

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'kill_flows.py'}:app"
FLOW = "it-kill"
QUEUES = "itk.decide,itk.enrich,itk.notify,itk.receive"
SECRET = "guest:guest"
#: The console's log format, which --log-file uses too: "<time> <level> [<pid>] <logger>: <msg>".
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) \[(?P<pid>\d+)\] "
    r"(?P<logger>[\w.-]+): (?P<message>.*)$",
    re.M,
)


def test_one_start_line_naming_flows_queues_and_threads(
    kill_app: Any, workers: Workers, env: dict[str, str], pg_url: str
) -> None:
    worker = workers.start(TARGET, threads=3)
    (line,) = worker.wait_started()
    assert int(line.group("pid")) == worker.pid
    assert line.group("flows") == FLOW
    assert line.group("queues") == QUEUES
    assert line.group("threads") == "3"
    # The full line names broker and database, the password masked.
    text = worker.output()
    start = next(ln for ln in text.splitlines() if START_LINE.search(ln))
    vhost_url = env["FLOWKIT_BROKER_URL"].replace(SECRET, "guest:***")
    assert f"broker={vhost_url}" in start, start
    assert "database=postgresql" in start
    # --stages serves that stage's queue only.
    one = workers.start(TARGET, "--stages", "decide", threads=2)
    (line,) = one.wait_started()
    assert (line.group("queues"), line.group("threads")) == ("itk.decide", "2")

    # Both serve the flow; then a graceful stop of each.
    runs = [kill_app.flow(FLOW).submit({"n": i}, key=f"start-{i}") for i in range(4)]
    assert wait_for_runs(pg_url, FLOW, len(runs), timeout=60) == {"succeeded": len(runs)}
    one.proc.send_signal(signal.SIGTERM)
    worker.proc.send_signal(signal.SIGTERM)
    assert one.proc.wait(15) == 0
    assert worker.proc.wait(15) == 0
    assert f"flowkit worker pid={worker.pid} stopped" in worker.output()
    assert SECRET not in worker.output() + one.output()
    assert "Traceback" not in worker.output() + one.output()


def test_two_processes_with_a_log_file_each_stop_on_sigterm(
    kill_app: Any, workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    pattern = str(tmp_path / "logs" / "worker_{index}.log")
    parent = workers.start(
        TARGET, "--processes", "2", "--log-file", pattern, threads=2, shutdown_timeout=5
    )
    lines = parent.wait_started(count=2)
    children = sorted(int(m.group("pid")) for m in lines)
    assert len(set(children)) == 2 and parent.pid not in children
    assert all(m.group("queues") == QUEUES for m in lines)
    supervisor = re.search(
        r"flowkit worker supervisor pid=(\d+) started 2 processes: (\d+), (\d+)", parent.output()
    )
    assert supervisor is not None, parent.output()
    assert int(supervisor.group(1)) == parent.pid
    assert sorted(int(supervisor.group(i)) for i in (2, 3)) == children

    # One log file per process, in the console's format, naming that process.
    files = [tmp_path / "logs" / f"worker_{i}.log" for i in (0, 1)]
    wait_until(lambda: all(f.exists() and START_LINE.search(f.read_text()) for f in files), 30)
    file_pids = []
    for f in files:
        text = f.read_text()
        records = list(LOG_LINE.finditer(text))
        assert records, text
        pids = {int(r.group("pid")) for r in records}
        assert len(pids) == 1, pids
        (pid,) = pids
        start = next(r for r in records if START_LINE.search(r.group("message")))
        assert start.group("logger") == "flowkit.worker" and start.group("level") == "INFO"
        assert f"flowkit worker pid={pid} " in start.group("message")
        assert SECRET not in text
        file_pids.append(pid)
    assert sorted(file_pids) == children

    # Both processes serve the flow.
    runs = [kill_app.flow(FLOW).submit({"n": i}, key=f"p2-{i}") for i in range(40)]
    assert wait_for_runs(pg_url, FLOW, len(runs), timeout=60) == {"succeeded": len(runs)}
    ran_in = {int(r[0]) for r in query(pg_url, "SELECT DISTINCT pid FROM kill_executions")}
    assert ran_in <= set(children), (ran_in, children)

    # SIGTERM to the parent stops every process within the shutdown timeout.
    began = time.monotonic()
    parent.proc.send_signal(signal.SIGTERM)
    assert parent.proc.wait(5 + 10) == 0
    took = time.monotonic() - began
    assert not any(pid_alive(p) for p in children)
    assert took < 15, took
    for f, pid in zip(files, file_pids, strict=True):
        assert f"flowkit worker pid={pid} stopped" in f.read_text()
    assert SECRET not in parent.output()
    assert "Traceback" not in parent.output()
    print(f"\n2 processes {children} stopped {took:.1f}s after SIGTERM")


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    out = (res.stdout + res.stderr).strip()
    assert "Traceback" not in out, out
    assert SECRET not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


def test_unreachable_broker_exits_6_with_one_line(
    cli: Any, pg_url: str, env: dict[str, str]
) -> None:
    began = time.monotonic()
    res = cli(
        "worker",
        TARGET,
        "--broker-url",
        "amqp://guest:guest@127.0.0.1:1/",
        env={**env, "FLOWKIT_DATABASE_URL": pg_url},
        timeout=60,
    )
    line = _one_line_error(res)
    assert res.returncode == 6, (res.returncode, line)
    assert line.startswith(
        "flowkit: error: RabbitMQ at amqp://guest:***@127.0.0.1:1/ is unreachable: "
        "connection refused"
    )
    print(f"\nunreachable broker: exit 6 after {time.monotonic() - began:.1f}s: {line}")


def test_memory_broker_is_refused_with_one_line(cli: Any, env: dict[str, str]) -> None:
    res = cli("worker", TARGET, "--broker-url", "memory://", env=env)
    line = _one_line_error(res)
    assert res.returncode == 2, (res.returncode, line)
    assert line.startswith("flowkit: error: ") and "flowkit dev" in line, line


def test_unknown_stage_exits_5_with_one_line(cli: Any, env: dict[str, str]) -> None:
    res = cli("worker", TARGET, "--stages", "nope", env=env)
    line = _one_line_error(res)
    assert res.returncode == 5, (res.returncode, line)
    assert "nope" in line and "receive" in line, line


_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


@pytest.mark.skipif(sys.platform != "linux" or _TGKILL is None, reason="needs Linux tgkill")
def test_sigterm_handled_by_another_thread_stops_the_worker(
    kill_app: Any, workers: Workers, pg_url: str
) -> None:
    """A process-directed SIGTERM may be taken by any thread; the worker still stops.

    Python runs the handler in the main thread only when that thread next runs
    bytecode: a main thread parked in one long wait (``stop.wait(3600)`` before
    5e95264) kept the worker running for up to an hour.
    """
    worker = workers.start(TARGET, threads=2, shutdown_timeout=5)
    worker.wait_started()
    # Steady state: the main thread is parked in its wait once a run went through.
    run = kill_app.flow(FLOW).submit({"n": 1}, key="tgkill")
    assert run.wait(timeout=60).value == "succeeded"
    others = sorted(int(t) for t in os.listdir(f"/proc/{worker.pid}/task") if int(t) != worker.pid)
    assert others, "the worker has no threads besides the main one"
    # SIGTERM to the process, taken by one of its other threads (as the kernel may do).
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL, worker.pid, others[0], signal.SIGTERM) == 0
    try:
        rc = worker.proc.wait(5 + 5)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc == 0, "the worker ignored SIGTERM for 10s (shutdown timeout 5s)"
