"""The examples run end to end on the embedded default, as their READMEs say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


@pytest.mark.timeout(300)
def test_the_approvals_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/approvals/run.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        env=clean_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(120)
def test_the_child_flows_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/child_flows/run.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env=clean_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed ['offline-bank']" in done.stdout


# -- what a new user types, as the READMEs print it (embedded default, from a checkout) --


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment of a new user: no flowkit, LLM or example settings, a private $TMPDIR."""
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWKIT_", "OPENAI_", "MQ_"))}
    return {**env, "TMPDIR": str(tmp / "tmp")}


def checkout(tmp: Path, example: str) -> Path:
    """A copy of one example where a checkout keeps it: ``<root>/examples/<example>``."""
    root = tmp / "checkout"
    shutil.copytree(
        ROOT / "examples" / example,
        root / "examples" / example,
        ignore=shutil.ignore_patterns("__pycache__", "*.db"),
    )
    return root


def untracked(root: Path) -> set[str]:
    """The files under ``root`` that git would list (its .gitignore hides __pycache__, *.db)."""
    return {
        str(f.relative_to(root))
        for f in root.rglob("*")
        if f.is_file()
        and "__pycache__" not in f.parts
        and not f.name.endswith((".db", ".db-shm", ".db-wal"))
    }


def sh(root: Path, env: dict[str, str], *argv: str, stdin: str | None = None) -> str:
    """Run one README command from the checkout's root; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=root,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def emitted(stdout: str) -> Any:
    """The result ``flowkit emit --wait`` prints after its ``FLOW RUN_ID`` line."""
    return json.loads(stdout[stdout.index("{") :])


@pytest.mark.timeout(300)
def test_multiqueue_writes_nothing_into_the_checkout(tmp_path: Path) -> None:
    root = checkout(tmp_path, "multiqueue")
    before = untracked(root)
    env = clean_env(tmp_path)
    out = sh(root, env, "examples/multiqueue/run.py")
    assert untracked(root) == before
    written = tmp_path / "tmp" / "flowkit-multiqueue-analyses"
    assert f"written to     {written}/" in out
    assert len(list(written.glob("*.json"))) == 6
    elsewhere = tmp_path / "chosen"
    sh(root, {**env, "MQ_OUTPUT_DIR": str(elsewhere)}, "examples/multiqueue/run.py")
    assert len(list(elsewhere.glob("*.json"))) == 6
    assert untracked(root) == before


@pytest.mark.timeout(300)
def test_the_exceptions_sample_lines_submit_as_the_readme_says(tmp_path: Path) -> None:
    root = checkout(tmp_path, "exceptions")
    env = clean_env(tmp_path)
    lines = sh(root, env, "examples/exceptions/sample_data.py", "20")
    (root / "exceptions.jsonl").write_text(lines)
    sh(root, env, "-m", "flowkit", "db", "upgrade")  # what terminal 1's `flowkit dev` does first
    fk = ["-m", "flowkit", "submit", "examples/exceptions/app.py:pipeline"]
    first = sh(root, env, *fk, "--jsonl", "exceptions.jsonl", "--key", "samples")
    assert len(first.split()) == 20
    again = sh(root, env, *fk, "--jsonl", "exceptions.jsonl", "--key", "samples")
    assert again.split() == first.split()  # the same keys: the same runs, none new
    one = sh(root, env, *fk, "--data", "-", stdin=lines.splitlines()[0])
    assert len(one.split()) == 1 and one.split()[0] not in first.split()


@pytest.mark.timeout(300)
def test_the_lending_walkthrough_ranks_lenders(tmp_path: Path) -> None:
    root = checkout(tmp_path, "lending")
    env = clean_env(tmp_path)
    fk = ["-m", "flowkit", "emit", "examples/lending/app.py:app"]
    sh(root, env, "examples/lending/sample_data.py", "--lenders", "40", "--applications", "10")
    # The seeded lenders are only uploaded: matching processes them first, as child runs.
    first = emitted(sh(root, env, *fk, "loan:application:uploaded", "--data", APP_1, "--wait"))
    assert first["lenders_considered"] == 40  # as the README says

    sh(root, env, "examples/lending/run.py")
    added = sh(
        root,
        env,
        "examples/lending/sample_data.py",
        "--add-lender",
        "examples/lending/documents/sample_lender.txt",
    )
    assert added.startswith("lender 41: ")
    lender = sh(root, env, *fk, "lender:document:uploaded", "--data", '{"lender_id": 41}', "--wait")
    assert emitted(lender)["status"] == "processed"
    ranking = emitted(sh(root, env, *fk, "loan:application:uploaded", "--data", APP_1, "--wait"))
    assert ranking["lenders_considered"] == 41
    assert ranking["eligible"] == len(ranking["ranked"]) > 0
    assert [r["rank"] for r in ranking["ranked"]] == list(range(1, ranking["eligible"] + 1))


APP_1 = '{"application_id": 1}'


@pytest.mark.timeout(300)
def test_the_outbox_example_places_orders_with_their_runs(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    for _ in range(2):  # a second invocation on the same database, as a user reruns it
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples/outbox/run.py"), "--orders", "6"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=280,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "orders refused       2 (rolled back: no row, no run)" in done.stdout
        assert "runs succeeded       5" in done.stdout


@pytest.mark.timeout(300)
def test_the_async_steps_example_awaits_more_steps_than_threads(tmp_path: Path) -> None:
    root = checkout(tmp_path, "async_steps")
    before = untracked(root)
    out = sh(root, clean_env(tmp_path), "examples/async_steps/run.py", "--items", "40")
    assert "priced          40" in out
    at_once = int(out.split("awaiting at once")[1].split()[0])
    assert at_once > 4  # more steps awaiting than the 4 worker threads
    assert untracked(root) == before
