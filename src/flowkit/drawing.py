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


def _graphs(flows: Flow | Iterable[Flow]) -> list[FlowGraph]:
    return [f.compile() for f in ([flows] if isinstance(flows, Flow) else flows)]


def _node_id(graph: FlowGraph, step: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{graph.name}__{step}")


def _label(graph: FlowGraph, step: str) -> str:
    stage = graph.steps[step]
    kind = " (each item)" if graph.is_each(step) else ""
    kind = " (join)" if graph.is_join(step) and not kind else kind
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
    for graph in _graphs(flows):
        lines.append(f'  subgraph {_node_id(graph, "")}["{graph.kind} {graph.name}"]')
        for step in graph.order():
            label = _label(graph, step).replace('"', "'")
            nid = _node_id(graph, step)
            shape = ("[[", "]]") if graph.is_each(step) else ("[", "]")
            if graph.is_join(step):
                shape = ("{{", "}}")
            lines.append(f'    {nid}{shape[0]}"{label}"{shape[1]}')
        for parent, child, text in _edges(graph):
            arrow = f"-->|{text}|" if text else "-->"
            lines.append(f"    {parent} {arrow} {child}")
        for event in graph.events:
            eid = _node_id(graph, "event_" + event)
            lines.append(f'    {eid}(["on {event}"]) -.-> {_node_id(graph, graph.entry.name)}')
        lines.append("  end")
    return "\n".join(lines) + "\n"


def dot(flows: Flow | Iterable[Flow]) -> str:
    """The same graph in Graphviz DOT, for ``dot -Tsvg``."""
    lines = ["digraph flowkit {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for i, graph in enumerate(_graphs(flows)):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label="{graph.kind} {graph.name}";')
        for step in graph.order():
            label = _label(graph, step).replace("<br/>", "\\n").replace('"', "'")
            shape = "hexagon" if graph.is_join(step) else "box"
            shape = "box3d" if graph.is_each(step) else shape
            lines.append(f'    {_node_id(graph, step)} [label="{label}", shape={shape}];')
        for parent, child, text in _edges(graph):
            attr = f' [label="{text}"]' if text else ""
            lines.append(f"    {parent} -> {child}{attr};")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
