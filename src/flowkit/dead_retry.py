"""Re-driving dead letters (``flowkit dead retry``, the dashboard's dead-letter page).

A dead letter of a failed step retries its run from the failed step; any other
dead letter that is a valid message is sent again to its queue. Re-driven
letters are removed from the record.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from .app import App
from .progress import Progress

if TYPE_CHECKING:
    from .store.deadletters import DeadLetter

__all__ = ["redrive_dead_letters"]


def redrive_dead_letters(
    app: App, ids: Collection[str] | None, *, progress: Progress | None = None
) -> tuple[int, int]:
    """Re-drive the dead letters named by ``ids`` (every one when ``None``).

    Parameters:
        app: the App whose store holds them (and whose flows retry their runs).
        ids: which dead letters; ``None`` for all.
        progress: told how many letters there are, and each one handled.

    Returns:
        ``(re-driven, skipped)``: how many were re-driven, and how many cannot be
        (not a valid message).

    Raises:
        BrokerError: the broker cannot be reached; nothing was re-driven.
    """
    from .runtime.brokers import check_broker  # the runtime loads on first use

    # Opening the broker installs the encoder (and keys) that check stored bodies;
    # connecting now means nothing is re-driven or removed while RabbitMQ is down.
    check_broker(app.broker, app.settings.broker_url)
    letters = app.store.dead_letters.newest(limit=100_000)
    if ids is not None:
        wanted = set(ids)
        letters = [d for d in letters if d.id in wanted]
    if progress is not None:
        progress.update(0, total=len(letters))
    done: list[str] = []
    skipped = 0
    runs_retried: set[str] = set()
    for d in letters:
        if _redrive(app, d, runs_retried):
            done.append(d.id)
        else:
            skipped += 1
        if progress is not None:
            progress.advance()
    if done:
        app.store.dead_letters.delete(done)
    return len(done), skipped


def _redrive(app: App, d: DeadLetter, runs_retried: set[str]) -> bool:
    """Re-drive one dead letter; ``False`` if it cannot be (not a valid message)."""
    from .runtime.quarantine import decode_stored  # the runtime loads on first use

    if d.run_id and d.reason.startswith("step failed"):
        if d.run_id not in runs_retried:
            app.retry(d.run_id)
            runs_retried.add(d.run_id)
        return True
    if not d.body or not d.queue or d.body.startswith("base64:"):
        return False
    try:
        # Checked like a delivery (signature, limits), not recorded again.
        message = decode_stored(d.body)
    except Exception:
        return False
    app.broker.enqueue(message.copy(options={}))
    return True
