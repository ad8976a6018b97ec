"""Re-driving dead letters (``flowkit dead retry``, the dashboard's dead-letter page).

A dead letter of a failed step retries its run from the failed step; any other
dead letter that is a valid message is sent again to its queue. Re-driven
letters are removed from the record.
"""

from __future__ import annotations

from collections.abc import Collection

from .app import App

__all__ = ["redrive_dead_letters"]


def redrive_dead_letters(app: App, ids: Collection[str] | None) -> tuple[int, int]:
    """Re-drive the dead letters named by ``ids`` (every one when ``None``).

    Returns:
        ``(re-driven, skipped)``: how many were re-driven, and how many cannot be
        (not a valid message).
    """
    from .runtime.quarantine import decode_stored  # the runtime loads on first use

    app.broker  # noqa: B018 - installs the encoder (and keys) that check stored bodies
    letters = app.store.dead_letters.newest(limit=100_000)
    if ids is not None:
        wanted = set(ids)
        letters = [d for d in letters if d.id in wanted]
    done: list[str] = []
    skipped = 0
    runs_retried: set[str] = set()
    for d in letters:
        if d.run_id and d.reason.startswith("step failed"):
            if d.run_id not in runs_retried:
                app.retry(d.run_id)
                runs_retried.add(d.run_id)
            done.append(d.id)
            continue
        if d.body and d.queue and not d.body.startswith("base64:"):
            try:
                # Checked like a delivery (signature, limits), not recorded again.
                message = decode_stored(d.body)
            except Exception:
                skipped += 1
                continue
            app.broker.enqueue(message.copy(options={}))
            done.append(d.id)
            continue
        skipped += 1
    if done:
        app.store.dead_letters.delete(done)
    return len(done), skipped
