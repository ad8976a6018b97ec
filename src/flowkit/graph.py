"""Drawing flows: Mermaid and Graphviz DOT text for a flow's graph.

.. versionadded:: 0.1
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._types import type_name
from .flows import Flow

__all__ = ["dot", "mermaid"]


def _node_id(flow: Flow, step: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{flow.name}__{step}")


def _label(flow: Flow, step: str) -> str:
    stage = flow.steps[step]
    kind = " (each item)" if flow.is_each(step) else ""
    kind = " (join)" if flow.is_join(step) and not kind else kind
    sig = f"{type_name(stage.input_type)} → {type_name(stage.output_type)}"
    if stage.inputs:
        sig = f"{', '.join(stage.inputs)} → {type_name(stage.output_type)}"
    return f"{step}{kind}<br/>{sig}<br/>queue: {stage.queue}"


def _edge_label(flow: Flow, parent: str, child: str) -> str:
    if flow.is_each(child):
        return "each item"
    if flow.is_each(parent):
        return "settled" if flow.settles(child, parent) else "all items"
    return ""


def mermaid(flows: Flow | Iterable[Flow]) -> str:
    """A Mermaid ``flowchart`` of one or several flows (one subgraph each)."""
    items = [flows] if isinstance(flows, Flow) else list(flows)
    lines = ["flowchart TD"]
    for flow in items:
        lines.append(f'  subgraph {_node_id(flow, "")}["{flow.kind} {flow.name}"]')
        for step in flow.order():
            label = _label(flow, step).replace('"', "'")
            nid = _node_id(flow, step)
            shape = ("[[", "]]") if flow.is_each(step) else ("[", "]")
            if flow.is_join(step):
                shape = ("{{", "}}")
            lines.append(f'    {nid}{shape[0]}"{label}"{shape[1]}')
        for step in flow.order():
            for child in flow.children(step):
                text = _edge_label(flow, step, child)
                arrow = f"-->|{text}|" if text else "-->"
                lines.append(f"    {_node_id(flow, step)} {arrow} {_node_id(flow, child)}")
        for event in flow.events:
            eid = _node_id(flow, "event_" + event)
            lines.append(f'    {eid}(["on {event}"]) -.-> {_node_id(flow, flow.entry.name)}')
        lines.append("  end")
    return "\n".join(lines) + "\n"


def dot(flows: Flow | Iterable[Flow]) -> str:
    """The same graph in Graphviz DOT, for ``dot -Tsvg``."""
    items = [flows] if isinstance(flows, Flow) else list(flows)
    lines = ["digraph flowkit {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for i, flow in enumerate(items):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label="{flow.kind} {flow.name}";')
        for step in flow.order():
            label = _label(flow, step).replace("<br/>", "\\n").replace('"', "'")
            shape = "box3d" if flow.is_each(step) else ("hexagon" if flow.is_join(step) else "box")
            lines.append(f'    {_node_id(flow, step)} [label="{label}", shape={shape}];')
        for step in flow.order():
            for child in flow.children(step):
                text = _edge_label(flow, step, child)
                attr = f' [label="{text}"]' if text else ""
                lines.append(f"    {_node_id(flow, step)} -> {_node_id(flow, child)}{attr};")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
