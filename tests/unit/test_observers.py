"""The ``run_finished`` hook: once per run, with its flow and status, for every way a run ends."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import flowkit
from flowkit.testing import drain, embedded, wait_for_status


class Ask(BaseModel):
    n: int


class Answer(BaseModel):
    ok: bool


@flowkit.stage(queue="obs.work", retries=0)
def check(n: int) -> int:
    if n < 0:
        raise flowkit.PermanentError("negative")
    return n


@flowkit.stage(queue="obs.work")
def stop_early(n: int) -> int | flowkit.Stop:
    return flowkit.Stop(n, reason="enough") if n > 100 else n


checks = flowkit.Pipeline("obs-checks", [check, stop_early])
waits = flowkit.Workflow("obs-waits")
slow = flowkit.Workflow("obs-slow", timeout="300ms")


@waits.step(wait_for="go", queue="obs.work")
def wait_go(a: Ask, go: Answer) -> bool:
    return go.ok


@slow.step(wait_for="never", queue="obs.work")
def wait_never(a: Ask, never: Answer) -> bool:
    return never.ok


class Recorder(flowkit.Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def run_finished(self, *, flow: str, status: str) -> None:
        with self.lock:
            self.seen.append((flow, status))


recorder = Recorder()
app = flowkit.App("obs", flows=[checks, waits, slow], observers=[recorder])


def test_run_finished_fires_once_with_its_flow_and_status(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        ok = checks.submit(1)
        stopped = checks.submit(500)
        failed = checks.submit(-1)
        signalled = waits.submit({"n": 1})
        cancelled = waits.submit({"n": 2})
        timed_out = slow.submit({"n": 3})
        assert ok.result(timeout=30) == 1 and stopped.result(timeout=30) == 500
        wait_for_status(failed, flowkit.RunStatus.FAILED)
        wait_for_status(signalled, flowkit.RunStatus.WAITING)
        wait_for_status(cancelled, flowkit.RunStatus.WAITING)
        signalled.signal("go", {"ok": True})
        assert signalled.result(timeout=30) is True
        assert cancelled.cancel()
        wait_for_status(timed_out, flowkit.RunStatus.TIMED_OUT)
        drain(a)
    expected: list[Any] = [
        ("obs-checks", "succeeded"),
        ("obs-checks", "succeeded"),
        ("obs-checks", "failed"),
        ("obs-waits", "succeeded"),
        ("obs-waits", "cancelled"),
        ("obs-slow", "timed_out"),
    ]
    assert sorted(recorder.seen) == sorted(expected)
