"""Building the runtime for an :class:`~flowkit.App`: the parts, handed to each other.

The App calls :func:`build_runtime` on first use, so a command that only reads
the database never imports Dramatiq's brokers and workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dramatiq

from .payloads import PayloadLimits
from .runtime.actors import declare_actors
from .runtime.brokers import (
    create_broker,
    name_worker_connections,
    secure_process,
    set_dead_letter_recorder,
    set_unknown_step_check,
)
from .runtime.engine import Engine
from .runtime.publisher import MAX_HOP_MS, publisher_for
from .runtime.stranded import unknown_step

if TYPE_CHECKING:
    from .app import App

__all__ = ["build_runtime"]


def build_runtime(app: App) -> tuple[Engine, dramatiq.Broker]:
    """The App's Engine and broker: its store, a broker and publisher for its URL, its
    flows compiled, its observers, its actors declared.

    Raises:
        ConfigurationError: an unsupported broker URL.
        BrokerError: the broker cannot be used.
    """
    store = app.store
    s = app.settings
    broker = create_broker(s.broker_url, max_priority=app.max_priority, queue_type=s.queue_type)
    set_dead_letter_recorder(broker, store.dead_letters.record)
    secure_process(app.settings)
    graphs = [f.compile() for f in app.flows]
    set_unknown_step_check(broker, unknown_step(store, graphs))
    engine = Engine(
        graphs,
        store,
        publisher_for(
            broker, max_hop_ms=app.timer_hop_ms or MAX_HOP_MS, url=app.settings.broker_url
        ),
        limits=PayloadLimits.of(app.settings),
        observers=app.observers,
        on_finished=app.finishes.notify,
        context_app=app,
        llm_model=app.llm_model,
        llm_prices=app.llm_prices,
    )
    declare_actors(engine, broker, graphs)
    name_worker_connections(broker, lambda: engine.worker_id)  # flowkit <worker id> <pid>
    return engine, broker
