"""``flowkit submit --jsonl FILE``: one run per line of a JSON Lines file.

Every line is parsed and validated before the first run is stored, so a bad line
enqueues nothing; then the runs are submitted :data:`CHUNK` lines at a time with
``App.submit_many`` (one transaction and one batch of publishes per chunk), their ids
printed in the file's order, with progress on standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..app import App
from ..errors import ConfigurationError, InputValidationError, PayloadTooLarge
from ..flows import Flow
from ..payloads import PayloadLimits
from ..progress import Progress
from ..runtime.validation import check_input
from . import exits
from .waiting import Started, finish

__all__ = ["CHUNK", "read_lines", "submit_lines"]

#: Lines submitted together, in one ``submit_many`` call.
CHUNK = 500


def read_lines(raw: str) -> tuple[str, list[tuple[int, Any]]]:
    """The origin's name and its non-blank lines parsed, with their line numbers.

    Parameters:
        raw: a path, or ``-`` for standard input.

    Raises:
        ConfigurationError: the file cannot be read, or has no line of JSON.
        InputValidationError: a line is not JSON (naming the line).
        PayloadTooLarge: a line is nested too deeply to parse.
    """
    if raw == "-":
        origin, text = "stdin", sys.stdin.read()
    else:
        try:
            origin, text = raw, Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"--jsonl {raw}: cannot read it: {exc.strerror}") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            items.append((number, _parse(line, f"{origin} line {number}")))
    if not items:
        raise ConfigurationError(f"--jsonl {origin} has no JSON lines; nothing was enqueued")
    return origin, items


def _parse(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except RecursionError:
        raise PayloadTooLarge(
            f"{where} is nested too deeply to parse (FLOWKIT_MAX_PAYLOAD_DEPTH); "
            "nothing was enqueued",
            limit="depth",
        ) from None
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            f"{where} is not valid JSON: {exc.msg} (column {exc.colno}); nothing was enqueued",
            errors=[{"loc": [], "msg": exc.msg, "type": "json_invalid"}],
            stage="",
        ) from None


def submit_lines(app: App, flow: Flow, args: argparse.Namespace) -> int:
    """Validate every line of ``args.jsonl``, then submit one run per line.

    With ``--key K`` the run of line N gets the key ``K:N``, so submitting the same
    file again with the same key starts no new run. The lines go in chunks of
    :data:`CHUNK`, one ``submit_many`` each: a ``BrokerError`` raised after a chunk's
    commit leaves that chunk's runs stored (the recovery sweep publishes them), its ids
    unprinted; the same file with the same ``--key`` again completes it.
    """
    origin, items = read_lines(args.jsonl)
    graph, limits = flow.compile(), PayloadLimits.of(app.settings)
    for number, value in items:
        try:
            check_input(graph, value, limits)
        except PayloadTooLarge as exc:
            print(f"flowkit: error: {origin} line {number}: {exc}", file=sys.stderr)
            return exits.INVALID_INPUT
        except InputValidationError as exc:
            print(
                f"flowkit: invalid input for {flow.name!r} on {origin} line {number} "
                "(nothing was enqueued):",
                file=sys.stderr,
            )
            for err in exc.errors:
                loc = ".".join(str(p) for p in err.get("loc", [])) or "(root)"
                print(f"  {loc}: {err.get('msg')}", file=sys.stderr)
            return exits.INVALID_INPUT
    started: list[Started] = []
    with Progress("submitted", total=len(items)) as progress:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            keys = [f"{args.key}:{number}" for number, _ in chunk] if args.key else None
            runs = app.submit_many(flow, [value for _, value in chunk], keys=keys)
            named: list[str | None] = [*keys] if keys else [None] * len(runs)
            for run, key in zip(runs, named, strict=True):
                started.append((run, key))
                if not args.json:
                    print(run.id, flush=True)
                progress.advance()
    _note_duplicates(started, app, wait=bool(args.wait))
    return finish(app, started, args)


def _note_duplicates(started: list[Started], app: App, *, wait: bool) -> None:
    """One line on stderr for the keys that named existing runs, and where new runs run."""
    old = [run for run, _ in started if not run.created]
    if old:
        print(
            f"flowkit: {len(old)} of {len(started)} keys already named runs of flow "
            f"{old[0].flow!r}; no new run was started for them",
            file=sys.stderr,
        )
    if len(old) < len(started) and app.settings.embedded and not wait:
        print(
            "flowkit: the broker is memory:// (in-process): the runs are stored and will run "
            "when `flowkit dev` serves this flow",
            file=sys.stderr,
        )
