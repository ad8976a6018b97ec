"""Quickstart: price 100 items with async steps and show how many awaited at once.

::

    python examples/async_steps/run.py          # --items N (100), --timeout S (60)

With no configuration everything runs in this process: the memory broker with 4
worker threads and the SQLite file ``flowkit.db`` in the current directory. With
``FLOWKIT_BROKER_URL=amqp://...`` and ``FLOWKIT_DATABASE_URL=postgresql://...`` it
only submits and waits, and ``flowkit worker examples/async_steps/app.py:app`` does
the work.

Exits 0 when every run succeeded and more ``fetch_quotes`` steps were running at
once than the worker has threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from app import app, pricing

THREADS = 4


def peak(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Price items with async steps.")
    parser.add_argument("--items", type=int, default=100, help="runs to submit (100)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    args = parser.parse_args(argv)
    app.threads = THREADS
    began = time.monotonic()
    runs = [pricing.submit({"sku": f"sku-{i}", "quantity": 1 + i % 5}) for i in range(args.items)]
    deadline = time.monotonic() + args.timeout
    choices = [r.result(timeout=max(0.1, deadline - time.monotonic())) for r in runs]
    wall = time.monotonic() - began
    fetched = [
        (s.started_at, s.finished_at)
        for r in runs
        for s in r.steps()
        if s.name == "fetch_quotes" and s.started_at and s.finished_at
    ]
    at_once = peak(fetched)
    print(f"priced          {len(choices)}")
    print(f"first           {choices[0].sku} from {choices[0].supplier}")
    print(f"wall time       {wall:.1f} s")
    print(f"awaiting at once {at_once} (worker threads: {THREADS})")
    app.close()
    return 0 if len(choices) == args.items and at_once > THREADS else 1


if __name__ == "__main__":
    sys.exit(main())
