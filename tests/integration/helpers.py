"""Shared helpers of the integration tests: worker processes, bounded waits, SQL checks.

Everything here talks to the real services: ``flowkit worker`` processes are
started with :mod:`subprocess`, state is read straight from PostgreSQL with
psycopg, and nothing waits on a fixed sleep: every wait is on a condition
(database state, a log line, a process exit) with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLE_DIR = ROOT / "examples" / "exceptions"
EXAMPLE_APP = EXAMPLE_DIR / "app.py"
EXAMPLE_STAGES = ("intake", "triage", "policy", "playbook", "tool", "feedback")

#: The line ``flowkit worker`` logs once per process when it serves its queues.
START_LINE = re.compile(
    r"flowkit worker pid=(?P<pid>\d+) flows=(?P<flows>\S+) queues=(?P<queues>\S+) "
    r"threads=(?P<threads>\d+)"
)
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "a condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # a wait between polls, never a synchronisation on its own
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        pause.wait(interval)


def dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as a libpq connection string."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def query(url: str, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own autocommit connection; return its rows (if any)."""
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


def scalar(url: str, sql: str, params: Sequence[Any] | None = None) -> Any:
    rows = query(url, sql, params)
    return rows[0][0] if rows else None


def table_exists(url: str, name: str) -> bool:
    return bool(scalar(url, "SELECT to_regclass(%s) IS NOT NULL", (name,)))


def run_counts(url: str, flow: str) -> dict[str, int]:
    """``{status: count}`` of the flow's runs (empty while the schema does not exist)."""
    if not table_exists(url, "flowkit_runs"):
        return {}
    rows = query(
        url, "SELECT status, count(*) FROM flowkit_runs WHERE flow = %s GROUP BY status", (flow,)
    )
    return {r[0]: int(r[1]) for r in rows}


def finished(url: str, flow: str) -> int:
    counts = run_counts(url, flow)
    return sum(counts.get(s, 0) for s in TERMINAL)


def wait_for_runs(url: str, flow: str, n: int, timeout: float) -> dict[str, int]:
    """Wait until ``n`` runs of ``flow`` are terminal; return the status counts."""

    def done() -> dict[str, int] | None:
        counts = run_counts(url, flow)
        return counts if sum(counts.get(s, 0) for s in TERMINAL) >= n else None

    try:
        return wait_until(done, timeout, interval=0.25, what=f"{n} runs of {flow} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; runs now: {run_counts(url, flow)}") from None


@dataclass
class StepAudit:
    """What the step rows of a flow's runs say, for the exactly-once assertions."""

    runs: int
    rows: int
    duplicates: list[tuple[str, str, int]]  # (run_id, name, count) with count > 1
    bad_status: list[tuple[str, str, str]]  # (run_id, name, status) not succeeded/skipped
    retried: int  # step rows with attempts > 1
    max_attempts: int
    by_status: dict[str, int] = field(default_factory=dict)


def audit_steps(url: str, flow: str) -> StepAudit:
    base = "FROM flowkit_steps s JOIN flowkit_runs r ON r.id = s.run_id WHERE r.flow = %s"
    dups = query(
        url,
        f"SELECT s.run_id, s.name, count(*) {base} "
        "GROUP BY s.run_id, s.name, s.item HAVING count(*) > 1",
        (flow,),
    )
    bad = query(
        url,
        f"SELECT s.run_id, s.name, s.status {base} AND s.status NOT IN ('succeeded', 'skipped')",
        (flow,),
    )
    stats = query(
        url,
        "SELECT count(DISTINCT s.run_id), count(*), "
        f"count(*) FILTER (WHERE s.attempts > 1), coalesce(max(s.attempts), 0) {base}",
        (flow,),
    )[0]
    by_status = {
        r[0]: int(r[1]) for r in query(url, f"SELECT s.status, count(*) {base} GROUP BY 1", (flow,))
    }
    return StepAudit(
        runs=int(stats[0]),
        rows=int(stats[1]),
        duplicates=[(r[0], r[1], int(r[2])) for r in dups],
        bad_status=[(r[0], r[1], r[2]) for r in bad],
        retried=int(stats[2]),
        max_attempts=int(stats[3]),
        by_status=by_status,
    )


def check_linear_runs(url: str, flow: str, stages: Sequence[str]) -> StepAudit:
    """Every run of a linear pipeline has exactly one row per stage, in a finished state.

    Stages a run reached are ``succeeded``; stages after a ``flowkit.Stop`` are
    ``skipped``; no ``(run, stage)`` has two rows.
    """
    audit = audit_steps(url, flow)
    assert audit.duplicates == [], f"step recorded twice: {audit.duplicates[:10]}"
    assert audit.bad_status == [], f"unfinished or failed steps: {audit.bad_status[:10]}"
    per_run = query(
        url,
        "SELECT r.id, array_agg(s.name ORDER BY s.name), "
        "count(*) FILTER (WHERE s.status = 'succeeded') "
        "FROM flowkit_runs r LEFT JOIN flowkit_steps s ON s.run_id = r.id "
        "WHERE r.flow = %s GROUP BY r.id",
        (flow,),
    )
    want = sorted(stages)
    wrong = [(r[0], r[1]) for r in per_run if sorted(r[1]) != want]
    assert wrong == [], f"runs without exactly one row per stage: {wrong[:5]}"
    assert all(r[2] >= 1 for r in per_run), "a run with no succeeded step"
    return audit


