"""The figures as a Markdown table: every row with its ratio and its target next to it."""

from __future__ import annotations

from typing import Any

from .peers import PEERS

HEADER = [
    "| scenario | peer | figures | ratio to raw Dramatiq (confirms off) | target |",
    "|---|---|---|---|---|",
]
#: Issue 15's targets: (figure, "≥" or "≤", bound) per row kind.
TARGETS: dict[str, list[tuple[str, str, float | int]]] = {
    "flowkit": [("throughput_ratio", "≥", 1.0), ("p50_ratio", "≤", 1.0)],
    "flowkit_stages": [("throughput_ratio", "≥", 0.6), ("p50_ratio", "≤", 2.0)],
    "latency": [("p50_ratio", "≤", 1.0)],
    "submit": [("runs_per_s", "≥", 500)],
    "submit_many": [("runs_per_s", "≥", 2000)],
    "fanout": [("ratio", "≤", 2.0)],
    "concurrency": [("busy_fraction", "≥", 0.9)],
}
#: A run whose submit loop took at least this share of its wall time was paced by the submitter.
SUBMITTER_BOUND = 0.9
SHORT = {"throughput_ratio": "throughput", "p50_ratio": "p50", "ratio": "", "runs_per_s": ""}


def target(kind: str, figs: dict[str, Any], unit: str = "x") -> str:
    """``"throughput ≥ 1.0x: met, p50 ≤ 1.0x: missed"`` for ``figs``; empty without one."""
    parts = []
    for key, op, bound in TARGETS.get(kind, []):
        value = figs.get(key)
        label = SHORT.get(key, key.replace("_", " "))
        text = f"{label} {op} {bound:,}{unit}".strip()
        if value is None:
            parts.append(text)
            continue
        met = value >= bound if op == "≥" else value <= bound
        parts.append(f"{text}: {'met' if met else 'missed'}")
    return ", ".join(parts)


def _ratio(r: dict[str, Any]) -> str:
    if not r:
        return ""
    return f"throughput {r['throughput_ratio']}x, p50 {r['p50_ratio']}x"


def _fig(f: dict[str, Any], sequential: bool = False) -> str:
    if "throughput" not in f:
        return str(f.get("skipped") or f"error: {f.get('error')}")
    if sequential:
        shown = f"p50 / p95 / p99 {f['p50_ms']} / {f['p95_ms']} / {f['p99_ms']} ms"
    else:
        shown = f"{f['throughput']} items/s, p50 {f['p50_ms']} ms"
        if "submit_seconds" in f:
            # The submit loop took (nearly) all the time: the submitter set the pace, so the
            # workers never queued items, and the p50 under load is not comparable.
            bound = f["submit_seconds"] >= SUBMITTER_BOUND * f["seconds"]
            shown += f" (submitted in {f['submit_seconds']} of {f['seconds']} s"
            shown += ": submitter-bound)" if bound else ")"
    return shown + (f" ({f['note']})" if f.get("note") else "")


def _label(key: str) -> str:
    return PEERS[key][0] if key in PEERS else key


def _pipeline(r: dict[str, Any], rows: list[str]) -> None:
    for n in (1, 2):
        for i, pair in enumerate(r.get(f"pipeline_{n}p", []), 1):
            scenario = f"6-stage pipeline, {n} x 8 threads, pair {i}"
            for key, fig in pair.items():
                if key == "ratios":
                    continue
                ratio = pair["ratios"].get(key, {})
                goal = target("flowkit", ratio) if key == "flowkit" else ""
                rows.append(
                    f"| {scenario} | {_label(key)} | {_fig(fig)} | {_ratio(ratio)} | {goal} |"
                )
                scenario = ""


def _stages(r: dict[str, Any], rows: list[str]) -> None:
    for n in (1, 2):
        for i, pair in enumerate(r.get(f"stages_{n}p", []), 1):
            ratio = pair["ratios"]["flowkit_stages"]
            rows.append(
                f"| per-stage workers against raw {n} x 8, pair {i} "
                f"| raw Dramatiq {n} x 8 threads, confirms off "
                f"| {_fig(pair['raw'])} | | |"
            )
            rows.append(
                f"| | flowkit, 6 `--stages` workers x {pair['stage_threads']} threads "
                f"| {_fig(pair['flowkit_stages'])} | {_ratio(ratio)} "
                f"| {target('flowkit_stages', ratio)} |"
            )


