"""The examples run end to end on the embedded default, as their READMEs say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_the_exception_example_runs_1000_exceptions(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/exceptions/run.py"),
            "--count",
            "1000",
            "--timeout",
            "500",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted       1000" in done.stdout
    assert "failed             0" in done.stdout
    env = {"FLOWKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'flowkit.db'}"}
    listed = cli(
        "runs",
        "list",
        "--flow",
        "exceptions",
        "--status",
        "succeeded",
        "--limit",
        "2000",
        "--json",
        env=env,
    )
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(runs) == 1000
    assert all(r["status"] == "succeeded" for r in runs)


@pytest.mark.timeout(300)
def test_the_lending_example_runs(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("FLOWKIT_", "OPENAI_"))
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/lending/run.py"),
            "--lenders",
            "20",
            "--applications",
            "4",
            "--documents",
            str(tmp_path / "docs"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applications matched" in done.stdout and "failed or unfinished    0" in done.stdout


@pytest.mark.parametrize("example", ["approvals", "multiqueue"])
@pytest.mark.timeout(300)
def test_the_control_and_queue_examples_run(tmp_path: Path, example: str) -> None:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("FLOWKIT_", "OPENAI_"))
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / f"examples/{example}/run.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
