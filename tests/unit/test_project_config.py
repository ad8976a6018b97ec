"""The project configuration ([tool.flowkit] of pyproject.toml) and commands that create nothing.

The CLI tests run the real ``flowkit`` command with its working directory inside a
project made in ``tmp_path``; the environment's FLOWKIT_* variables are blanked so
that only what each test sets counts.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit.config import Settings
from flowkit.errors import ConfigurationError
from flowkit.project import anchor_sqlite, find_project

SAMPLE = Path(__file__).parent / "sample_flows.py"
BLANK = {
    "FLOWKIT_APP": "",
    "FLOWKIT_BROKER_URL": "",
    "FLOWKIT_DATABASE_URL": "",
    "FLOWKIT_DEBUG": "",
}
ORDER = '{"tenant_id": "t", "amount": 2}'
NO_RUN = "0" * 32


def _project(root: Path, table: str) -> Path:
    """A project in ``root``: pyproject.toml with ``table`` under [tool.flowkit], the
    sample flows as flows.py, and an empty subfolder to run commands from."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\n\n[tool.flowkit]\n{table}\n', encoding="utf-8"
    )
    shutil.copy(SAMPLE, root / "flows.py")
    (root / "sub").mkdir()
    return root / "sub"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts)


def _error(result: Any) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("flowkit: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- found from anywhere inside the project ----------------------------------------------
def test_commands_in_a_subfolder_use_the_database_next_to_pyproject(
    cli: Any, tmp_path: Path
) -> None:
    sub = _project(tmp_path / "proj", 'app = "flows.py:app"')
    deeper = sub / "a" / "b"
    deeper.mkdir(parents=True)
    upgraded = cli("db", "upgrade", env=BLANK, cwd=sub)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"sqlite:///{tmp_path / 'proj' / 'flowkit.db'}" in upgraded.stdout
    submitted = cli("submit", "--flow", "cli-orders", "--data", ORDER, env=BLANK, cwd=deeper)
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    listed = cli("runs", "list", env=BLANK, cwd=tmp_path / "proj")
    assert run_id in listed.stdout, listed.stderr
    shown = cli("runs", "show", run_id, env=BLANK, cwd=deeper)
    assert shown.returncode == 0 and "cli-orders" in shown.stdout
    assert not list(sub.rglob("*.db"))  # one database, beside pyproject.toml


def test_a_pyproject_without_the_table_is_passed_over(tmp_path: Path) -> None:
    _project(tmp_path, 'database_url = "sqlite:///outer.db"')
    inner = tmp_path / "sub" / "pkg"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "flowkit-plugin"\n')
    project = find_project(inner)
    assert project is not None and project.path == tmp_path / "pyproject.toml"
    assert project.database_url == f"sqlite:///{tmp_path / 'outer.db'}"


def test_a_module_app_imports_from_the_project_folder(cli: Any, tmp_path: Path) -> None:
    sub = _project(tmp_path / "proj", 'app = "flows:pipeline"')
    result = cli("queues", env=BLANK, cwd=sub)
    assert result.returncode == 0, result.stderr
    assert "cli-orders.price" in result.stdout


# -- precedence: flags > environment > pyproject > defaults ---------------------------
def test_env_overrides_pyproject_and_flags_override_env(cli: Any, tmp_path: Path) -> None:
    sub = _project(tmp_path / "proj", 'database_url = "sqlite:///from-pyproject.db"')
    env = {**BLANK, "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'from-env.db'}"}
    by_env = cli("db", "upgrade", env=env, cwd=sub)
    assert by_env.returncode == 0, by_env.stderr
    flag = f"sqlite:///{tmp_path / 'from-flag.db'}"
    by_flag = cli("db", "upgrade", "--database-url", flag, env=env, cwd=sub)
    assert by_flag.returncode == 0, by_flag.stderr
    by_pyproject = cli("db", "upgrade", env=BLANK, cwd=sub)
    assert by_pyproject.returncode == 0, by_pyproject.stderr
    assert sorted(p.name for p in tmp_path.rglob("*.db")) == [
        "from-env.db",
        "from-flag.db",
        "from-pyproject.db",
    ]
    assert (tmp_path / "proj" / "from-pyproject.db").exists()  # relative to pyproject.toml


def test_settings_precedence_in_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = _project(
        tmp_path,
        'broker_url = "amqp://u:p@mq.example:5672/"\ndatabase_url = "sqlite:///data/p.db"',
    )
    for name in BLANK:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(sub)
    s = Settings.resolve()
    assert s.broker_url == "amqp://u:p@mq.example:5672/"
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'p.db'}"
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", "sqlite:///env.db")
    assert Settings.resolve().database_url == "sqlite:///env.db"  # env: relative to cwd
    assert Settings.resolve(None, "sqlite:///arg.db").database_url == "sqlite:///arg.db"
    app = flowkit.App("lib")
    assert app.settings.broker_url == "amqp://u:p@mq.example:5672/"  # the App sees it too
    app.configure(broker_url="memory://")
    assert app.settings.broker_url == "memory://"  # an explicit configure still wins


