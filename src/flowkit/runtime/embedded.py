"""Worker threads inside the submitting process: ``flowkit dev``, the embedded default, tests."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import dramatiq
from dramatiq.common import q_name

from .brokers import declare_queues
from .publisher import CONTROL_QUEUE
from .shutdown import stop_worker

__all__ = ["EmbeddedWorker"]


class EmbeddedWorker:
    """Starts and stops one Dramatiq worker over ``broker`` in this process.

    Parameters:
        broker: the broker whose actors the threads run.
        in_process: the broker is the in-process ``memory://`` one.
        url: the broker's URL(s), for the words of an error while its queues are declared.
    """

    def __init__(self, broker: dramatiq.Broker, *, in_process: bool, url: str = "") -> None:
        self.broker = broker
        self.in_process = in_process
        self.url = url
        self._worker: dramatiq.Worker | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, *, queues: Iterable[str] | None, threads: int) -> dramatiq.Worker:
        """Start the threads (once); every worker also serves the control queue."""
        with self._lock:
            if self._worker is not None:
                return self._worker
            worker = dramatiq.Worker(
                self.broker,
                queues={*queues, CONTROL_QUEUE} if queues else None,
                worker_threads=threads,
                # How often idle threads wake up, which bounds how long a stop
                # takes; in-process queues are cheap to poll.
                worker_timeout=100 if self.in_process else 1000,
            )
            if self.in_process:
                # The StubBroker lists its delay queues among its queues, so the
                # Worker consumes them with the small prefetch of ordinary queues;
                # timers (signal waits, delays) would then block one another.
                worker.queue_prefetch = 65535
            worker.start()
            if not self.in_process:
                _declare_consumed(worker, self.url)
            self._worker = worker
            return worker

    def stop(self, timeout: float) -> None:
        """Stop the threads, letting running steps finish within ``timeout`` seconds."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            stop_worker(worker, timeout)


def _declare_consumed(worker: dramatiq.Worker, url: str) -> None:
    """Declare every queue the worker consumes on the broker before returning.

    Dramatiq's consumer threads declare their queues themselves, some moments after
    the worker starts; a message sent to a queue nobody has declared yet is dropped
    by RabbitMQ. Declaring here means that once the worker says it started, what is
    sent to its queues stays there. The connection this thread opened is closed.
    """
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # pika loads only for RabbitMQ

    broker = worker.broker
    if not isinstance(broker, RabbitmqBroker):
        return
    try:
        declare_queues(broker, url, {q_name(queue) for queue in worker.consumers})
    finally:
        del broker.connection
