"""Rendering a run and its steps for ``flowkit runs show``."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from ..records import RunInfo, StepInfo
from ..status import StepStatus


def time_text(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def secs_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def usage_text(usage: dict[str, Any] | None) -> str:
    """``1200+340 tok $0.0012`` (and ``2 cached``) for a step's LLM usage."""
    if not usage:
        return "-"
    parts = []
    tokens = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    if any(tokens):
        parts.append(f"{tokens[0]}+{tokens[1]} tok")
    if usage.get("cost") is not None:
        parts.append(f"${usage['cost']:.4f}")
    if usage.get("cached_calls"):
        parts.append(f"{usage['cached_calls']} cached")
    return " ".join(parts) or "-"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _error_text(s: StepInfo) -> str:
    if isinstance(s.output, dict) and s.output.get("stopped"):
        return f"stopped the run: {s.output.get('reason') or '(no reason)'}"
    if not s.error:
        return "-"
    text = f"{s.error.get('type')}: {s.error.get('message')}"
    return text if len(text) <= 80 else text[:77] + "..."


def in_flow_order(steps: list[StepInfo], order: list[str]) -> list[StepInfo]:
    """``steps`` in flow order (``order``, topological), each step's fanned-out items by
    index, then by attempts; a step the flow no longer has keeps its place at the end."""
    rank = {name: i for i, name in enumerate(order)}
    created = {id(s): i for i, s in enumerate(steps)}
    return sorted(
        steps,
        key=lambda s: (
            rank.get(s.name, len(rank)),
            -1 if s.item is None else s.item,
            s.attempts,
            created[id(s)],
        ),
    )


def json_text(value: Any) -> str:
    """A payload on one line, as compact JSON."""
    return json.dumps(value, separators=(", ", ": "), default=str)


def print_run(
    run: RunInfo,
    steps: list[StepInfo],
    *,
    items: bool = False,
    shown: tuple[Any, Any] | None = None,
) -> None:
    """The run's header, then one line per step; fanned-out items grouped unless ``items``.

    ``shown`` is the run's ``(input, output)`` as they may be printed (secrets masked).
    """
    print(f"run      {run.id}")
    print(f"flow     {run.flow}")
    print(f"status   {run.status.value}")
    print(f"key      {run.key or '-'}")
    print(f"created  {time_text(run.created_at)}   duration {secs_text(run.duration)}")
    if run.stop_reason:
        print(f"stopped  {run.stop_reason}")
    if run.error:
        print(f"error    {run.error.get('type')}: {run.error.get('message')}")
    if shown is not None:
        print(f"input    {json_text(shown[0])}")
        if run.output is not None:
            print(f"output   {json_text(shown[1])}")
    total = _total_usage(steps)
    if total:
        print(f"llm      {usage_text(total)}")
    print()
    with_usage = any(s.usage for s in steps)
    head = ["STEP", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "ERROR"]
    table = [head + (["LLM"] if with_usage else [])]
    grouped: dict[str, list[StepInfo]] = {}
    for s in steps:
        if s.item is not None and not items:
            if s.name not in grouped:
                grouped[s.name] = []
                table.append([f"\0{s.name}"])  # placeholder, filled below
            grouped[s.name].append(s)
            continue
        name = s.name if s.item is None else f"{s.name}[{s.item}]"
        row = [
            name,
            s.status.value,
            str(s.attempts),
            time_text(s.started_at),
            secs_text(s.duration),
            _error_text(s),
        ]
        table.append(row + ([usage_text(s.usage)] if with_usage else []))
    for i, row in enumerate(table):
        if len(row) == 1 and row[0].startswith("\0"):
            table[i] = _group_row(grouped[row[0][1:]], with_usage)
    print_table(table)


def _group_row(group: list[StepInfo], with_usage: bool) -> list[str]:
    counts = Counter(s.status.value for s in group)
    status = ", ".join(f"{n} {st}" for st, n in counts.most_common())
    timed = [s for s in group if s.duration is not None]
    slowest = max(timed, key=lambda s: s.duration or 0.0) if timed else None
    failed = [s for s in group if s.error and s.status is StepStatus.FAILED]
    started = min((s.started_at for s in group if s.started_at), default=None)
    row = [
        f"{group[0].name} x{len(group)}",
        status,
        str(sum(s.attempts for s in group)),
        time_text(started),
        f"slowest [{slowest.item}] {secs_text(slowest.duration)}" if slowest else "-",
        f"{len(failed)} failed, e.g. [{failed[0].item}] {_error_text(failed[0])}"
        if failed
        else "-",
    ]
    if with_usage:
        row.append(usage_text(_total_usage(group)))
    return row


def _total_usage(steps: list[StepInfo]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for s in steps:
        for k, v in (s.usage or {}).items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return total


def print_family(parent: dict[str, Any] | None, children: list[dict[str, Any]]) -> None:
    """A child run's parent (the run and step that started it), and a run's child runs."""
    if parent is not None:
        item = "" if parent["item"] is None else f"[{parent['item']}]"
        print(f"\nparent   {parent['id']} (step {parent['step']}{item})")
    if children:
        print(f"\nchildren ({len(children)})")
        table = [["CHILD RUN", "FLOW", "STATUS", "STEP"]]
        for c in children:
            item = "" if c["item"] is None else f"[{c['item']}]"
            table.append([c["id"], c["flow"], c["status"], f"{c['step']}{item}"])
        print_table(table)
