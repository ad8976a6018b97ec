"""Helpers for testing your own flows: an embedded App on a throwaway database.

Point your App at the in-process memory broker and a temporary SQLite file,
submit runs, and wait for them; nothing else needs to be running::

    from flowkit import StepStatus
    from flowkit.testing import embedded, run_to_completion
    from myapp.flows import pipeline

    def test_triage_marks_critical(tmp_path):
        with embedded(pipeline, tmp_path) as app:
            run = pipeline.submit({"tenant_id": "t1", "exception_id": "e1", ...})
            result = run_to_completion(run)
            assert result.severity == "critical"
            assert [s.status for s in run.steps()] == [StepStatus.SUCCEEDED] * 6

With pytest, add ``pytest_plugins = ["flowkit.testing"]`` to your
``conftest.py`` and use the :func:`flowkit_embedded` fixture instead.

.. versionadded:: 0.1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .app import App, Run
from .errors import ConfigurationError, ResultTimeout
from .flows import Flow
from .status import RunStatus

__all__ = ["drain", "embedded", "flowkit_embedded", "run_to_completion", "wait_for_status"]


@contextmanager
def embedded(target: App | Flow, directory: str | Path, *, threads: int = 4) -> Iterator[App]:
    """Run ``target``'s App on the memory broker and a fresh SQLite file in ``directory``.

    The App's worker threads start with the first submit. On exit the App is
    closed and its previous settings restored, so the next test can embed it again.

    Parameters:
        target: your App, or a flow (its App is used).
        directory: where to put the throwaway database (pytest's ``tmp_path``).
        threads: worker threads.

    Yields:
        the App, configured and ready.
    """
    app = target.app if isinstance(target, Flow) else target
    saved = (app._broker_url, app._database_url, app.threads, app._embedded_worker)
    app.close()
    db = Path(directory) / "flowkit-test.db"
    app.configure(
        broker_url="memory://",
        database_url=f"sqlite:///{db}",
        threads=threads,
        embedded_worker=True,
    )
    try:
        yield app
    finally:
        app.close()
        app._broker_url, app._database_url, app.threads, app._embedded_worker = saved
        app._settings = None


def run_to_completion(*runs: Run, timeout: float = 30.0) -> Any:
    """Wait for each run and return its result (a list when given several runs).

    Raises:
        RunFailed: a run failed; the error carries the step, type, message and traceback.
        ResultTimeout: a run did not finish within ``timeout`` seconds.
    """
    results = [run.result(timeout=timeout) for run in runs]
    return results[0] if len(results) == 1 else results


def wait_for_status(run: Run, *statuses: RunStatus | str, timeout: float = 30.0) -> RunStatus:
    """Wait until ``run`` is in one of ``statuses`` (e.g. ``RunStatus.WAITING`` for a signal).

    Raises:
        ResultTimeout: not reached within ``timeout`` seconds (the message says
            which status the run is in instead).
    """
    wanted = {RunStatus(s) for s in statuses}
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        status = run.status()
        if status in wanted:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(sorted(s.value for s in wanted))
            raise ResultTimeout(f"run {run.id} is {status.value}, not {names}, after {timeout:g}s")
        run.app.finishes.wait(min(pause, left))
        pause = min(pause * 2, 0.1)


def drain(app: App, *, timeout: float = 30.0) -> None:
    """Wait until the embedded broker's queues are empty and its workers idle.

    Useful after submitting runs whose handles you did not keep. Retries
    scheduled with a backoff count as pending work, so keep backoffs short in tests.
    """
    from dramatiq.brokers.stub import StubBroker

    worker = app.start_worker()
    broker = app.broker
    if not isinstance(broker, StubBroker):
        raise ConfigurationError("drain() works on the embedded memory broker only")
    ms = int(timeout * 1000)
    for _ in range(100):
        for queue in list(broker.queues):
            broker.join(queue, fail_fast=False, timeout=ms)
        worker.join()
        if all(broker.queues[q].qsize() == 0 for q in broker.queues):
            return


try:  # pytest is a test-time dependency only
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def flowkit_embedded(tmp_path: Path) -> Iterator[Callable[[App | Flow], App]]:
        """A function that embeds an App (or a flow's App) for the current test.

        ``app = flowkit_embedded(pipeline)`` returns the App running on the memory
        broker and a SQLite file in ``tmp_path``; it is closed after the test.
        """
        stack: list[Any] = []

        def embed(target: App | Flow) -> App:
            cm = embedded(target, tmp_path / f"app{len(stack)}")
            (tmp_path / f"app{len(stack)}").mkdir(exist_ok=True)
            stack.append(cm)
            return cm.__enter__()

        yield embed
        while stack:
            stack.pop().__exit__(None, None, None)
