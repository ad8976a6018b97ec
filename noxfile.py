"""Developer tasks: ``nox -s tests lint typecheck docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite; integration tests skip without RabbitMQ/PostgreSQL unless CI=true."""
    session.install("-e", ".[dev,postgres]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS)
def faults(session: nox.Session) -> None:
    """The fault-injection suite alone; its FAULTS lines also go to faults-report.jsonl."""
    session.install("-e", ".[dev,postgres]")
    report = session.env.get("FLOWKIT_FAULTS_REPORT", "faults-report.jsonl")
    session.run("pytest", "-m", "faults", *session.posargs, env={"FLOWKIT_FAULTS_REPORT": report})


@nox.session(python=PYTHONS)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev,postgres]")
    session.run("mypy")


@nox.session(python=PYTHONS)
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors."""
    session.install("-e", ".[dev,postgres]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """flowkit vs raw Dramatiq on the local RabbitMQ and PostgreSQL (python -m bench)."""
    session.install("-e", ".[dev,postgres]")
    session.run("python", "-m", "bench", *session.posargs)
