"""Quickstart: analyse the sample documents and show how each queue was used.

::

    python examples/multiqueue/run.py           # --timeout S (120), --batch NAME, -v

With no configuration everything runs in this process: the memory broker with
worker threads serving all three queues, and the SQLite file ``flowkit.db`` in
the current directory; the analyses are written to ``$MQ_OUTPUT_DIR``, by default
``flowkit-multiqueue-analyses`` in the system's temporary folder. With
``FLOWKIT_BROKER_URL=amqp://...`` and ``FLOWKIT_DATABASE_URL=postgresql://...``
it only emits and waits, and one ``flowkit worker --queues Q`` per queue does
the work.

The summary lists each document's result, then per queue: which steps ran
there, how many ran at once at most (from the steps' recorded start and end
times) and the queue's limits. Exits 0 when every run succeeded, every step ran
on its queue and no queue ran more steps at once than its concurrency limit.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime

from app import analysis, app, default, ml, openai
from mq_samples import documents

import flowkit

EVENT = "document:uploaded"
QUEUES = {q.name: q for q in (default, ml, openai)}


class DelayCounter(flowkit.Observer):
    """Counts steps put off by a queue's limits (in this process: the embedded workers)."""

    def __init__(self) -> None:
        self.delays: Counter[str] = Counter()

    def step_delayed(self, *, flow: str, step: str, queue: str, seconds: float) -> None:
        self.delays[queue] += 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: how long to wait, which batch, how chatty."""
    parser = argparse.ArgumentParser(
        description="Analyse sample documents with a workflow whose steps run on three "
        "queues (default, ml, openai) and summarise how each queue was used."
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    parser.add_argument(
        "--batch",
        metavar="NAME",
        help="prefix of the run keys (default: a new time-based name per invocation)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser.parse_args(argv)


def peak(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant; an end and a start at the same time don't overlap."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, delta in events:  # at equal times the end (-1) sorts before the start (+1)
        now += delta
        best = max(best, now)
    return best


def queue_report(runs: list[flowkit.Run]) -> tuple[list[str], bool]:
    """One line per queue, and whether every queue kept to its route and limits."""
    route = {name: stage.queue for name, stage in analysis.steps.items()}
    steps: dict[str, list[flowkit.StepInfo]] = defaultdict(list)
    ok = True
    for run in runs:
        for s in run.steps():
            steps[s.queue].append(s)
            ok = ok and s.queue == route[s.name]
    lines = []
    for name, queue in QUEUES.items():
        ran = steps.get(name, [])
        spans = [(s.started_at, s.finished_at) for s in ran if s.started_at and s.finished_at]
        most = peak(spans)
        ok = ok and (queue.concurrency is None or most <= queue.concurrency)
        names = ", ".join(sorted({s.name for s in ran})) or "-"
        limits = [f"concurrency {queue.concurrency}"] if queue.concurrency else []
        limits += [f"rate {queue.rate_limit}"] if queue.rate_limit else []
        attempts = sum(s.attempts for s in ran)
        lines.append(
            f"  {name:<8} {len(ran):3d} steps ({names}), {attempts} attempts, "
            f"at most {most} at once; limits: {', '.join(limits) or 'none'}"
        )
    return lines, ok


def llm_usage(runs: list[flowkit.Run]) -> str:
    """The LLM calls, tokens and cost recorded on the runs' steps, as ``"; 6 calls, ..."``."""
    total: Counter[str] = Counter()
    cost = 0.0
    for run in runs:
        for s in run.steps():
            for k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens"):
                total[k] += int((s.usage or {}).get(k, 0))
            cost += float((s.usage or {}).get("cost", 0.0))
    if not total["calls"]:
        return ""
    return (
        f"; {total['calls']} LLM calls ({total['cached_calls']} cached), "
        f"{total['prompt_tokens']}+{total['completion_tokens']} tokens, ${cost:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Emit one event per document, wait, summarise; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    batch = args.batch or datetime.now().strftime("b%Y%m%d-%H%M%S-%f")[:-3]
    delays = DelayCounter()
    app.observers.append(delays)
    results: list[flowkit.Run] = []
    failures: list[str] = []
    started = time.monotonic()
    try:
        for doc in documents():
            results += app.emit(EVENT, doc, key=f"{batch}:{doc.document_id}")
        if not app.settings.embedded:
            print("emitted; waiting for `flowkit worker` processes...", file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        analyses = []
        for run in results:
            try:
                analyses.append(run.result(timeout=max(0.0, deadline - time.monotonic())))
            except flowkit.RunError as exc:
                failures.append(f"{run.id}: {exc}")
        elapsed = time.monotonic() - started
        lines, ok = queue_report(results)
        usage = llm_usage(results)
    except flowkit.FlowkitError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        app.close()
    print(f"document analysis, batch {batch}: {app.describe()}")
    for a in analyses:
        headline = a.headline if len(a.headline) <= 64 else a.headline[:61] + "..."
        print(f"  {a.document_id:<21} {a.risk:<6} {', '.join(a.keywords[:3]):<28} {headline}")
    for text in failures:
        print(f"  failed: {text}")
    print("queues:")
    for line in lines:
        print(line)
    if delays.delays:
        shown = ", ".join(f"{q} {n}" for q, n in sorted(delays.delays.items()))
        print(f"  put off by limits (not retries): {shown}")
    by = Counter(a.summarized_by for a in analyses)
    print(f"  summaries by   {', '.join(f'{k} {v}' for k, v in by.items()) or '-'}{usage}")
    print(f"  written to     {analyses[0].path.rsplit('/', 1)[0] if analyses else '-'}/")
    print(f"  elapsed        {elapsed:.2f}s")
    print("look at them:  flowkit runs list --flow document_analysis   (flowkit runs show RUN_ID)")
    return 0 if ok and not failures and len(analyses) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
