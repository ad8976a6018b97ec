"""A worker's graceful stop: running steps finish, prefetched messages go back at once.

Dramatiq's ``Worker.stop`` lets the worker threads finish their current
message, then stops the consumers; messages prefetched from RabbitMQ stay
held by this process until then, so a long step delays every message queued
behind it by up to the shutdown timeout. Here the worker threads stop taking
work first, and while the running steps finish, every message waiting in the
process is handed back to RabbitMQ (``basic_nack`` with ``requeue``) for
another worker to take now.

The ``async def`` steps in flight on the process's event loop (:mod:`.aio`) get what is
left of the timeout once the threads are done; any still awaiting then stay ``running``
for the recovery sweep, which takes them when the worker's row is marked stopped.

A worker thread already blocked in the work queue's ``get()`` when the stop
begins can still be handed one more message; the step's actor asks
:func:`hand_back` first, so a thread told to stop returns it to RabbitMQ
instead of starting the step.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from queue import Empty
from typing import Any

import dramatiq

from . import aio

__all__ = ["hand_back", "handing_back", "stop_worker", "stopping"]

log = logging.getLogger("flowkit.worker")

_POLL = 0.05
_state = threading.local()


def handing_back() -> bool:
    """Whether this thread just handed its message back (Dramatiq's ack of it is a no-op)."""
    return bool(getattr(_state, "handed_back", False))


def stopping() -> bool:
    """Whether this worker thread was told to stop (a chain then publishes what follows)."""
    return getattr(threading.current_thread(), "running", True) is False


def hand_back(message: Any) -> bool:
    """Return ``message`` to RabbitMQ if this worker thread was told to stop; whether it did.

    Called by a step's actor before it claims anything. Only a RabbitMQ delivery
    goes back (``basic_nack`` with ``requeue``); the in-process broker's runs.
    """
    thread = threading.current_thread()
    _state.handed_back = False
    if not stopping():
        return False
    consumers = getattr(thread, "consumers", {})
    consumer = getattr(consumers.get(message.queue_name), "consumer", None)
    tag = getattr(message, "_tag", None)
    if consumer is None or tag is None or not hasattr(consumer, "known_tags"):
        return False
    consumer.known_tags.discard(tag)
    try:
        consumer.connection.add_callback_threadsafe(
            partial(consumer.channel.basic_nack, tag, requeue=True)
        )
    except Exception:  # the connection is gone: RabbitMQ requeues it anyway
        log.debug("could not return message %s", message.message_id, exc_info=True)
    _state.handed_back = True
    log.info("worker stopping: message %s returned to the broker, not run", message.message_id)
    return True


def stop_worker(worker: dramatiq.Worker, timeout: float) -> None:
    """Stop ``worker``: steps running now get up to ``timeout`` seconds to finish."""
    deadline = time.monotonic() + timeout
    for thread in worker.workers:
        thread.stop()
    returned = 0
    while time.monotonic() < deadline:
        returned += _requeue_waiting(worker)
        alive = [t for t in worker.workers if t.is_alive()]
        if not alive:
            break
        alive[0].join(_POLL)
    returned += _requeue_waiting(worker)
    if returned:
        log.info("returned %d prefetched message(s) to the broker", returned)
    awaiting = aio.drain(max(0.0, deadline - time.monotonic()))
    if awaiting:
        log.warning("%d async step(s) still running at the stop: left to the sweep", awaiting)
    left = max(0.0, deadline - time.monotonic())
    worker.stop(timeout=max(1, int(left * 1000)))


def _requeue_waiting(worker: dramatiq.Worker) -> int:
    """Hand the messages waiting in the work queue back to RabbitMQ; how many."""
    held: list[Any] = []
    while True:
        try:
            held.append(worker.work_queue.get_nowait())
        except Empty:
            break
    count = 0
    for item in held:
        thread = worker.consumers.get(item.message.queue_name)
        consumer = getattr(thread, "consumer", None)
        tag = getattr(item.message, "_tag", None)
        if consumer is None or tag is None or not hasattr(consumer, "known_tags"):
            # Not a RabbitMQ delivery (the in-process broker): keep it for
            # Dramatiq's own requeue at the end of the stop.
            worker.work_queue.put(item)
            continue
        consumer.known_tags.discard(tag)
        try:
            consumer.connection.add_callback_threadsafe(
                partial(consumer.channel.basic_nack, tag, requeue=True)
            )
            count += 1
        except Exception:  # the connection is gone: RabbitMQ requeues it anyway
            log.debug("could not return message %s", item.message.message_id, exc_info=True)
    return count
