"""RabbitMQ connections of a worker: named for operators, checked before an idle one publishes.

Dramatiq gives each thread that publishes its own ``pika.BlockingConnection``
(a worker thread publishes the successors of the steps it runs). A blocking
connection services its heartbeats only while its thread does I/O on it, so
the connection of a thread that stays idle, or runs a long step, misses them
and RabbitMQ closes it; the next publish then finds a dead socket and pika logs
the ``ConnectionResetError`` with a traceback. Servicing it from another thread
is not an option (pika is not thread-safe), and turning its heartbeats off
would leave a publish waiting on a dead peer with nothing to notice. So, on the
publishing thread, just before a message goes out on a connection idle for over
:data:`PROBE_IDLE` (a second), the connection is probed
(``process_data_events(0)``: one non-blocking poll, which also reads a close
RabbitMQ sent and sends the heartbeats that are due); one found closed is
dropped with one INFO line, and the publish opens a new one. A connection in
use needs no probe: its own traffic reads a close, and the publisher thread
(:mod:`.sender`) polls its connection every second while idle.

Every connection is named (RabbitMQ's ``connection_name`` client property):
``flowkit <pid>``, and ``flowkit <worker id> <pid>`` once a worker registered,
so ``rabbitmqctl list_connections name client_properties`` and the management
UI show which process holds which connection.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.middleware import Middleware

from ..redact import redact
from .amqp import quiet_pika

__all__ = [
    "PROBE_IDLE",
    "FreshConnections",
    "connection_name",
    "name_connections",
    "probe",
    "reconnecting",
]

log = logging.getLogger("flowkit.broker")

_used = threading.local()

#: A thread's connection used less than this many seconds ago is not probed again.
PROBE_IDLE = 1.0


def connection_name(worker_id: str | None = None) -> str:
    """``flowkit <worker id> <pid>`` (``flowkit <pid>`` before a worker is registered)."""
    return " ".join(["flowkit", *([worker_id] if worker_id else []), str(os.getpid())])


def name_connections(broker: Any, name: str) -> None:
    """Give the connections ``broker`` opens from now on the client-provided ``name``."""
    params = getattr(broker, "parameters", None)
    for p in params if isinstance(params, list) else [params]:
        if p is not None and hasattr(p, "client_properties"):
            p.client_properties = {**(p.client_properties or {}), "connection_name": name}


def probe(broker: Any) -> None:
    """Before this thread publishes on ``broker``: drop its connection if RabbitMQ closed it.

    A connection this thread used less than :data:`PROBE_IDLE` ago costs nothing
    (no poll, and pika's logger is left alone); an idle healthy one costs one
    non-blocking poll; a closed one costs one line.
    """
    state = getattr(broker, "state", None)  # RabbitmqBroker: this thread's connection
    connection = getattr(state, "connection", None)
    now, last = time.monotonic(), getattr(_used, "at", None)
    _used.at = now
    if connection is None or (last is not None and now - last < PROBE_IDLE):
        return
    with quiet_pika():
        try:
            if connection.is_open:
                connection.process_data_events(0)
                return
            why = "closed"
        except Exception as exc:  # pika's errors, in words below
            why = redact(f"{type(exc).__name__}: {exc}")
    reconnecting(broker, why, None if last is None else now - last)


def reconnecting(broker: Any, why: str, idle: float | None = None) -> None:
    """Drop this thread's connection to ``broker``, which RabbitMQ closed (``why``), and say
    so in one INFO line; the next publish opens a new one."""
    with quiet_pika():
        try:
            del broker.connection
        except Exception:  # closing what is left of it
            log.debug("closing a dead connection failed", exc_info=True)
    idle_words = "" if idle is None else f", idle {idle:.0f}s"
    log.info(
        "RabbitMQ closed this thread's publishing connection (%s%s); reconnecting", why, idle_words
    )


class FreshConnections(Middleware):
    """Probes this thread's publishing connection before each message is enqueued, and
    names the connections of a worker after it as the worker boots."""

    def __init__(self) -> None:
        #: the id of this process's registered worker, once there is one
        self.worker_id: Callable[[], str | None] = lambda: None

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        name_connections(broker, connection_name(self.worker_id()))

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        probe(broker)