class WorkerProcess:
    """One ``flowkit worker`` process with its stdout+stderr captured in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, argv: list[str]) -> None:
        self.proc = proc
        self.log = log
        self.argv = argv

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start_lines(self) -> list[re.Match[str]]:
        return list(START_LINE.finditer(self.output()))

    def wait_started(self, timeout: float = 60, count: int = 1) -> list[re.Match[str]]:
        """Wait for ``count`` start lines (one per worker process); fail if it exits first."""

        def started() -> list[re.Match[str]] | None:
            lines = self.start_lines()
            if len(lines) >= count:
                return lines
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode} before starting:\n{self.output()}"
                )
            return None

        try:
            return wait_until(started, timeout, interval=0.05, what="the worker's start line")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker output ---\n{self.output()[-4000:]}") from None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would; waits for the exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc.poll() is None


class Workers:
    """The ``flowkit worker`` processes of one test, all stopped at teardown."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.env.pop("FLOWKIT_DEBUG", None)
        self.log_dir = log_dir
        self.all: list[WorkerProcess] = []

    def start(
        self,
        target: str,
        *args: str,
        threads: int = 4,
        shutdown_timeout: float = 5,
        name: str = "worker",
    ) -> WorkerProcess:
        argv = [
            sys.executable,
            "-m",
            "flowkit",
            "worker",
            target,
            "--threads",
            str(threads),
            "--shutdown-timeout",
            str(shutdown_timeout),
            *args,
        ]
        log = self.log_dir / f"{name}-{len(self.all)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        wp = WorkerProcess(proc, log, argv)
        self.all.append(wp)
        return wp

    def start_stages(
        self, target: str, stages: Iterable[str], threads: int = 4, wait: bool = True
    ) -> dict[str, WorkerProcess]:
        """One worker process per stage (``--stages S``), as the seed's fleet runs them."""
        procs = {s: self.start(target, "--stages", s, threads=threads, name=s) for s in stages}
        if wait:
            for p in procs.values():
                p.wait_started()
        return procs

    def stop_all(self, timeout: float = 20) -> None:
        """SIGTERM every live process, then SIGKILL what is left after ``timeout``."""
        for w in self.all:
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in self.all:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)
        # A supervisor's children are in its process group only if it made one:
        # kill any child still around by its pid (recorded in the start lines).
        for w in self.all:
            for m in w.start_lines():
                pid = int(m.group("pid"))
                if pid != w.pid and _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name} (pid {w.pid}) ---\n{w.output()}" for w in self.all)

    def grep(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for w in self.all for line in w.output().splitlines() if rx.search(line)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    # A zombie child of a process we already reaped is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    return _pid_alive(pid)


def worker_env(rabbitmq_url: str, pg_url: str) -> dict[str, str]:
    return {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}


def load_example() -> Any:
    """The example's ``pipeline`` (and its ``app``), imported the way the CLI imports it."""
    from flowkit.cli.loader import load

    return load(f"{EXAMPLE_APP}:pipeline")


# -- fixtures ------------------------------------------------------------------
# Test modules import these (``from helpers import workers_fixture``): a
# conftest.py here would shadow ``tests/conftest.py`` for modules that do
# ``from conftest import ...`` when the whole tree runs.


@pytest.fixture(name="env")
def env_fixture(rabbitmq_url: str, pg_url: str) -> dict[str, str]:
    """FLOWKIT_BROKER_URL / FLOWKIT_DATABASE_URL for worker processes."""
    return worker_env(rabbitmq_url, pg_url)


@pytest.fixture(name="workers")
def workers_fixture(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> Iterator[Workers]:
    """Starts ``flowkit worker`` processes; stops (or kills) every one at teardown.

    When the test failed, the tail of each worker's output is printed.
    """
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    failed_before = request.session.testsfailed
    w = Workers(env, log_dir)
    try:
        yield w
    finally:
        w.stop_all()
        if request.session.testsfailed > failed_before:
            for proc in w.all:
                print(f"\n--- {proc.log.name} (pid {proc.pid}, rc {proc.proc.returncode}) ---")
                print(proc.output()[-3000:])


@pytest.fixture(name="kill_app")
def kill_app_fixture(
    pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The test pipeline of ``kill_flows`` bound to this test's database, queues purged."""
    import kill_flows

    # The ledger, if a stage runs in this process.
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    kill_flows.create_ledger(pg_url)
    with bound_app(kill_flows.app, pg_url, rabbitmq_url) as app:
        yield app


@contextlib.contextmanager
def bound_app(app: Any, pg_url: str, rabbitmq_url: str) -> Iterator[Any]:
    """``app`` on this test's database and the session's vhost, schema made, queues purged."""
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    try:
        app.store  # noqa: B018 - the schema exists before any worker starts
        # The vhost lives for the whole session: drop messages of earlier tests.
        app.broker.flush_all()
        yield app
    finally:
        app.close()
