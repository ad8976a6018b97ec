"""Per-attempt time limits, enforced in the worker thread that runs the step.

Dramatiq's own ``TimeLimit`` middleware would also interrupt flowkit's
bookkeeping after the step function returned; this watchdog only covers the
call to the user's function.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StepTimeout

__all__ = ["time_limit"]


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, str]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, what: str) -> int:
        ident = threading.get_ident()
        with self._lock:
            self._deadlines[ident] = (time.monotonic() + seconds, what)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="flowkit-timeouts", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return ident

    def disarm(self, ident: int) -> None:
        with self._lock:
            self._deadlines.pop(ident, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for ident, (deadline, what) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[ident]
                        _raise_in(ident, what)
                nearest = min((d for d, _ in self._deadlines.values()), default=None)
            self._wake.clear()
            self._wake.wait(None if nearest is None else max(0.0, nearest - time.monotonic()))


class _Timeout(StepTimeout):
    pass


def _raise_in(ident: int, what: str) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Timeout))


_WATCHDOG = _Watchdog()


@contextmanager
def time_limit(ms: int | None, what: str) -> Iterator[None]:
    """Raise :class:`~flowkit.StepTimeout` in this thread if the block runs past ``ms``."""
    if not ms:
        yield
        return
    ident = _WATCHDOG.arm(ms / 1000, what)
    try:
        try:
            yield
        finally:
            _WATCHDOG.disarm(ident)
    except _Timeout:
        raise StepTimeout(f"{what} ran past its timeout of {ms / 1000:g}s") from None