def test_the_default_database_is_in_the_project_folder_or_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in BLANK:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_project() is None
    assert Settings.resolve().database_url == "sqlite:///flowkit.db"  # as before: the cwd
    sub = _project(tmp_path / "proj", 'app = "flows.py:app"')
    monkeypatch.chdir(sub)
    assert Settings.resolve().database_url == f"sqlite:///{tmp_path / 'proj' / 'flowkit.db'}"


@pytest.mark.parametrize(
    ("url", "anchored"),
    [
        ("sqlite:///x.db", "sqlite:////p/x.db"),
        ("sqlite:///data/x.db?timeout=5", "sqlite:////p/data/x.db?timeout=5"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:////p/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_only_relative_sqlite_paths_are_anchored(url: str, anchored: str) -> None:
    assert anchor_sqlite(url, Path("/p")) == anchored


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('databse_url = "sqlite:///x.db"', "has no setting 'databse_url'"),
        ('threads = "four"', "threads must be an integer"),
        ("processes = 0", "processes must be at least 1"),
        ("app = 3", "app must be a string"),
    ],
)
def test_a_bad_table_is_one_usage_error_naming_key_and_file(
    cli: Any, tmp_path: Path, table: str, message: str
) -> None:
    sub = _project(tmp_path, table)
    result = cli("runs", "list", env=BLANK, cwd=sub)
    assert result.returncode == 2
    line = _error(result)
    assert message in line and str(tmp_path / "pyproject.toml") in line
    with pytest.raises(ConfigurationError, match=r"\[tool\.flowkit\]"):
        find_project(sub)


def test_worker_defaults_come_from_the_table(cli: Any, tmp_path: Path) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"\nthreads = 0')
    result = cli("dev", env=BLANK, cwd=sub)
    assert result.returncode == 2
    assert "threads must be at least 1" in _error(result)


# -- read-only commands create nothing --------------------------------------------------
READS = [
    ["runs", "list"],
    ["runs", "show", NO_RUN],
    ["status"],
    ["dead", "list"],
    ["cancel", NO_RUN],
    ["signal", NO_RUN, "approval", "--data", "null"],
    ["retry", NO_RUN],
    ["recover", "--broker-url", "amqp://guest:guest@127.0.0.1:1/"],
    ["submit", "--flow", "cli-orders", "--data", ORDER],
    ["emit", "fan:go", "--data", "3"],
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_without_a_database_commands_say_so_and_leave_no_file(
    cli: Any, tmp_path: Path, command: list[str]
) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"')
    before = _tree(tmp_path)
    result = cli(*command, env=BLANK, cwd=sub)
    assert result.returncode == 7, result.stdout + result.stderr
    db = tmp_path / "flowkit.db"
    assert _error(result) == (
        f"flowkit: error: no flowkit database at {db}: run `flowkit db upgrade` (or start a worker)"
    )
    assert _tree(tmp_path) == before


def test_health_reports_a_missing_database_without_creating_it(cli: Any, tmp_path: Path) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"')
    before = _tree(tmp_path)
    result = cli("health", env=BLANK, cwd=sub)
    assert result.returncode == 6
    assert "no flowkit database at" in result.stdout
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "command",
    [
        ["signal", NO_RUN, "approval", "--data", "null"],
        ["submit", "--flow", "cli-orders", "--data", '{"tenant_id": "t"}'],
        ["emit", "fan:go", "--data", '"many"'],
        ["runs", "list"],
        ["status"],
    ],
    ids=" ".join,
)
def test_an_empty_database_gets_no_schema(cli: Any, tmp_path: Path, command: list[str]) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"')
    db = tmp_path / "flowkit.db"
    sqlite3.connect(db).close()  # an empty file, as another tool might leave
    result = cli(*command, env=BLANK, cwd=sub)
    assert result.returncode in (4, 7), result.stdout + result.stderr  # 4: invalid input
    assert "no flowkit tables" in result.stderr or "nothing was enqueued" in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_signal_to_an_unknown_run_is_not_found_once_the_schema_exists(
    cli: Any, tmp_path: Path
) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"')
    assert cli("db", "upgrade", env=BLANK, cwd=sub).returncode == 0
    result = cli("signal", NO_RUN, "approval", "--data", "null", env=BLANK, cwd=sub)
    assert result.returncode == 5
    assert "no run" in _error(result)


def test_submit_wait_creates_the_schema_as_it_runs_the_steps(cli: Any, tmp_path: Path) -> None:
    sub = _project(tmp_path, 'app = "flows.py:app"')
    result = cli(
        "submit", "--flow", "cli-orders", "--data", ORDER, "--wait", "--timeout", "30",
        env=BLANK, cwd=sub,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"total": 4' in result.stdout
    assert (tmp_path / "flowkit.db").exists()
