"""Developer tasks: ``nox -s tests lint typecheck docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

#: Every Python the package claims (pyproject's classifiers); the suite runs on each.
PYTHONS = ["3.10", "3.11", "3.12"]
#: One Python for the tools, whose result does not depend on it, and for the suites
#: that need the shared RabbitMQ and PostgreSQL to themselves (faults, bench).
ONE_PYTHON = "3.11"
#: The ruff the lint session runs: the one the committed code is formatted with.
RUFF = "ruff==0.17.6"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite; integration tests skip without RabbitMQ/PostgreSQL unless CI=true."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=ONE_PYTHON)
def faults(session: nox.Session) -> None:
    """The fault-injection suite alone; its FAULTS lines also go to faults-report.jsonl."""
    session.install("-e", ".[dev]")
    report = session.env.get("FLOWKIT_FAULTS_REPORT", "faults-report.jsonl")
    session.run("pytest", "-m", "faults", *session.posargs, env={"FLOWKIT_FAULTS_REPORT": report})


#: The backlog of fault scenario 13 (issue 14's scenario 2, tests/faults/test_recovery.py):
#: 20,000 queued steps in CI, 100,000 in the soak.
BACKLOG_STEPS_ENV = "FLOWKIT_FAULTS_BACKLOG_STEPS"


@nox.session(python=ONE_PYTHON)
def soak(session: nox.Session) -> None:
    """Not in CI: the soak (tests/faults/test_soak.py, at most 30 minutes; set
    FLOWKIT_SOAK_MINUTES=3 for a quick try), then the backlog fault scenario at 100,000 steps."""
    session.install("-e", ".[dev]")
    minutes = session.env.get("FLOWKIT_SOAK_MINUTES", "30")
    report = session.env.get("FLOWKIT_FAULTS_REPORT", "soak-report.jsonl")
    env = {"FLOWKIT_SOAK_MINUTES": minutes, "FLOWKIT_FAULTS_REPORT": report}
    session.run("pytest", "-m", "soak", "-s", "--timeout", "2700", *session.posargs, env=env)
    backlog = {**env, BACKLOG_STEPS_ENV: "100000"}
    session.run("pytest", "-m", "faults", "-k", "backlog", "--timeout", "2700", env=backlog)


@nox.session(python=ONE_PYTHON)
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=ONE_PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=ONE_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors."""
    session.install("-e", ".[dev]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=ONE_PYTHON)
def bench(session: nox.Session) -> None:
    """flowkit vs raw Dramatiq, Celery and DBOS on the local RabbitMQ and PostgreSQL
    (python -m bench; the peers come with the bench extra)."""
    session.install("-e", ".[dev,bench]")
    session.run("python", "-m", "bench", *session.posargs)
