"""``Run``: a handle on one run (its status, result and timeline), and waiting for runs."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from .errors import ConfigurationError, ResultTimeout, RunError, RunFailed, RunNotFound
from .records import RetryPreview, RunInfo, StepInfo
from .status import RunStatus

if TYPE_CHECKING:
    from .app import App

__all__ = ["Finishes", "Run", "check_submit"]


def check_submit(key: str | None, priority: int | None, max_priority: int | None) -> None:
    """Refuse a run key or a priority that cannot be stored or sent.

    Raises:
        ConfigurationError: naming what is wrong.
    """
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        raise ConfigurationError("key must be a non-empty string of at most 255 characters")
    if priority is not None and (
        max_priority is None or not isinstance(priority, int) or not 0 <= priority <= max_priority
    ):
        raise ConfigurationError(
            f"priority must be an integer in 0..max_priority ({max_priority}); "
            "enable priorities with App(max_priority=N)"
        )


class Finishes:
    """Wakes the threads waiting for a run when this process finishes one.

    A run finished by another process is seen by polling; :meth:`Run.wait`
    does both.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def notify(self, *_ended: Any) -> None:
        """A run ended (the Engine's on-finished callback): wake every waiter."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        """Sleep until a run ends in this process, or ``seconds`` pass."""
        with self._cond:
            self._cond.wait(seconds)


class Run:
    """A handle on one run: its status, result and timeline.

    .. versionadded:: 0.1
    """

    def __init__(self, app: App, run_id: str, flow: str, *, created: bool) -> None:
        self.app = app
        #: the run's id
        self.id = run_id
        #: the name of the run's flow
        self.flow = flow
        #: whether the submit that returned this handle created the run
        #: (``False`` when an existing run was found by its key).
        self.created = created

    def info(self) -> RunInfo:
        """The run as stored now.

        Raises:
            RunNotFound: the run was deleted.
        """
        info = self.app.store.get_run(self.id)
        if info is None:
            raise RunNotFound(f"no run {self.id!r}")
        return info

    def status(self) -> RunStatus:
        """The run's status now."""
        state = self.app.store.run_state(self.id)
        if state is None:
            raise RunNotFound(f"no run {self.id!r}")
        return RunStatus(state[0])

    def steps(self) -> list[StepInfo]:
        """The run's timeline: one record per step (and per fanned-out item)."""
        return self.app.store.get_steps(self.id)

    def signal(self, name: str, data: Any = None) -> bool:
        """Deliver a signal to this run; see :meth:`App.signal`."""
        return self.app.signal(self.id, name, data)

    def cancel(self) -> bool:
        """Cancel this run; see :meth:`App.cancel`."""
        return self.app.cancel(self.id)

    def retry(self, *, from_step: str | None = None) -> list[str]:
        """Re-run this finished run from its failed step; see :meth:`App.retry`."""
        return self.app.retry(self.id, from_step=from_step)

    def retry_preview(self, *, from_step: str | None = None) -> RetryPreview:
        """What :meth:`retry` would do; see :meth:`App.retry_preview`."""
        return self.app.retry_preview(self.id, from_step=from_step)

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run reaches a terminal status; return it.

        Raises:
            ResultTimeout: not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            status = self.status()
            if status.terminal:
                return status
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(f"run {self.id} is still {status.value} after {timeout:g}s")
                pause = min(pause, left)
            # Woken at once when this process finishes a run; otherwise the
            # pause grows so a run finished by another process is seen soon.
            self.app.finishes.wait(pause)
            pause = min(pause * 2, 0.25)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return its result, typed as the flow's output.

        A run ended early by :class:`~flowkit.Stop` returns ``Stop.output``.

        Raises:
            RunFailed: the run failed; carries the recorded error and traceback.
            RunError: the run was cancelled or timed out.
            ResultTimeout: not finished within ``timeout`` seconds.
        """
        status = self.wait(timeout)
        state = self.app.store.run_state(self.id)
        assert state is not None
        _, output, error, stop_reason = state
        if status is RunStatus.SUCCEEDED:
            if stop_reason is not None:
                return output  # ended early by Stop: its own value, as stored
            flow = self.app.flow(self.flow)
            try:
                return TypeAdapter(flow.output_type).validate_python(output)
            except ValidationError:  # pragma: no cover - stored by this flow's own output type
                return output
        if status is RunStatus.FAILED:
            err = error or {}
            raise RunFailed(
                self.id,
                step=err.get("step"),
                error_type=err.get("type", "Error"),
                error_message=err.get("message", ""),
                traceback=err.get("traceback"),
            )
        raise RunError(f"run {self.id} ended {status.value}")

    def __repr__(self) -> str:
        return f"<Run {self.id} flow={self.flow}>"
