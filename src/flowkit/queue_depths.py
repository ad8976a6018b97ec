"""Queue depths on RabbitMQ, read with passive declares (``flowkit status``, the dashboard)."""

from __future__ import annotations

from typing import Any

__all__ = ["queue_depths"]


def queue_depths(url: str, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Ready messages and consumers per queue (and its .DQ/.XQ), by passive declares.

    Raises:
        BrokerError: the broker cannot be reached (in words, its URL's password masked).
    """
    from .runtime.amqp import connect  # pika: only this read needs it

    out: dict[str, dict[str, Any]] = {}
    conn = connect(url, timeout=5)
    try:
        for q in queues:
            row: dict[str, Any] = {}
            for label, name in (("ready", q), ("delayed", f"{q}.DQ"), ("dead", f"{q}.XQ")):
                ch = conn.channel()
                try:
                    res = ch.queue_declare(name, passive=True)
                    row[label] = res.method.message_count
                    if label == "ready":
                        row["consumers"] = res.method.consumer_count
                    ch.close()
                except Exception:  # a queue nobody declared yet holds nothing
                    row[label] = 0
                    row.setdefault("consumers", 0)
            out[q] = row
    finally:
        conn.close()
    return out
