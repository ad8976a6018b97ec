"""``flowkit retry``: one run, or every run a filter matches (with progress on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from .._types import parse_duration_ms
from ..app import App
from ..errors import BrokerError, FlowkitError
from ..progress import Progress
from ..status import RunStatus
from . import exits

__all__ = ["retry_runs"]


def retry_runs(app: App, args: argparse.Namespace) -> int:
    """Retry ``args.run_id``, or in bulk every run of ``--status``/``--flow``/``--since``.

    Prints a line per run (or with ``--json`` one object for them all). A run that
    cannot be retried stops a single retry with its error; in bulk it is reported and
    the others go on, and the exit code is then 1.
    """
    if args.run_id:
        entry = _retry_one(app, args.run_id, args)
        if args.json:
            print(json.dumps({"dry_run": bool(args.dry_run), "runs": [entry], "not_retried": []}))
        return exits.OK
    since = None
    if args.since:
        ms = parse_duration_ms(args.since, what="--since") or 0
        since = datetime.now(timezone.utc) - timedelta(milliseconds=ms)
    status = RunStatus(args.status or RunStatus.FAILED)
    runs = [
        r
        for r in app.runs(flow=args.flow, status=status, limit=args.limit)
        if since is None or r.created_at >= since
    ]
    done: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    label = "checked" if args.dry_run else "retried"
    with Progress(label, total=len(runs)) as progress:
        for info in runs:
            try:
                done.append(_retry_one(app, info.id, args))
            except BrokerError:  # down for every run: one line, exit 6 (nothing changed)
                raise
            except FlowkitError as exc:
                refused.append({"run_id": info.id, "error": str(exc)})
                print(f"run {info.id}: not retried: {exc}", file=sys.stderr)
            progress.advance()
    if args.json:
        doc = {"dry_run": bool(args.dry_run), "status": status.value, "runs": done}
        print(json.dumps({**doc, "not_retried": refused}))
    else:
        what = "would retry" if args.dry_run else "retried"
        print(f"{what} {len(done)} of {len(runs)} {status.value} run(s)")
    return exits.OK if not refused else exits.UNEXPECTED


def _retry_one(app: App, run_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Retry (or with ``--dry-run`` preview) one run; its line printed unless ``--json``."""
    if args.dry_run:
        p = app.retry_preview(run_id, from_step=args.from_step)
        if not args.json:
            kept = f"; keeps {p.kept_items} succeeded item(s) of {p.start}" if p.kept_items else ""
            reused = ", ".join(p.reused) or "nothing"
            print(f"run {run_id}: would re-run {', '.join(p.rerun)}; reuses {reused}{kept}")
        return {
            "run_id": run_id,
            "start": p.start,
            "rerun": list(p.rerun),
            "reused": list(p.reused),
            "kept_items": p.kept_items,
        }
    names = app.retry(run_id, from_step=args.from_step)
    if not args.json:
        print(f"run {run_id}: re-queued {', '.join(names) or 'nothing'}")
    return {"run_id": run_id, "requeued": list(names)}
