"""An :class:`~flowkit.App`'s in-process worker: its Dramatiq threads and its presence.

``App.start_worker`` (``flowkit dev``, the embedded default, tests) and ``App.stop_worker``
call this; ``flowkit worker`` runs the same parts in dedicated processes. The threads are
a :class:`~flowkit.runtime.embedded.EmbeddedWorker`; the presence
(:class:`~flowkit.runtime.sweep.Presence`: the worker's row, heartbeat and recovery sweep)
is registered before the threads claim anything, and paused before they stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dramatiq

    from .app import App
    from .runtime.embedded import EmbeddedWorker
    from .runtime.sweep import Presence

__all__ = ["InProcess"]


class InProcess:
    """The worker threads of one App inside this process, started once until stopped."""

    def __init__(self) -> None:
        self.threads: EmbeddedWorker | None = None
        #: the worker's row, heartbeat and sweeper while it runs
        self.presence: Presence | None = None

    @property
    def running(self) -> bool:
        return self.threads is not None and self.threads.running

    def start(
        self, app: App, *, queues: Iterable[str] | None, threads: int | None, chain: bool
    ) -> dramatiq.Worker:
        """Register the worker, then start ``threads`` (default: the App's) on ``queues``
        (``None``: all of the App's); see :meth:`App.start_worker
        <flowkit.App.start_worker>`. The caller holds the App's lock."""
        from .runtime.embedded import EmbeddedWorker  # the runtime loads on first use
        from .runtime.sweep import Presence

        count = threads or app.threads
        if self.threads is None:
            settings = app.settings
            self.threads = EmbeddedWorker(
                app.broker, in_process=settings.embedded, url=settings.broker_url
            )
        if self.presence is None:  # registered before the threads claim anything
            self.presence = Presence(app.engine, queues=queues, threads=count)
        app.engine.serve(app.queues() if queues is None else queues, chain=chain)
        return self.threads.start(queues=queues, threads=count)

    def stop(self, timeout: float) -> None:
        """Stop the threads, letting running steps finish within ``timeout``, then the
        presence (its row is marked stopped)."""
        worker, self.threads = self.threads, None
        beat, self.presence = self.presence, None
        if beat is not None:
            beat.pause()  # its consumers are closing: no evidence from it from now on
        if worker is not None:
            worker.stop(timeout)
        if beat is not None:
            beat.stop()
