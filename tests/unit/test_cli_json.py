"""``--json`` on submit, emit, signal, retry and health, ``submit --jsonl``, and the
progress lines long commands print on stderr when it is not a terminal.

Every test runs the real ``flowkit`` command (memory broker, SQLite).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flowkit
from conftest import flowkit_cmd

FLOWS = str(Path(__file__).parent / "sample_flows.py")
APP = ["--app", f"{FLOWS}:app"]


@pytest.fixture
def env(tmp_path: Path, cli: Any) -> dict[str, str]:
    env = {
        "FLOWKIT_BROKER_URL": "memory://",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'json.db'}",
        "FLOWKIT_DEBUG": "",
        "FLOWKIT_PROGRESS_EVERY": "0",  # a plain line at each tenth, from the start
    }
    assert cli("db", "upgrade", env=env).returncode == 0
    return env


def _lines(path: Path, tenants: list[str]) -> Path:
    path.write_text("".join(json.dumps({"tenant_id": t, "amount": 1}) + "\n" for t in tenants))
    return path


def _progress(stderr: str, label: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{label} ")]


def test_submit_json_prints_one_object(cli: Any, env: dict[str, str]) -> None:
    first = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "-d",
        '{"tenant_id": "t", "amount": 1}',
        "--key",
        "k1",
        "--json",
        env=env,
    )
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc == {"run_id": doc["run_id"], "flow": "cli-orders", "key": "k1", "duplicate": False}
    again = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "-d",
        '{"tenant_id": "t", "amount": 1}',
        "--key",
        "k1",
        "--json",
        env=env,
    )
    assert json.loads(again.stdout) == {**doc, "duplicate": True}


def test_submit_wait_json_has_the_status_and_output(cli: Any, env: dict[str, str]) -> None:
    ok = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "-d",
        '{"tenant_id": "t", "amount": 4}',
        "--wait",
        "--timeout",
        "30",
        "--json",
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert (doc["status"], doc["output"], doc["error"]) == (
        "succeeded",
        {"tenant_id": "t", "total": 8},
        None,
    )
    failed = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "-d",
        '{"tenant_id": "boom", "amount": 1}',
        "--wait",
        "--timeout",
        "30",
        "--json",
        env=env,
    )
    assert failed.returncode == 8  # the run failed: the exit code says so ...
    doc = json.loads(failed.stdout)  # ... and stdout still has its one JSON object
    assert doc["status"] == "failed" and doc["output"] is None
    assert doc["error"] == {
        "type": "RuntimeError",
        "message": "exploded on purpose",
        "step": "explode",
    }
    errors = [line for line in failed.stderr.splitlines() if line.startswith("flowkit:")]
    assert errors == [
        f"flowkit: error: run {doc['run_id']} failed in step 'explode': "
        "RuntimeError: exploded on purpose"
    ]


def test_submit_jsonl_shows_progress_and_waits(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    tenants = [f"t{i}" for i in range(20)]
    path = _lines(tmp_path / "orders.jsonl", tenants)
    done = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "--jsonl",
        str(path),
        "--key",
        "batch",
        "--wait",
        "--timeout",
        "60",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["key"] for d in docs] == [f"batch:{n}" for n in range(1, 21)]
    assert [d["output"]["tenant_id"] for d in docs] == tenants
    submitted = _progress(done.stderr, "submitted")
    finished = _progress(done.stderr, "finished")
    assert len(submitted) == 10 and submitted[-1].startswith("submitted 20/20 (100%), ")
    assert len(finished) == 10 and finished[-1].startswith("finished 20/20 (100%), ")
    again = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), "--key", "batch", env=env)
    assert again.stdout.split() == [d["run_id"] for d in docs]  # the same runs, by key
    assert "20 of 20 keys already named runs" in again.stderr


def test_a_bad_jsonl_line_enqueues_nothing(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"tenant_id": "a", "amount": 1}\n\n{"tenant_id": "b", "amount": "x"}\n')
    bad = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), env=env)
    assert bad.returncode == 4
    assert f"invalid input for 'cli-orders' on {path} line 3 (nothing was enqueued)" in bad.stderr
    assert "amount:" in bad.stderr and "Traceback" not in bad.stderr
    path.write_text('{"tenant_id": "a", "amount": 1}\n{"tenant_id": \n')
    broken = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), env=env)
    assert broken.returncode == 4
    assert f"{path} line 2 is not valid JSON" in broken.stderr
    listed = cli("runs", "list", "--json", env=env)
    assert listed.stdout == ""  # neither file stored a run
    both = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), "-d", "{}", env=env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_emit_json_lists_the_runs_started(cli: Any, env: dict[str, str]) -> None:
    done = cli(
        "emit", f"{FLOWS}:app", "fan:go", "-d", "3", "--wait", "--timeout", "30", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["event"] == "fan:go"
    [run] = doc["runs"]
    assert (run["flow"], run["status"], run["output"], run["duplicate"]) == (
        "cli-fan",
        "succeeded",
        5,
        False,
    )


def test_signal_json_says_whether_a_step_was_released(cli: Any, env: dict[str, str]) -> None:
    more = ["--app", f"{FLOWS}:other_app"]
    run_id = json.loads(cli("submit", f"{FLOWS}:approval", "-d", "1", "--json", env=env).stdout)[
        "run_id"
    ]
    sent = cli("signal", run_id, "approval", "-d", "true", "--json", *more, env=env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {
        "run_id": run_id,
        "name": "approval",
        "accepted": True,
        "delivered": False,  # the step does not wait yet (no worker ran it): kept
    }
    twice = cli("signal", run_id, "approval", "-d", "true", "--json", *more, env=env)
    assert twice.returncode == 9
    assert twice.stdout == ""  # a refusal is the one error line, not a document
    assert twice.stderr.startswith("flowkit: error: ")


def test_bulk_retry_shows_progress_and_json(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    path = _lines(tmp_path / "boom.jsonl", ["boom"] * 3)
    failed = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "--jsonl",
        str(path),
        "--wait",
        "--timeout",
        "60",
        "--json",
        env=env,
    )
    assert failed.returncode == 8
    ids = [json.loads(line)["run_id"] for line in failed.stdout.splitlines()]
    plan = cli("retry", "--status", "failed", "--dry-run", "--json", *APP, env=env)
    doc = json.loads(plan.stdout)
    assert doc["dry_run"] is True and doc["not_retried"] == []
    assert sorted(r["run_id"] for r in doc["runs"]) == sorted(ids)
    assert {tuple(r["rerun"]) for r in doc["runs"]} == {("explode",)}
    assert _progress(plan.stderr, "checked")[-1].startswith("checked 3/3 (100%)")
    done = cli("retry", "--status", "failed", *APP, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "retried 3 of 3 failed run(s)"
    assert [line.split(",")[0] for line in _progress(done.stderr, "retried")] == [
        "retried 1/3 (33%)",
        "retried 2/3 (66%)",
        "retried 3/3 (100%)",
    ]
    again = cli("retry", ids[0], "--json", *APP, env=env)
    assert again.returncode == 9  # it is queued again: live runs are not retried
    assert again.stdout == ""


def test_dead_retry_shows_progress(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    path = _lines(tmp_path / "boom.jsonl", ["boom"] * 2)
    failed = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), "--wait", env=env)
    assert failed.returncode == 8  # each failed run's step left a dead letter
    with flowkit.App("check", database_url=env["FLOWKIT_DATABASE_URL"]) as app:
        app.store.dead_letters.record(reason="undecodable", body=None)
        total = len(app.store.dead_letters.newest())
    assert total >= 3
    done = cli("dead", "retry", "--all", *APP, env=env)
    assert done.returncode == 0, done.stderr
    assert f"re-drove {total - 1} dead letter(s); 1 cannot be re-driven" in done.stdout
    lines = _progress(done.stderr, "dead letters")
    assert lines[-1].startswith(f"dead letters {total}/{total} (100%)")


def test_health_json(cli: Any, env: dict[str, str]) -> None:
    ok = cli("health", f"{FLOWS}:app", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "ok": True,
        "checks": {"database": {"ok": True, "error": None}, "broker": {"ok": True, "error": None}},
    }
    down = cli(
        "health", f"{FLOWS}:app", "--json", "--broker-url", "amqp://guest:pw@127.0.0.1:1/", env=env
    )
    assert down.returncode == 6
    doc = json.loads(down.stdout)
    assert doc["ok"] is False and doc["checks"]["database"]["ok"] is True
    error = doc["checks"]["broker"]["error"]
    assert "amqp://guest:***@127.0.0.1:1/" in error and ":pw@" not in error  # masked


def test_short_work_prints_no_progress(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    path = _lines(tmp_path / "orders.jsonl", ["a", "b"])
    quiet = {**env, "FLOWKIT_PROGRESS_EVERY": "60"}  # the default is 10 s
    done = cli("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), "--wait", env=quiet)
    assert done.returncode == 0, done.stderr
    assert not _progress(done.stderr, "submitted") and not _progress(done.stderr, "finished")


def test_a_terminal_gets_a_progress_bar(env: dict[str, str], tmp_path: Path) -> None:
    path = _lines(tmp_path / "orders.jsonl", [f"t{i}" for i in range(5)])
    leader, follower = pty.openpty()
    with subprocess.Popen(
        flowkit_cmd("submit", f"{FLOWS}:pipeline", "--jsonl", str(path), "--wait"),
        env={**os.environ, **env, "TERM": "xterm", "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=follower,
    ) as proc:
        os.close(follower)
        drawn = b""
        while True:  # read until the command closes the terminal's other end
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(60) == 0
    os.close(leader)
    text = drawn.decode(errors="replace")
    assert "submitted" in text and "5/5" in text and "\x1b[" in text
    assert "submitted 5/5 (100%)," not in text  # a bar, not the plain lines


def test_the_exceptions_example_shows_progress(tmp_path: Path) -> None:
    run_py = Path(__file__).resolve().parents[2] / "examples" / "exceptions" / "run.py"
    done = subprocess.run(
        [sys.executable, str(run_py), "--count", "20", "--timeout", "120"],
        cwd=tmp_path,
        env={**os.environ, "FLOWKIT_PROGRESS_EVERY": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _progress(done.stderr, "submitted")[-1].startswith("submitted 20/20 (100%), ")
    assert _progress(done.stderr, "finished")[-1].startswith("finished 20/20 (100%), ")
    assert not _progress(done.stdout, "submitted")  # stdout keeps only the summary
