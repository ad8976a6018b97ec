"""What ``submit`` and ``emit`` print once their runs are started: with ``--wait`` each
run's result, waited for with progress on standard error; with ``--json`` one JSON
object per run (``submit``) or per event (``emit``)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from ..app import App, Run
from ..errors import RunError, RunFailed
from ..progress import Progress
from . import exits

__all__ = ["Waited", "finish", "run_doc", "wait_all"]

#: A started run and the idempotency key it was submitted with.
Started = tuple[Run, str | None]


@dataclass
class Waited:
    """How waiting for one run ended: its output (JSON form), or the error."""

    run: Run
    output: Any = None
    error: RunError | None = None


def wait_all(runs: list[Run], timeout: float | None) -> list[Waited]:
    """Wait for each run, at most ``timeout`` seconds in all, counting them on stderr.

    A run that failed, was cancelled or timed out, or did not finish in time, is
    recorded with its error (:class:`~flowkit.RunError`); the others are still
    waited for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    waited: list[Waited] = []
    with Progress("finished", total=len(runs)) as progress:
        for run in runs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                waited.append(Waited(run, output=_jsonable(run.result(timeout=left))))
            except RunError as exc:
                waited.append(Waited(run, error=exc))
            progress.advance()
    return waited


def run_doc(run: Run, key: str | None, waited: Waited | None = None) -> dict[str, Any]:
    """The ``--json`` object of a started run; with ``waited``, its status and output too."""
    doc: dict[str, Any] = {
        "run_id": run.id,
        "flow": run.flow,
        "key": key,
        "duplicate": not run.created,
    }
    if waited is not None:
        doc["status"] = run.status().value
        doc["output"] = waited.output
        doc["error"] = _error_doc(waited.error)
    return doc


def finish(
    app: App, started: list[Started], args: argparse.Namespace, *, event: str | None = None
) -> int:
    """Wait for the runs with ``--wait``, print what ``--json`` or ``--wait`` asks for.

    ``event``: the runs were started by ``emit`` of this event, and ``--json`` prints
    one object for them all. The first run that did not succeed is raised after the
    output, as the command's one-line error and exit code.
    """
    waited: list[Waited] | None = None
    docs: list[dict[str, Any]] = []
    if args.wait:
        try:
            waited = wait_all([run for run, _ in started], args.timeout)
            if args.json:
                docs = [run_doc(run, key, w) for (run, key), w in zip(started, waited, strict=True)]
        finally:
            app.close()
    elif args.json:
        docs = [run_doc(run, key) for run, key in started]
    errors = [w.error for w in waited or [] if w.error is not None]
    if args.json and event is not None:
        print(json.dumps({"event": event, "runs": docs}))
    elif args.json:
        for doc in docs:
            print(json.dumps(doc))
    elif waited is not None and not errors:
        for w in waited:
            print(json.dumps(w.output, indent=2, default=str))
    if errors:
        raise errors[0]
    return exits.OK


def _error_doc(exc: RunError | None) -> dict[str, Any] | None:
    if exc is None:
        return None
    if isinstance(exc, RunFailed):
        return {"type": exc.error_type, "message": exc.error_message, "step": exc.step}
    return {"type": type(exc).__name__, "message": str(exc), "step": None}


def _jsonable(value: Any) -> Any:
    return TypeAdapter(Any).dump_python(value, mode="json")
