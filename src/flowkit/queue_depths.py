"""Queue depths on RabbitMQ, read with passive declares (``flowkit status``, the dashboard)."""

from __future__ import annotations

from typing import Any

from .config import mask_url
from .errors import BrokerError

__all__ = ["queue_depths"]


def queue_depths(url: str, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Ready messages and consumers per queue (and its .DQ/.XQ), by passive declares.

    Raises:
        BrokerError: the broker cannot be reached (its URL's password masked).
    """
    import pika  # the RabbitMQ client: only this read needs it

    out: dict[str, dict[str, Any]] = {}
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception as exc:
        raise BrokerError(
            f"cannot connect to broker {mask_url(url)}: {type(exc).__name__}"
        ) from exc
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
