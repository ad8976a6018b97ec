"""The ``flowkit`` command: help, one-line errors with named exit codes, submit and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
FLOWS = str(HERE / "sample_flows.py")
COMMANDS = [
    ["emit"],
    ["dashboard"],
    ["graph"],
    ["worker"],
    ["dev"],
    ["submit"],
    ["runs", "list"],
    ["runs", "show"],
    ["recover"],
    ["db", "upgrade"],
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "FLOWKIT_BROKER_URL": "memory://",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "FLOWKIT_DEBUG": "",
    }


def _one_line_error(result: Any) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("flowkit:")]
    assert lines, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cli: Any, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout


def test_top_level_help_lists_commands_and_exit_codes(cli: Any) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for word in ("worker", "dev", "submit", "runs", "recover", "db", "exit codes"):
        assert word in result.stdout


def test_no_command_is_a_usage_error(cli: Any) -> None:
    assert cli().returncode == 2


def test_submit_and_wait_prints_the_result(cli: Any, env: dict[str, str]) -> None:
    result = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "--data",
        '{"tenant_id": "t", "amount": 4}',
        "--wait",
        "--timeout",
        "30",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    run_id, *rest = result.stdout.splitlines()
    assert len(run_id) == 32
    assert json.loads("\n".join(rest)) == {"tenant_id": "t", "total": 8}
    shown = cli("runs", "show", run_id, env=env)
    assert shown.returncode == 0
    assert "succeeded" in shown.stdout and "price" in shown.stdout and "explode" in shown.stdout
    listed = cli("runs", "list", "--json", env=env)
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [run_id]


def test_a_failed_run_exits_8_when_waited_for(cli: Any, env: dict[str, str]) -> None:
    result = cli(
        "submit",
        f"{FLOWS}:pipeline",
        "--data",
        '{"tenant_id": "boom", "amount": 1}',
        "--wait",
        "--timeout",
        "30",
        env=env,
    )
    assert result.returncode == 8
    assert "exploded on purpose" in _one_line_error(result)
    failed = cli("runs", "list", "--status", "failed", env=env)
    assert "failed" in failed.stdout
    run_id = result.stdout.split()[0]
    shown = cli("runs", "show", run_id, env=env)
    assert "RuntimeError: exploded on purpose" in shown.stdout


def test_retry_dry_run_shows_the_plan_and_changes_nothing(cli: Any, env: dict[str, str]) -> None:
    data = '{"tenant_id": "boom", "amount": 1}'
    failed = cli("submit", f"{FLOWS}:pipeline", "--data", data, "--wait", env=env)
    assert failed.returncode == 8
    run_id = failed.stdout.split()[0]
    app = ("--app", f"{FLOWS}:app")
    plan = cli("retry", run_id, "--dry-run", *app, env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.strip() == f"run {run_id}: would re-run explode; reuses price"
    bulk = cli("retry", "--status", "failed", "--dry-run", *app, env=env)
    assert bulk.stdout.strip().endswith("would retry 1 of 1 failed run(s)")
    still = cli("runs", "list", "--status", "failed", env=env)
    assert run_id in still.stdout  # nothing was retried


def test_submit_from_a_file_and_a_duplicate_key(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "order.json"
    data.write_text('{"tenant_id": "t", "amount": 1}')
    assert cli("db", "upgrade", env=env).returncode == 0  # a plain submit creates no schema
    first = cli("submit", f"{FLOWS}:pipeline", "--data", f"@{data}", "--key", "t:1", env=env)
    second = cli("submit", f"{FLOWS}:pipeline", "--data", f"@{data}", "--key", "t:1", env=env)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert "already names run" in second.stderr
    assert "flowkit dev" in first.stderr  # memory broker: it says where the run will run
    assert len(cli("runs", "list", "--json", env=env).stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"tenant_id": "t"}', "amount: Field required"),
        ('{"tenant_id": "t", "amount": "many"}', "amount: Input should be a valid integer"),
        ("[1, 2]", "Input should be a valid dictionary"),
    ],
)
def test_bad_data_exits_4_and_enqueues_nothing(
    cli: Any, env: dict[str, str], data: str, message: str
) -> None:
    result = cli("submit", f"{FLOWS}:pipeline", "--data", data, env=env)
    assert result.returncode == 4
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    listed = cli("runs", "list", "--json", env=env)
    assert listed.stdout.strip() == "" or listed.returncode == 7


def test_a_missing_data_file_is_one_line(cli: Any, env: dict[str, str]) -> None:
    result = cli("submit", f"{FLOWS}:pipeline", "--data", "@/nonexistent.json", env=env)
    assert result.returncode == 2
    assert "cannot read" in _one_line_error(result)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        (f"{FLOWS}:missing", "has no attribute 'missing'"),
        (f"{FLOWS}:not_a_flow", "is a int, not a flowkit App"),
        ("/nonexistent/flows.py:app", "no such file"),
        ("just_a_module", "is not MODULE:ATTR"),
    ],
)
def test_bad_targets_exit_3(cli: Any, env: dict[str, str], target: str, message: str) -> None:
    result = cli("submit", target, "--data", "{}", env=env)
    assert result.returncode == 3
    assert message in _one_line_error(result)


def test_an_app_with_several_flows_needs_flow(cli: Any, env: dict[str, str]) -> None:
    result = cli("submit", f"{FLOWS}:app", "--data", "{}", env=env)
    assert result.returncode == 2
    assert "--flow" in _one_line_error(result)
    unknown = cli("submit", f"{FLOWS}:app", "--flow", "nope", "--data", "{}", env=env)
    assert unknown.returncode == 5
    assert "known: cli-fan, cli-orders, cli-other" in _one_line_error(unknown)


def test_unknown_run_exits_5(cli: Any, env: dict[str, str]) -> None:
    assert cli("db", "upgrade", env=env).returncode == 0
    result = cli("runs", "show", "0" * 32, env=env)
    assert result.returncode == 5
    assert "no run" in _one_line_error(result)


def test_runs_on_a_database_without_schema_exits_7(cli: Any, env: dict[str, str]) -> None:
    result = cli("runs", "list", env=env)
    assert result.returncode == 7
    assert "flowkit db upgrade" in _one_line_error(result)


def test_db_upgrade_twice(cli: Any, env: dict[str, str]) -> None:
    first = cli("db", "upgrade", env=env)
    second = cli("db", "upgrade", env=env)
    assert "upgraded from empty to revision" in first.stdout
    assert "already at revision" in second.stdout


def test_worker_refuses_the_memory_broker(cli: Any, env: dict[str, str]) -> None:
    result = cli("worker", f"{FLOWS}:pipeline", env=env)
    assert result.returncode == 2
    assert "flowkit dev" in _one_line_error(result)


def test_unknown_stage_or_queue_exits_5(cli: Any, env: dict[str, str]) -> None:
    env = {**env, "FLOWKIT_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/"}
    stage = cli("worker", f"{FLOWS}:pipeline", "--stages", "nope", env=env)
    assert stage.returncode == 5
    assert "stages: price, explode" in _one_line_error(stage)
    queue = cli("worker", f"{FLOWS}:pipeline", "--queues", "nope", env=env)
    assert queue.returncode == 5
    assert "queues: cli.fail, cli.price" in _one_line_error(queue)


def test_passwords_are_masked_in_errors(cli: Any, tmp_path: Path) -> None:
    env = {"FLOWKIT_DATABASE_URL": "postgresql://user:s3cret@127.0.0.1:1/db"}
    result = cli("runs", "list", env=env)
    assert result.returncode == 6
    assert "s3cret" not in result.stderr + result.stdout
    assert "***" in result.stderr
    env = {
        "FLOWKIT_BROKER_URL": "amqp://user:s3cret@127.0.0.1:1/",
        "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    worker = cli("worker", f"{FLOWS}:pipeline", env=env)
    assert worker.returncode == 6
    assert "s3cret" not in worker.stderr + worker.stdout
    assert "Traceback" not in worker.stderr


def test_bad_urls_are_usage_errors(cli: Any, env: dict[str, str]) -> None:
    result = cli("runs", "list", "--database-url", "mysql://root@localhost/x", env=env)
    assert result.returncode == 2
    assert "not supported" in _one_line_error(result)
    result = cli(
        "submit", f"{FLOWS}:pipeline", "--data", "{}", "--broker-url", "redis://x", env=env
    )
    assert result.returncode in (2, 4)


def test_emit_starts_the_subscribed_workflow_and_runs_show_groups_items(
    cli: Any, env: dict[str, str]
) -> None:
    result = cli(
        "emit", f"{FLOWS}:app", "fan:go", "--data", "4", "--wait", "--timeout", "30", env=env
    )
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    flow, run_id = first.split()
    assert flow == "cli-fan"
    assert json.loads("\n".join(rest)) == 0 + 1 + 4 + 9
    shown = cli("runs", "show", run_id, env=env)
    assert "square x4" in shown.stdout
    assert "4 succeeded" in shown.stdout
    assert "slowest [" in shown.stdout
    items = cli("runs", "show", run_id, "--items", env=env)
    assert "square[3]" in items.stdout


def test_emit_of_an_unknown_event_exits_5(cli: Any, env: dict[str, str]) -> None:
    result = cli("emit", f"{FLOWS}:app", "nobody:listens", "--data", "{}", env=env)
    assert result.returncode == 5
    assert "events: fan:go" in _one_line_error(result)


def test_emit_with_bad_data_exits_4(cli: Any, env: dict[str, str]) -> None:
    result = cli("emit", f"{FLOWS}:app", "fan:go", "--data", '"many"', env=env)
    assert result.returncode == 4
    assert "valid integer" in result.stderr


def test_graph_prints_mermaid_and_dot(cli: Any, tmp_path: Path) -> None:
    mermaid = cli("graph", f"{FLOWS}:fan")
    assert mermaid.returncode == 0
    assert mermaid.stdout.startswith("flowchart TD")
    assert "-->|each item|" in mermaid.stdout and "-->|all items|" in mermaid.stdout
    dot = cli("graph", f"{FLOWS}:app", "--format", "dot", "--output", str(tmp_path / "g.dot"))
    assert dot.returncode == 0
    assert "digraph flowkit" in (tmp_path / "g.dot").read_text()


def test_graph_draws_signal_waits_and_the_schedule(cli: Any) -> None:
    mermaid = cli("graph", f"{FLOWS}:approval")
    assert mermaid.returncode == 0, mermaid.stderr
    assert "signal 'approval', timeout 24h" in mermaid.stdout
    assert "schedule: cron 0 9 * * 1" in mermaid.stdout
    assert "(join)" not in mermaid.stdout  # one parent and a signal: a wait, not a join
    assert "{{" not in mermaid.stdout
    dot = cli("graph", f"{FLOWS}:approval", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert "signal 'approval', timeout 24h" in dot.stdout
    assert "schedule: cron 0 9 * * 1" in dot.stdout
    assert "(join)" not in dot.stdout and "hexagon" not in dot.stdout
    fan = cli("graph", f"{FLOWS}:fan")
    assert "total (join)" in fan.stdout  # after a fan-out: still a join


def test_a_duplicate_submit_says_what_happened(cli: Any, env: dict[str, str]) -> None:
    data = ("--data", '{"tenant_id": "t", "amount": 1}')
    done = cli("submit", f"{FLOWS}:pipeline", *data, "--key", "k:1", "--wait", env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    again = cli("submit", f"{FLOWS}:pipeline", *data, "--key", "k:1", env=env)
    assert again.returncode == 0
    assert again.stdout.strip() == run_id
    note = f"flowkit: key 'k:1' already names run {run_id} of flow 'cli-orders' (succeeded)"
    assert f"{note}; no new run was started" in again.stderr
    assert "flowkit dev" not in again.stderr  # it has ended: nothing is left to run
    assert "nothing was enqueued" not in again.stderr
    pending = cli("submit", f"{FLOWS}:pipeline", *data, "--key", "k:2", env=env)
    twice = cli("submit", f"{FLOWS}:pipeline", *data, "--key", "k:2", env=env)
    assert "(pending); no new run was started" in twice.stderr
    assert "flowkit dev" in pending.stderr and "flowkit dev" in twice.stderr  # still to run


def test_a_duplicate_emit_says_so_as_submit_does(cli: Any, env: dict[str, str]) -> None:
    first = cli("emit", f"{FLOWS}:app", "fan:go", "--data", "2", "--key", "e:1", "--wait", env=env)
    assert first.returncode == 0, first.stderr
    assert "already names run" not in first.stderr
    run_id = first.stdout.split()[1]
    again = cli("emit", f"{FLOWS}:app", "fan:go", "--data", "2", "--key", "e:1", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"cli-fan {run_id}"
    note = f"flowkit: key 'e:1' already names run {run_id} of flow 'cli-fan' (succeeded)"
    assert f"{note}; no new run was started" in again.stderr
    assert "flowkit dev" not in again.stderr


def test_runs_show_prints_input_and_output_masked_and_unreached_steps(
    cli: Any, env: dict[str, str]
) -> None:
    more = ("--app", f"{FLOWS}:other_app")
    data = '{"user": "ana", "password": "hunter2"}'
    run_id = cli("submit", f"{FLOWS}:login", "--data", data, "--wait", env=env).stdout.split()[0]
    shown = cli("runs", "show", run_id, *more, env=env)
    assert shown.returncode == 0, shown.stderr
    assert 'input    {"user": "ana", "password": "**********"}' in shown.stdout
    assert 'output   {"user": "ana", "token": "**********"}' in shown.stdout
    assert "hunter2" not in shown.stdout and "tok-ana" not in shown.stdout
    doc = json.loads(cli("runs", "show", run_id, "--json", *more, env=env).stdout)
    assert doc["input"] == {"user": "ana", "password": "**********"}
    assert doc["stop_reason"] is None
    listed = json.loads(cli("runs", "list", "--json", env=env).stdout)
    assert listed["input"]["password"] != "hunter2"  # masked by name without --app
    assert "stop_reason" in listed
    stopped = cli("submit", f"{FLOWS}:gated", "--data", "-1", "--wait", env=env)
    stop_id = stopped.stdout.split()[0]
    timeline = cli("runs", "show", stop_id, *more, env=env).stdout.splitlines()
    rows = [line.split()[:2] for line in timeline[timeline.index("") + 2 :]]
    assert rows == [["check", "succeeded"], ["book", "skipped"], ["notify", "skipped"]]
    assert (
        json.loads(cli("runs", "show", stop_id, "--json", env=env).stdout)["stop_reason"]
        == "too small"
    )


def test_runs_show_lists_steps_in_flow_order(cli: Any, env: dict[str, str]) -> None:
    emitted = cli("emit", f"{FLOWS}:app", "fan:go", "--data", "3", "--wait", env=env)
    run_id = emitted.stdout.split()[1]
    lines = cli("runs", "show", run_id, "--items", "--app", f"{FLOWS}:app", env=env).stdout
    table = lines.splitlines()[lines.splitlines().index("") + 2 :]
    assert [row.split()[0] for row in table] == [
        "split",
        "square[0]",
        "square[1]",
        "square[2]",
        "total",
    ]
    doc = json.loads(cli("runs", "show", run_id, "--json", "--app", f"{FLOWS}:app", env=env).stdout)
    assert [(s["name"], s["item"]) for s in doc["steps"]] == [
        ("split", None),
        ("square", 0),
        ("square", 1),
        ("square", 2),
        ("total", None),
    ]
    assert doc["input"] == 3


def test_runs_list_filters(cli: Any, env: dict[str, str]) -> None:
    def submit(flow: str, data: str, key: str) -> str:
        done = cli("submit", f"{FLOWS}:{flow}", "--data", data, "--key", key, "--wait", env=env)
        return done.stdout.split()[0]

    ok = submit("pipeline", '{"tenant_id": "t", "amount": 1}', "acme:1")
    boom = submit("pipeline", '{"tenant_id": "boom", "amount": 1}', "acme:2")
    small = submit("gated", "-1", "other:1")

    def ids(*options: str) -> list[str]:
        result = cli("runs", "list", "--json", *options, env=env)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert ids("--key", "acme:") == [boom, ok]
    assert ids("--error-type", "RuntimeError") == [boom]
    assert ids("--stopped") == [small]
    assert ids("--stop-reason", "too small") == [small]
    assert ids("--stop-reason", "too") == []
    assert ids("--since", "1h") == [small, boom, ok]
    assert ids("--since", "2000-01-01T00:00", "--until", "2000-01-02T00:00+00:00") == []
    assert ids("--until", "2999-01-01") == [small, boom, ok]
    assert ids("--key", "acme:", "--limit", "1") == [boom]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--since", "yesterday"], "--since: expected a duration like '2h' or '1d', or an ISO"),
        (["--until", "soon"], "--until: expected an ISO time"),
        (["--since", "2030-01-02", "--until", "2030-01-01"], "is not before --until"),
    ],
)
def test_runs_list_bad_filter_values_exit_2(
    cli: Any, env: dict[str, str], options: list[str], message: str
) -> None:
    assert cli("db", "upgrade", env=env).returncode == 0
    result = cli("runs", "list", *options, env=env)
    assert result.returncode == 2
    assert message in _one_line_error(result)
