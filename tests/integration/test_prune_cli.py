"""Retention on PostgreSQL as operators run it: ``flowkit db prune`` in a subprocess, and a
real ``flowkit worker`` applying ``FLOWKIT_RETENTION`` by itself; real rows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
    Workers,
    dsn,
    env_fixture,
    wait_until,
    workers_fixture,
)

pytestmark = pytest.mark.integration

#: Per flow and status: (runs, days since they ended; None: live).
SEED = [
    ("a", "succeeded", 40),
    ("a", "failed", 40),
    ("b", "cancelled", 40),
    ("b", "timed_out", 40),
    ("a", "succeeded", 2),
    ("a", "running", None),
    ("b", "waiting", None),
]


def seed(url: str) -> None:
    """Ten runs of each kind, each with two steps, a signal and an attempt; old rate-log
    rows and dead letters."""
    with psycopg.connect(dsn(url), autocommit=True) as c:
        for n, (flow, status, days) in enumerate(SEED):
            ended = "NULL" if days is None else f"now() - interval '{days} days'"
            c.execute(
                "INSERT INTO flowkit_runs (id, flow, status, created_at, finished_at) "
                f"SELECT 'r{n}-' || g, %s, %s, now() - interval '60 days', {ended} "
                "FROM generate_series(1, 10) g",
                (flow, status),
            )
        c.execute(
            "INSERT INTO flowkit_steps (id, run_id, name, status, queue, created_at) "
            "SELECT id || '-' || s, id, 's' || s, 'succeeded', 'q', created_at "
            "FROM flowkit_runs, generate_series(1, 2) s"
        )
        c.execute(
            "INSERT INTO flowkit_signals (id, run_id, name, created_at) "
            "SELECT id || '-sig', id, 'go', created_at FROM flowkit_runs"
        )
        c.execute(
            "INSERT INTO flowkit_attempts (id, step_id, run_id, attempt, outcome) "
            "SELECT id || '-a', id || '-1', id, 1, 'retried' FROM flowkit_runs"
        )
        c.execute(
            "INSERT INTO flowkit_rate_log (key, at) "
            "SELECT 'k', now() - g * interval '20 days' FROM generate_series(0, 2) g"
        )
        c.execute(
            "INSERT INTO flowkit_dead_letters (id, reason, created_at) "
            "SELECT 'd' || g, 'bad', now() - g * interval '20 days' FROM generate_series(0, 2) g"
        )


def counts(url: str) -> dict[str, int]:
    out = {}
    with psycopg.connect(dsn(url)) as c:
        for table in ("runs", "steps", "signals", "attempts", "rate_log", "dead_letters"):
            row = c.execute(f"SELECT count(*) FROM flowkit_{table}").fetchone()
            out[table] = int(row[0]) if row else -1
        row = c.execute(
            "SELECT count(*) FROM flowkit_steps s LEFT JOIN flowkit_runs r ON r.id = s.run_id "
            "WHERE r.id IS NULL"
        ).fetchone()
        out["orphan_steps"] = int(row[0]) if row else -1
        row = c.execute(
            "SELECT count(*) FROM flowkit_runs WHERE status IN ('running', 'waiting')"
        ).fetchone()
        out["live"] = int(row[0]) if row else -1
    return out


def test_prune_from_the_command_line(cli: Any, pg_url: str) -> None:
    env = {"FLOWKIT_DATABASE_URL": pg_url}
    assert cli("db", "upgrade", env=env).returncode == 0
    seed(pg_url)
    full = counts(pg_url)
    assert full["runs"] == 70

    for bad, why in (
        (["--older-than", "a month"], "--older-than: expected a duration"),
        (["--older-than=-30d"], "--older-than cannot be negative"),
        (["--older-than", "30d", "--status", "done"], "unknown run status 'done'"),
        (["--older-than", "30d", "--status", "running"], "not finished"),
        (["--older-than", "30d", "--batch", "0"], "--batch must be"),
    ):
        out = cli("db", "prune", *bad, env=env)
        assert out.returncode == 2, (bad, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert why in out.stderr
    assert counts(pg_url) == full  # nothing deleted

    dry = cli("db", "prune", "--older-than", "30d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(
        "would delete 40 runs, 80 steps, 40 signals, 40 attempts, 1 dead letters, "
        "1 rate-log rows (ended before "
    ), dry.stdout
    assert counts(pg_url) == full

    only = cli("db", "prune", "--older-than", "30d", "--status", "failed", "--flow", "a", env=env)
    assert only.returncode == 0, only.stderr
    assert only.stdout.startswith("deleted 10 runs, 20 steps, 10 signals, 10 attempts (ended")

    out = cli("db", "prune", "--older-than", "30d", "--batch", "7", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        "deleted 30 runs, 60 steps, 30 signals, 30 attempts, 1 dead letters, 1 rate-log rows"
    ), out.stdout
    after = counts(pg_url)
    assert after == {
        "runs": 30,  # the recent ones and the live ones
        "steps": 60,
        "signals": 30,
        "attempts": 30,
        "rate_log": 2,
        "dead_letters": 2,
        "orphan_steps": 0,
        "live": 20,
    }


TARGET = f"{HERE / 'kill_flows.py'}:app"


def test_a_worker_applies_the_retention_setting(
    cli: Any, pg_url: str, workers: Workers, env: dict[str, str]
) -> None:
    assert cli("db", "upgrade", env=env).returncode == 0
    seed(pg_url)
    workers.env.update(FLOWKIT_RETENTION="a month")
    bad = workers.start(TARGET, name="bad")
    assert bad.proc.wait(60) == 2
    (line,) = [ln for ln in bad.output().splitlines() if ln.startswith("flowkit: error:")]
    assert "FLOWKIT_RETENTION" in line and "Traceback" not in bad.output()
    assert counts(pg_url)["runs"] == 70
    workers.env.update(FLOWKIT_RETENTION="30d", FLOWKIT_SWEEP_SECONDS="0.5")
    worker = workers.start(TARGET, name="keeper")
    worker.wait_started()
    wait_until(lambda: counts(pg_url)["runs"] == 30, 60, what="the old runs deleted")
    after = counts(pg_url)
    assert after["live"] == 20 and after["orphan_steps"] == 0 and after["steps"] == 60
    assert after["rate_log"] == 2 and after["dead_letters"] == 2
    assert workers.grep(r"flowkit.sweep: retention \(30d\) deleted \d+ runs")
