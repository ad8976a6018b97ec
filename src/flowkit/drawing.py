"""Drawing flows: Mermaid and Graphviz DOT text for a flow's graph.

.. versionadded:: 0.1
.. versionchanged:: 0.2
   moved from ``flowkit.graph``, which now holds :class:`~flowkit.graph.FlowGraph`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ._types import type_name
from .flows import Flow
from .graph import FlowGraph

__all__ = ["dot", "mermaid"]


def _graphs(flows: Flow | Iterable[Flow]) -> list[tuple[Flow, FlowGraph]]:
    return [(f, f.compile()) for f in ([flows] if isinstance(flows, Flow) else flows)]


def _is_join(graph: FlowGraph, step: str) -> bool:
    """Whether ``step`` joins several completions: several parents, or after a fan-out.

    (:meth:`FlowGraph.is_join` also counts a signal wait, which is drawn as a wait.)
    """
    parents = graph.parents(step)
    return len(parents) > 1 or any(graph.is_each(p) for p in parents)


def _ms_text(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0 and (unit != "d" or ms > 2 * size):
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _wait_text(graph: FlowGraph, step: str) -> str | None:
    """``signal 'approval', timeout 24h`` for a signal wait, else ``None``."""
    stage = graph.steps[step]
    if not stage.wait_for:
        return None
    timeout = stage.wait_timeout_ms
    return f"signal '{stage.wait_for}', " + (
        f"timeout {_ms_text(timeout)}" if timeout else "no timeout"
    )


def _node_id(graph: FlowGraph, step: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{graph.name}__{step}")


def _label(graph: FlowGraph, step: str) -> str:
    stage = graph.steps[step]
    kind = " (each item)" if graph.is_each(step) else ""
    kind = " (join)" if _is_join(graph, step) and not kind else kind
    sig = f"{type_name(stage.input_type)} → {type_name(stage.output_type)}"
    if stage.inputs:
        sig = f"{', '.join(stage.inputs)} → {type_name(stage.output_type)}"
    return f"{step}{kind}<br/>{sig}<br/>queue: {stage.queue}"


def _edges(graph: FlowGraph) -> Iterator[tuple[str, str, str]]:
    """``(parent id, child id, label)`` of every edge, in step order."""
    for step in graph.order():
        for child in graph.children(step):
            if graph.is_each(child):
                text = "each item"
            elif graph.is_each(step):
                text = "settled" if graph.settles(child, step) else "all items"
            else:
                text = ""
            yield _node_id(graph, step), _node_id(graph, child), text


def mermaid(flows: Flow | Iterable[Flow]) -> str:
    """A Mermaid ``flowchart`` of one or several flows (one subgraph each)."""
    lines = ["flowchart TD"]
    for flow, graph in _graphs(flows):
        lines.append(f'  subgraph {_node_id(graph, "")}["{graph.kind} {graph.name}"]')
        for step in graph.order():
            label = _label(graph, step).replace('"', "'")
            nid = _node_id(graph, step)
            shape = ("[[", "]]") if graph.is_each(step) else ("[", "]")
            if _is_join(graph, step):
                shape = ("{{", "}}")
            lines.append(f'    {nid}{shape[0]}"{label}"{shape[1]}')
        for parent, child, text in _edges(graph):
            arrow = f"-->|{text}|" if text else "-->"
            lines.append(f"    {parent} {arrow} {child}")
        for step in graph.order():
            wait = _wait_text(graph, step)
            if wait:
                sid = _node_id(graph, "signal_" + step)
                lines.append(f'    {sid}>"{wait}"] -.-> {_node_id(graph, step)}')
        for event in graph.events:
            eid = _node_id(graph, "event_" + event)
            lines.append(f'    {eid}(["on {event}"]) -.-> {_node_id(graph, graph.entry.name)}')
        if flow.schedule:
            cid = _node_id(graph, "schedule")
            lines.append(
                f'    {cid}(["schedule: cron {flow.schedule}"]) -.-> '
                f"{_node_id(graph, graph.entry.name)}"
            )
        lines.append("  end")
    return "\n".join(lines) + "\n"


def dot(flows: Flow | Iterable[Flow]) -> str:
    """The same graph in Graphviz DOT, for ``dot -Tsvg``."""
    lines = ["digraph flowkit {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for i, (flow, graph) in enumerate(_graphs(flows)):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label="{graph.kind} {graph.name}";')
        for step in graph.order():
            label = _label(graph, step).replace("<br/>", "\\n").replace('"', "'")
            shape = "hexagon" if _is_join(graph, step) else "box"
            shape = "box3d" if graph.is_each(step) else shape
            lines.append(f'    {_node_id(graph, step)} [label="{label}", shape={shape}];')
        for parent, child, text in _edges(graph):
            attr = f' [label="{text}"]' if text else ""
            lines.append(f"    {parent} -> {child}{attr};")
        for step in graph.order():
            wait = _wait_text(graph, step)
            if wait:
                sid = _node_id(graph, "signal_" + step)
                lines.append(f'    {sid} [label="{wait}", shape=cds];')
                lines.append(f"    {sid} -> {_node_id(graph, step)} [style=dashed];")
        if flow.schedule:
            cid = _node_id(graph, "schedule")
            lines.append(f'    {cid} [label="schedule: cron {flow.schedule}", shape=ellipse];')
            lines.append(f"    {cid} -> {_node_id(graph, graph.entry.name)} [style=dashed];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
