"""The fault suite's tools: the checker, a submitting client, and the services it disturbs.

The checker reads what the scenario did from PostgreSQL only (flowkit's tables
and the ledger of :mod:`fault_flows`), after waiting (bounded) for every run to
end, and prints one line per scenario:

    scenario | runs accepted / succeeded / failed | lost | stuck | duplicated effects |
    re-executions | time to recover

Each line is also appended as JSON to ``$FLOWKIT_FAULTS_REPORT`` when it is set
(``nox -s faults`` sets it), which is where the docs' table comes from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from helpers import pid_alive, query, scalar, wait_until  # noqa: E402

import flowkit  # noqa: E402

TARGET = f"{HERE / 'fault_flows.py'}:app"
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


# -- the checker ---------------------------------------------------------------
@dataclass
class Report:
    scenario: str
    accepted: int
    succeeded: int
    failed: int
    lost: int
    stuck: int
    duplicated: int
    reexecutions: int
    recovery_s: float
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.scenario:<34} runs {self.accepted:>5} accepted {self.succeeded:>5} ok "
            f"{self.failed:>3} failed | lost {self.lost} | stuck {self.stuck} | "
            f"dup effects {self.duplicated} | re-executions {self.reexecutions:>3} | "
            f"recovered in {self.recovery_s:5.1f}s" + (f" | {self.note}" if self.note else "")
        )


class Checker:
    """Counts what a scenario lost, duplicated or left stuck; prints its line."""

    def __init__(self, url: str, request: pytest.FixtureRequest) -> None:
        self.url = url
        self.request = request

    def statuses(self, flows: tuple[str, ...]) -> dict[str, str]:
        rows = query(
            self.url, "SELECT id, status FROM flowkit_runs WHERE flow = ANY(%s)", (list(flows),)
        )
        return {r[0]: r[1] for r in rows}

    def settle(self, accepted: set[str], flows: tuple[str, ...], timeout: float) -> float:
        """Wait until every accepted run, and every run stored at all, has ended."""
        began = time.monotonic()

        def quiet() -> bool:
            now = self.statuses(flows)
            return all(now.get(r) in TERMINAL for r in accepted) and all(
                s in TERMINAL for s in now.values()
            )

        with contextlib.suppress(AssertionError):
            wait_until(quiet, timeout, interval=0.25, what="quiescence")
        return time.monotonic() - began

    def report(
        self,
        scenario: str,
        accepted: set[str],
        *,
        flows: tuple[str, ...] = ("fk",),
        recovery_s: float,
        note: str = "",
        **details: Any,
    ) -> Report:
        now = self.statuses(flows)
        lost = sum(1 for r in accepted if r not in now)
        # Stuck: accepted and unfinished, or stored (even if the caller saw an
        # error) and never run: both must end once the faults are over.
        stuck = sum(1 for s in now.values() if s not in TERMINAL)
        dup_rows = int(
            scalar(
                self.url,
                "SELECT count(*) FROM (SELECT 1 FROM flowkit_steps s JOIN flowkit_runs r "
                "ON r.id = s.run_id WHERE r.flow = ANY(%s) "
                "GROUP BY s.run_id, s.name, s.item HAVING count(*) > 1) d",
                (list(flows),),
            )
        )
        dup_keys = int(
            scalar(
                self.url,
                "SELECT count(*) FROM (SELECT 1 FROM fk_effects GROUP BY run_id, step, "
                "split_part(key, '[', 2) HAVING count(*) > 1) d",
            )
        )
        executions = int(scalar(self.url, "SELECT count(*) FROM fk_executions"))
        effects = int(scalar(self.url, "SELECT count(*) FROM fk_effects"))
        rep = Report(
            scenario=scenario,
            accepted=len(accepted),
            succeeded=sum(1 for s in now.values() if s == "succeeded"),
            failed=sum(1 for s in now.values() if s == "failed"),
            lost=lost,
            stuck=stuck,
            duplicated=dup_rows + dup_keys,
            reexecutions=executions - effects,
            recovery_s=round(recovery_s, 1),
            note=note,
            details=details,
        )
        self.emit(rep)
        return rep

    def emit(self, rep: Report) -> None:
        capman = self.request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\nFAULTS {rep.line()}", flush=True)
        path = os.environ.get("FLOWKIT_FAULTS_REPORT")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(asdict(rep)) + "\n")

    def assert_clean(self, rep: Report, *, max_reexecutions: int) -> None:
        """The guarantees: nothing lost, nothing stuck, no effect twice; re-runs bounded."""
        assert rep.lost == 0, rep.line()
        assert rep.stuck == 0, rep.line()
        assert rep.duplicated == 0, rep.line()
        assert rep.reexecutions <= max_reexecutions, rep.line()


# -- what a scenario watches -------------------------------------------------------
def finished(url: str, flow: str = "fk") -> int:
    """How many runs of ``flow`` have ended."""
    return int(
        scalar(
            url,
            "SELECT count(*) FROM flowkit_runs WHERE flow = %s AND status IN "
            "('succeeded', 'failed', 'cancelled', 'timed_out')",
            (flow,),
        )
    )


def child_pids(w: Any) -> list[int]:
    """The live worker processes a supervisor started (from their start lines)."""
    return [
        int(m.group("pid"))
        for m in w.start_lines()
        if int(m.group("pid")) != w.pid and pid_alive(int(m.group("pid")))
    ]


def running_steps(url: str) -> int:
    """How many steps are ``running``."""
    return int(scalar(url, "SELECT count(*) FROM flowkit_steps WHERE status = 'running'"))


def kill_under_load(sup: Any, url: str, n: int, kills: int, rng: Any) -> list[str]:
    """SIGKILL a random worker process of the supervisor ``sup`` ``kills`` times, each
    at a random point of its own part of the ``n`` runs and while steps are running;
    what was killed, and when, for the report."""
    killed = []
    for k in range(kills):
        threshold = rng.randint(n * (2 * k + 1) // 8, n * (2 * k + 2) // 8)
        wait_until(lambda t=threshold: finished(url) >= t, 120, interval=0.05)
        wait_until(lambda: running_steps(url) > 0 and child_pids(sup), 30, interval=0.01)
        victim = rng.choice(child_pids(sup))
        signal_at = running_steps(url)
        os.kill(victim, signal.SIGKILL)
        killed.append(f"pid {victim} at {finished(url)}/{n} ({signal_at} running)")
    return killed


# -- a client submitting under faults ------------------------------------------
class Submitter(threading.Thread):
    """Submits ``n`` runs (``every`` seconds apart), retrying each key until accepted.

    What a careful client does: a ``BrokerError`` or ``StoreError`` means "not
    accepted"; the same key is tried again until ``submit`` returns, so a run
    stored before the error is not submitted twice (the key makes it one run).
    """

    def __init__(
        self, flow: Any, n: int, *, work_ms: int = 0, every: float = 0.0, prefix: str = "o"
    ) -> None:
        super().__init__(name="submitter", daemon=True)
        self.flow, self.n, self.work_ms, self.every, self.prefix = flow, n, work_ms, every, prefix
        self.accepted: set[str] = set()
        self.refused = 0  # typed errors seen (each retried with the same key)
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        pause = threading.Event()
        try:
            for i in range(self.n):
                while not self.halt.is_set():
                    try:
                        run = self.flow.submit(
                            {"n": i, "work_ms": self.work_ms}, key=f"{self.prefix}-{i}"
                        )
                    except (flowkit.BrokerError, flowkit.StoreError):
                        self.refused += 1
                        pause.wait(0.5)
                        continue
                    self.accepted.add(run.id)
                    break
                if self.every:
                    pause.wait(self.every)  # pacing the load, not a synchronisation
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 180) -> set[str]:
        self.join(timeout)
        assert not self.is_alive(), f"submitting took more than {timeout:g}s"
        assert self.error is None, repr(self.error)
        assert len(self.accepted) == self.n
        return self.accepted


# -- the services --------------------------------------------------------------
def _ctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed"
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """RabbitMQ's application stopped inside the block, started again whatever happens."""
    try:
        _ctl("stop_app").check_returncode()
        yield
    finally:
        _ctl("start_app")
        _ctl("await_startup")


def close_all_rabbitmq_connections() -> None:
    _ctl("close_all_connections", "flowkit fault suite").check_returncode()


def _pg_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no PostgreSQL cluster in /etc/postgresql"
    return versions[-1]


def postgres_restart_immediate() -> None:
    """``pg_ctlcluster … restart -m immediate``; PostgreSQL is up again on return."""
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main"]
    try:
        subprocess.run([*cmd, "restart", "-m", "immediate"], capture_output=True, timeout=120)
    finally:
        ensure_postgres()


def ensure_postgres() -> None:
    import socket

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", 5432), timeout=1):
                return True
        except OSError:
            return False

    if not up():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main", "start"],
            capture_output=True,
            timeout=120,
        )
    wait_until(up, 60, interval=0.2, what="PostgreSQL to accept connections")


def repeat(action: Callable[[], Any], times: int, gap: float, halt: threading.Event) -> None:
    """Run ``action`` ``times`` times, ``gap`` seconds apart, unless halted."""
    for _ in range(times):
        if halt.wait(gap):
            return
        action()
