"""One rule names the app for every command that needs the flow definitions.

The positional ``MODULE:ATTR`` (where a command has one), else ``--app``, else
``$FLOWKIT_APP``, else ``app`` in ``[tool.flowkit]`` of pyproject.toml. Each command
is run as the real ``flowkit`` with an argument list whose outcome shows that the
flows were loaded (an output or an error only the loaded flows can produce), and
creates nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from flowkit.cli.apps import MISSING

SAMPLE = Path(__file__).parent / "sample_flows.py"
SPEC = f"{SAMPLE}:app"
NO_RUN = "0" * 32
BLANK = {"FLOWKIT_APP": "", "FLOWKIT_BROKER_URL": "", "FLOWKIT_DEBUG": ""}


class Probe(NamedTuple):
    """``flowkit *head [MODULE:ATTR] *tail``, and what it gives once the flows are loaded."""

    head: list[str]
    tail: list[str]
    code: int
    shows: str
    positional: bool = True


PROBES = {
    "graph": Probe(["graph"], [], 0, "pipeline cli-orders"),
    "queues": Probe(["queues"], [], 0, "cli-orders.price"),
    "submit": Probe(["submit"], ["--flow", "cli-orders", "--data", "{}"], 4, "amount: Field"),
    "emit": Probe(["emit"], ["fan:go", "--data", '"x"'], 4, "valid integer"),
    "worker": Probe(["worker"], [], 2, "needs a broker shared between processes"),
    "dev": Probe(["dev"], ["--stages", "nope"], 5, "stages: price, explode"),
    "scheduler": Probe(
        ["scheduler"], ["--database-url", "postgresql://u@127.0.0.1:1/x"], 6, "unavailable"
    ),
    "signal": Probe(["signal", NO_RUN, "approval"], ["--data", "null"], 7, "db upgrade", False),
    "retry": Probe(["retry", NO_RUN], [], 7, "db upgrade", False),
}
NEEDS_FLOWS = sorted(PROBES)
POSITIONAL = sorted(n for n, p in PROBES.items() if p.positional)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**BLANK, "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'rule.db'}"}


def _check(result: Any, probe: Probe, tmp_path: Path) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == probe.code, result.stdout + result.stderr
    assert probe.shows in result.stdout + result.stderr
    assert MISSING not in result.stderr
    assert not (tmp_path / "rule.db").exists()  # none of them creates the database


@pytest.mark.parametrize("name", POSITIONAL)
def test_the_positional(cli: Any, env: dict[str, str], tmp_path: Path, name: str) -> None:
    p = PROBES[name]
    _check(cli(*p.head, SPEC, *p.tail, env=env, cwd=tmp_path), p, tmp_path)


@pytest.mark.parametrize("name", NEEDS_FLOWS)
def test_the_app_flag(cli: Any, env: dict[str, str], tmp_path: Path, name: str) -> None:
    p = PROBES[name]
    _check(cli(*p.head, *p.tail, "--app", SPEC, env=env, cwd=tmp_path), p, tmp_path)


@pytest.mark.parametrize("name", NEEDS_FLOWS)
def test_the_environment(cli: Any, env: dict[str, str], tmp_path: Path, name: str) -> None:
    p = PROBES[name]
    result = cli(*p.head, *p.tail, env={**env, "FLOWKIT_APP": SPEC}, cwd=tmp_path)
    _check(result, p, tmp_path)


@pytest.mark.parametrize("name", NEEDS_FLOWS)
def test_the_project(cli: Any, env: dict[str, str], tmp_path: Path, name: str) -> None:
    project = tmp_path / "proj"
    (project / "deep" / "er").mkdir(parents=True)
    shutil.copy(SAMPLE, project / "flows.py")
    (project / "pyproject.toml").write_text('[tool.flowkit]\napp = "flows.py:app"\n')
    p = PROBES[name]
    _check(cli(*p.head, *p.tail, env=env, cwd=project / "deep" / "er"), p, tmp_path)


@pytest.mark.parametrize("name", NEEDS_FLOWS)
def test_none_is_one_clear_error(cli: Any, env: dict[str, str], tmp_path: Path, name: str) -> None:
    p = PROBES[name]
    result = cli(*p.head, *p.tail, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"flowkit: error: {MISSING}"


def test_two_different_apps_are_refused(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    result = cli("graph", SPEC, "--app", f"{SAMPLE}:pipeline", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "two apps given" in result.stderr and "Traceback" not in result.stderr


def test_status_counts_the_apps_flows_unless_all(cli: Any, tmp_path: Path) -> None:
    env = {**BLANK, "FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"}
    assert cli("db", "upgrade", env=env).returncode == 0
    other = tmp_path / "other.py"
    other.write_text(
        "import flowkit\n\n@flowkit.stage\ndef hop(n: int) -> int:\n    return n\n\n"
        'app = flowkit.App("other", flows=[flowkit.Pipeline("elsewhere", [hop])])\n'
    )
    assert cli("submit", f"{other}:app", "--data", "1", env=env).returncode == 0
    data = '{"tenant_id": "t", "amount": 1}'
    assert cli("submit", SPEC, "--flow", "cli-orders", "--data", data, env=env).returncode == 0

    def snap(*args: str) -> dict[str, Any]:
        result = cli("status", *args, "--json", env=env)
        assert result.returncode == 0, result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    mine = snap("--app", SPEC)
    assert mine["flows"] == {"cli-orders": {"pending": 1}, "cli-other": {}, "cli-fan": {}}
    assert mine["runs"] == {"pending": 1}
    every = snap(SPEC, "--all")
    assert every["runs"] == {"pending": 2} and set(every["flows"]) == {"cli-orders", "elsewhere"}
    known = snap()  # no app: what the database knows
    assert known["flows"] == {"cli-orders": {"pending": 1}, "elsewhere": {"pending": 1}}
    assert known["queues"] is None
