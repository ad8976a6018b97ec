"""``flowkit retry``: one run, or every run a filter matches (with progress on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from .._types import parse_duration_ms
from ..app import App
from ..errors import BrokerError, ConfigurationError, FlowkitError
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
    if getattr(args, "stranded", False):
        return _retry_many(app, _stranded_runs(app, args), args, "stranded")
    since = None
    if args.since:
        ms = parse_duration_ms(args.since, what="--since") or 0
        since = datetime.now(timezone.utc) - timedelta(milliseconds=ms)
    status = RunStatus(args.status or RunStatus.FAILED)
    runs = [
        r.id
        for r in app.runs(flow=args.flow, status=status, limit=args.limit)
        if since is None or r.created_at >= since
    ]
    return _retry_many(app, runs, args, status.value)


def _stranded_runs(app: App, args: argparse.Namespace) -> list[str]:
    """The stranded runs ``--stranded`` retries (``--from`` names where they start)."""
    if not args.from_step:
        raise ConfigurationError(
            "--stranded needs --from STEP: the step of the deployed definition to start from"
        )
    return [r.id for r in app.store.strands.stranded(flow=args.flow, limit=args.limit)]


def _retry_many(app: App, runs: list[str], args: argparse.Namespace, what: str) -> int:
    """Retry (or preview) each of ``runs``: a refusal is reported and the others go on."""
    done: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    label = "checked" if args.dry_run else "retried"
    with Progress(label, total=len(runs)) as progress:
        for run_id in runs:
            try:
                done.append(_retry_one(app, run_id, args))
            except BrokerError:  # down for every run: one line, exit 6 (nothing changed)
                raise
            except FlowkitError as exc:
                refused.append({"run_id": run_id, "error": str(exc)})
                print(f"run {run_id}: not retried: {exc}", file=sys.stderr)
            progress.advance()
    if args.json:
        doc = {"dry_run": bool(args.dry_run), "status": what, "runs": done}
        print(json.dumps({**doc, "not_retried": refused}))
    else:
        verb = "would retry" if args.dry_run else "retried"
        print(f"{verb} {len(done)} of {len(runs)} {what} run(s)")
    return exits.OK if not refused else exits.UNEXPECTED


def _retry_one(app: App, run_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Retry (or with ``--dry-run`` preview) one run; its line printed unless ``--json``."""
    if args.dry_run:
        p = app.retry_preview(run_id, from_step=args.from_step)
        if not args.json:
            kept = f"; keeps {p.kept_items} succeeded item(s) of {p.start}" if p.kept_items else ""
            kept += f"; drops {', '.join(p.dropped)}" if p.dropped else ""
            reused = ", ".join(p.reused) or "nothing"
            print(f"run {run_id}: would re-run {', '.join(p.rerun)}; reuses {reused}{kept}")
        return {
            "run_id": run_id,
            "start": p.start,
            "rerun": list(p.rerun),
            "reused": list(p.reused),
            "kept_items": p.kept_items,
            "stranded": p.stranded,
            "dropped": list(p.dropped),
        }
    names = app.retry(run_id, from_step=args.from_step)
    if not args.json:
        print(f"run {run_id}: re-queued {', '.join(names) or 'nothing'}")
    return {"run_id": run_id, "requeued": list(names)}
