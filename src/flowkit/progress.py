"""``Progress``: how far a long loop has got, on standard error.

On a terminal (standard error is a TTY) it draws a :mod:`rich` progress bar that
clears itself when the work ends. Anywhere else (a pipe, a log file, CI) it prints
plain lines such as ``submitted 400/1000 (40%), 120/s``: none while the work is
younger than ``$FLOWKIT_PROGRESS_EVERY`` seconds (10), so short work prints nothing;
after that one every that many seconds and one at each tenth of the way, and a last
one when the work ends. Standard output is never written, so what a command prints
there (``--json`` documents, run ids) stays parseable.

.. versionadded:: 0.3
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from .errors import ConfigurationError

__all__ = ["Progress", "progress_every"]

#: Seconds between plain progress lines when ``$FLOWKIT_PROGRESS_EVERY`` is unset.
DEFAULT_EVERY = 10.0


def progress_every() -> float:
    """Seconds between plain progress lines: ``$FLOWKIT_PROGRESS_EVERY``, default 10.

    Raises:
        ConfigurationError: the variable is not a number of seconds (0 or more).
    """
    raw = os.environ.get("FLOWKIT_PROGRESS_EVERY", "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not math.isfinite(every) or every < 0:
        raise ConfigurationError(
            f"FLOWKIT_PROGRESS_EVERY must be a number of seconds (0 or more), got {raw!r}"
        )
    return every


class Progress:
    """Progress of ``total`` units of work (runs submitted, runs finished), on stderr.

    Use it as a context manager and call :meth:`advance` as each unit is done::

        with flowkit.Progress("finished", total=len(runs)) as progress:
            for run in runs:
                run.wait()
                progress.advance()

    Parameters:
        label: what a unit done is, as the line says it (``"submitted"``, ``"finished"``).
        total: how many units; ``None`` while unknown (:meth:`update` can set it).
        stream: where to write; default ``sys.stderr``.
        every: seconds between plain lines; default :func:`progress_every`. With ``0``
            a plain line is printed at each tenth of the way from the start.
        bar: ``True`` or ``False`` forces the bar or plain lines; by default, a bar when
            ``stream`` is a terminal.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        every: float | None = None,
        bar: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        #: units done so far
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._every = progress_every() if every is None else every
        self._bar = _isatty(self._stream) if bar is None else bar
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._tenth = 0
        self._printed: int | None = None  # the count the last plain line showed
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self._bar:
            self._rich, self._task = _rich_bar(self.label, self.total, self._stream)
            self._rich.start()
        elif self._every > 0:
            # A line every `every` seconds even while no unit ends (one slow run).
            self._ticker = threading.Thread(target=self._tick, name="flowkit-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._rich is not None:
            self._rich.stop()
            return
        with self._lock:
            if self._printed is not None and self._printed != self.done:
                self._line()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        """Set how many units are done (and how many there are, when it is known now)."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            if self._rich is not None:
                self._rich.update(self._task, completed=done, total=self.total)
                return
            if not self.total:
                return
            tenth = min(10, done * 10 // self.total)
            if tenth > self._tenth:
                self._tenth = tenth
                if time.monotonic() - self._start >= self._every:
                    self._line()

    def line(self) -> str:
        """The plain line for the count now: ``submitted 400/1000 (40%), 120/s``."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        speed = f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s"
        if not self.total:
            return f"{self.label} {self.done}, {speed}"
        pct = 100 * self.done // self.total
        return f"{self.label} {self.done}/{self.total} ({pct}%), {speed}"

    def _line(self) -> None:
        print(self.line(), file=self._stream, flush=True)
        self._printed = self.done

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                self._line()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def _rich_bar(label: str, total: int | None, stream: TextIO) -> tuple[Any, Any]:
    """A rich progress bar on ``stream`` and its one task."""
    # rich loads only for a bar on a terminal: `import flowkit` and piped commands skip it.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream, force_terminal=True),
        transient=True,
    )
    return bar, bar.add_task(label, total=total)
