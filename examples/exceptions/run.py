"""Quickstart: push sample exceptions through the six-stage pipeline and summarise.

::

    python examples/exceptions/run.py                 # 200 exceptions, embedded
    python examples/exceptions/run.py --count 1000 --timeout 300 -v

With no configuration everything runs in this process: the memory broker with
worker threads, and the SQLite file ``flowkit.db`` in the current directory.
With ``FLOWKIT_BROKER_URL=amqp://...`` and ``FLOWKIT_DATABASE_URL=postgresql://...``
it only submits and waits, and ``flowkit worker`` processes do the work.

Each invocation submits a new batch: run keys are ``<batch>:<tenant_id>:<exception_id>``
with a time-based batch id, unless ``--batch NAME`` reuses one (submitting the
same key again returns the existing run instead of starting another).
Exits 0 when no run failed or was left unfinished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import app, pipeline
from exc_models import FeedbackRecord
from sample_data import generate

import flowkit

_SHOW_ERRORS = 5


@dataclass
class Tally:
    """What happened to the runs of one batch."""

    submitted: int = 0
    existing: int = 0
    succeeded: int = 0
    stopped: int = 0
    failed: int = 0
    unfinished: int = 0
    severity: Counter[str] = field(default_factory=Counter)
    playbook: Counter[str] = field(default_factory=Counter)
    outcome: Counter[str] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every run finished without failing (a run stopped early did not fail)."""
        return self.failed == 0 and self.unfinished == 0

    def add(self, result: Any) -> None:
        """Count a finished run's result: a FeedbackRecord, or a Stop's output."""
        if isinstance(result, FeedbackRecord):
            self.succeeded += 1
            self.severity[result.severity] += 1
            self.playbook[result.playbook_id] += 1
            self.outcome[result.outcome] += 1
        else:
            self.stopped += 1
            reason = str(result.get("reason", "?")) if isinstance(result, dict) else "?"
            self.stop_reasons[reason.split(" of ", 1)[0]] += 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: how many, how long to wait, which batch, how chatty."""
    parser = argparse.ArgumentParser(
        description="Submit sample exceptions to the flowkit exception pipeline and "
        "print a summary of the results."
    )
    parser.add_argument("--count", "-n", type=int, default=200, help="runs to submit (200)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for all runs (120)"
    )
    parser.add_argument(
        "--batch",
        metavar="NAME",
        help="prefix of the run keys; reusing a name returns that batch's existing runs "
        "(default: a new time-based name per invocation)",
    )
    parser.add_argument("--seed", type=int, default=7, help="sample data seed (7)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def collect(runs: list[flowkit.Run], timeout: float, tally: Tally) -> None:
    """Wait for each run until ``timeout`` seconds from now and count how it ended."""
    deadline = time.monotonic() + timeout
    with flowkit.Progress("finished", total=len(runs)) as progress:
        for run in runs:
            try:
                result = run.result(timeout=max(0.0, deadline - time.monotonic()))
            except flowkit.ResultTimeout:
                tally.unfinished += 1
            except flowkit.RunError as exc:  # RunFailed, or cancelled/timed out
                tally.failed += 1
                tally.errors.append(str(exc))
            else:
                tally.add(result)
            progress.advance()


def _counts(counter: Counter[str]) -> str:
    return "  ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"


def print_summary(tally: Tally, batch: str, elapsed: float) -> None:
    """The compact summary printed at the end."""
    reasons = f"  ({_counts(tally.stop_reasons)})" if tally.stopped else ""
    existing = f"  ({tally.existing} already existed in this batch)" if tally.existing else ""
    print(f"exceptions pipeline, batch {batch}: {app.describe()}")
    print(f"  submitted     {tally.submitted:6d}{existing}")
    print(f"  succeeded     {tally.succeeded:6d}")
    print(f"  stopped early {tally.stopped:6d}{reasons}")
    print(f"  failed        {tally.failed:6d}")
    if tally.unfinished:
        print(f"  unfinished    {tally.unfinished:6d}  (raise --timeout, or start workers)")
    print(f"  by severity   {_counts(tally.severity)}")
    print(f"  by playbook   {_counts(tally.playbook)}")
    print(f"  by outcome    {_counts(tally.outcome)}")
    rate = tally.submitted / elapsed if elapsed > 0 else 0.0
    print(f"  elapsed       {elapsed:.2f}s, {rate:.1f} runs/s")
    for line in tally.errors[:_SHOW_ERRORS]:
        print(f"  error: {line}")
    print("look at them:  flowkit runs list --flow exceptions   (flowkit runs show RUN_ID)")


def main(argv: list[str] | None = None) -> int:
    """Submit the sample batch, wait for it, print the summary; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    batch = args.batch or datetime.now().strftime("b%Y%m%d-%H%M%S-%f")[:-3]
    exceptions = generate(args.count, seed=args.seed)
    tally = Tally()
    started = time.monotonic()
    try:
        runs = []
        # On a terminal a progress bar, otherwise a line now and then (on stderr).
        with flowkit.Progress("submitted", total=len(exceptions)) as progress:
            for exc in exceptions:
                run = pipeline.submit(exc, key=f"{batch}:{exc.tenant_id}:{exc.exception_id}")
                runs.append(run)
                tally.submitted += 1
                tally.existing += not run.created
                progress.advance()
        if not app.settings.embedded:
            print(
                f"submitted {len(runs)} runs; waiting for `flowkit worker` processes...",
                file=sys.stderr,
            )
        collect(runs, args.timeout - (time.monotonic() - started), tally)
        elapsed = time.monotonic() - started
    except flowkit.FlowkitError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()
    print_summary(tally, batch, elapsed)
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