def _latency(r: dict[str, Any], rows: list[str]) -> None:
    lat = r.get("latency")
    if not lat:
        return
    scenario = f"single item latency ({lat['raw'].get('items', '?')} sequential, 1 x 8)"
    for key, fig in lat.items():
        if key == "ratios":
            continue
        ratio = lat["ratios"].get(key, {})
        shown = f"p50 {ratio['p50_ratio']}x" if ratio else ""
        goal = target("latency", ratio) if key == "flowkit" else ""
        rows.append(f"| {scenario} | {_label(key)} | {_fig(fig, True)} | {shown} | {goal} |")
        scenario = ""


def _submit(r: dict[str, Any], rows: list[str]) -> None:
    s = r.get("submit")
    if not s:
        return
    for key, kind, what in (
        ("sequential", "submit", "`submit`, sequential, no worker running"),
        ("many", "submit_many", "`submit_many`, batches of {batch:,}, no worker running"),
    ):
        f = s.get(key, {})
        what = what.format(batch=f.get("batch", 1000))
        if "runs_per_s" not in f:
            rows.append(f"| {what} | flowkit | {f.get('skipped', 'not run')} | | |")
            continue
        shown = (
            f"{f['runs_per_s']} runs/s ({f['runs']:,} in {f['seconds']} s; "
            f"{f['runs_per_s_with_flush']} runs/s with the close's flush)"
        )
        rows.append(f"| {what} | flowkit | {shown} | | {target(kind, f, ' runs/s')} |")


def _fanout(r: dict[str, Any], rows: list[str]) -> None:
    f = r.get("fanout")
    if not f:
        return
    what = f"fan-out {f['children']:,} -> join"
    rows.append(f"| {what} | raw Dramatiq, group callback | {f['raw_seconds']} s | | |")
    rows.append(
        f"| | flowkit, durable join | {f['flowkit_seconds']} s | {f['ratio']}x "
        f"| {target('fanout', f)} |"
    )


def _concurrency(r: dict[str, Any], rows: list[str]) -> None:
    c = r.get("concurrency")
    if not c:
        return
    rows.append(
        f"| concurrency {c['limit']}, {c['runs']} x {c['step_seconds']:g} s steps, 1 x 8 "
        f"threads | flowkit ({c['submitted_with']}) | busy {c['busy_fraction']} "
        f"({c['wall_seconds']} s from the first claim to the last end; "
        f"measured {c['busy_fraction_measured']}) | | {target('concurrency', c, '')} |"
    )


def _rest(r: dict[str, Any], rows: list[str]) -> None:
    if "store" in r:
        st = r["store"]
        rows.append(
            f"| {st['runs']:,} runs, CLI wall time: runs list --status failed / runs show / "
            f"status (interpreter start {st['cli_startup_ms']} ms included) | flowkit | "
            f"{st['runs_list_failed_ms']} / {st['runs_show_ms']} / {st['status_ms']} ms | | |"
        )
        q = st.get("queries")
        if q:
            rows.append(
                f"| {st['runs']:,} runs, the same queries in a running process (median of 5) "
                f"| flowkit | {q['runs_list_failed_ms']} / {q['runs_show_ms']} / "
                f"{q['status_ms']} ms | | |"
            )
    if "dashboard" in r:
        d = dict(r["dashboard"])
        n = d.pop("runs")
        for name, value in d.items():
            rows.append(
                f"| dashboard on {n:,} runs: {name} (server time, median of 5) | flowkit "
                f"| {value} ms | | |"
            )
    if "memory" in r:
        m = r["memory"]
        rows.append(
            f"| worker RSS idle / after each 2,000 steps | flowkit | {m['idle_mb']} MB / "
            f"{', '.join(str(x) for x in m['after_each_2000_steps_mb'])} MB | | |"
        )
    if "embedded" in r:
        e = r["embedded"]
        rows.append(
            f"| embedded (memory broker + SQLite): exception example | flowkit | "
            f"{e['runs_per_s']} runs/s ({e['exceptions']} in {e['seconds']} s) | | |"
        )
    if "async" in r:
        a, s = r["async"]["async"], r["async"]["sync"]
        rows.append(
            f"| {a['runs']} one-second steps at once, 1 x 8 threads: async def / sync | flowkit "
            f"| {a['wall_seconds']} s (peak {a['peak_running']} running) / {s['wall_seconds']} s "
            f"(peak {s['peak_running']}) | | async < 3 s |"
        )


def table(r: dict[str, Any]) -> str:
    """The figures as a Markdown table (the docs' Performance page shows the same)."""
    rows = list(HEADER)
    for part in (_pipeline, _stages, _latency, _submit, _fanout, _concurrency, _rest):
        part(r, rows)
    for key, value in r.items():
        if key.endswith("_error"):
            rows.append(f"| {key.removesuffix('_error')} | | FAILED: {value} | | |")
    return "\n".join(rows)
