"""A flow's graph drawn as SVG on the server: no JavaScript, no layout library.

Steps are placed in layers (a step sits one layer below its deepest parent),
left to right in declaration order inside a layer; edges are straight lines
with an arrow. A fanned-out step is one node, labelled with its item counts.
Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

from ..graph import FlowGraph

__all__ = ["draw"]

W, H = 210, 54
GAP_X, GAP_Y = 30, 46
PAD = 12
TIMES = "\u00d7"  # the multiplication sign: 'match TIMES 300'


def _layers(graph: FlowGraph | None, names: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for name in names:
        parents = graph.parents(name) if graph is not None and name in graph.steps else []
        known = [depth[p] for p in parents if p in depth]
        # Without the flow's definitions the steps are drawn as a column, in run order.
        depth[name] = (max(known) + 1 if known else 0) if graph is not None else len(depth)
    return depth


def _places(depth: dict[str, int]) -> dict[str, tuple[int, int]]:
    col: dict[int, int] = {}
    places = {}
    for name, d in depth.items():
        i = col.get(d, 0)
        col[d] = i + 1
        places[name] = (PAD + i * (W + GAP_X), PAD + d * (H + GAP_Y))
    return places


def _label(name: str, group: Mapping[str, Any] | None, graph: FlowGraph | None) -> tuple[str, str]:
    if group is None:  # the flow page: the step's kind and queue
        stage = graph.steps[name] if graph is not None else None
        kind = ""
        if graph is not None and graph.is_each(name):
            kind = " (each)"
        elif graph is not None and graph.is_join(name):
            kind = " (waits)" if stage is not None and stage.wait_for else " (join)"
        return name + kind, f"queue {stage.queue}" if stage is not None else ""
    counts = group.get("counts", {})
    if group.get("each"):
        detail = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no items yet"
        return f"{name} {TIMES}{group.get('total', 0)}", detail
    return name, str(group.get("status", ""))


def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def draw(
    graph: FlowGraph | None,
    groups: list[Mapping[str, Any]] | None = None,
    *,
    link: str = "",
) -> Markup:
    """The SVG of a flow (``groups`` None) or of one run (one group per step, its state).

    Parameters:
        graph: the flow's graph; without it (no definitions), the run's steps in a column.
        groups: a run's step groups (:func:`~flowkit.dashboard.views.step_groups`).
        link: a prefix for each node's link (``#step-`` links a node to its timeline row).
    """
    by_name = {g["name"]: g for g in groups} if groups is not None else {}
    names = list(graph.order()) if graph is not None else list(by_name)
    names += [n for n in by_name if n not in names]
    places = _places(_layers(graph, names))
    width = max((x for x, _ in places.values()), default=0) + W + PAD
    height = max((y for _, y in places.values()), default=0) + H + PAD
    out = [
        f'<svg id="dag" class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/>'
        "</marker></defs>",
    ]
    if graph is not None:
        for name in names:
            if name not in graph.steps:
                continue
            for child in graph.children(name):
                (x1, y1), (x2, y2) = places[name], places[child]
                out.append(
                    f'<line class="edge" x1="{x1 + W // 2}" y1="{y1 + H}" x2="{x2 + W // 2}" '
                    f'y2="{y2}" marker-end="url(#arrow)"/>'
                )
    for name in names:
        x, y = places[name]
        group = by_name.get(name) if groups is not None else None
        top, bottom = _label(name, group, graph)
        status = str(group.get("status", "")) if group else ""
        each = bool(group.get("each")) if group else bool(graph and graph.is_each(name))
        cls = "node fanout-node" if each else "node"
        attrs = (
            f'class="{cls} status-{escape(status.replace(" ", "-"))}" data-step="{escape(name)}"'
        )
        if status:
            attrs += f' data-status="{escape(status)}"'
        shape = (
            f'<rect x="{x + 5}" y="{y - 5}" width="{W}" height="{H}" rx="6" class="shadow"/>'
            if each
            else ""
        )
        node = (
            f"<g {attrs}><title>{escape(top)} — {escape(bottom)}</title>{shape}"
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 21}" class="name">{escape(_short(top))}</text>'
            f'<text x="{x + 10}" y="{y + 41}" class="detail">{escape(_short(bottom, 34))}</text>'
            "</g>"
        )
        if link and group is not None and group.get("total"):
            node = f'<a href="{escape(link + name)}">{node}</a>'
        out.append(node)
    out.append("</svg>")
    return Markup("".join(out))
