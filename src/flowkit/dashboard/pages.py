"""The HTML pages (GET): runs, one run, flows, queues, workers, dead letters, login."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import FlowkitError
from ..redact import redact
from ..status import RunStatus
from . import views, views_ops
from .api import error_status
from .core import Dashboard
from .render import render
from .security import page_read, safe_next
from .signals import signal_forms
from .svg import draw

__all__ = ["error_page", "page_routes", "run_page", "BULK_CAP"]

log = logging.getLogger("flowkit.dashboard")

BULK_CAP = 1000
#: what a finished action says on the page it returns to (never text from the request)
DONE = {
    "cancelled": "The run was cancelled.",
    "not-cancelled": "The run had already ended; nothing was cancelled.",
    "retried": "The run was retried.",
    "signalled": "The signal was delivered; the waiting step runs now.",
    "signal-stored": "The signal was stored; the step takes it when it is reached.",
    "redriven": "The dead letters were re-driven.",
    "purged": "The dead letters were purged.",
}


async def error_page(dash: Dashboard, request: Request, status: int, message: str) -> Response:
    return render(dash, request, "error.html", {"status": status, "message": message}, status)


async def _page(
    dash: Dashboard, request: Request, template: str, build: Callable[[], dict[str, Any]]
) -> Response:
    """Build a page's data in a thread; flowkit errors become an error page, never a trace."""
    try:
        context = await run_in_threadpool(build)
    except FlowkitError as exc:
        return await error_page(dash, request, error_status(exc), redact(str(exc)))
    except Exception:
        log.exception("dashboard: unexpected error")
        return await error_page(dash, request, 500, "unexpected error (see the dashboard's log)")
    context.setdefault("done", DONE.get(request.query_params.get("done", ""), ""))
    return render(dash, request, template, context, context.pop("status", 200))


def runs_context(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    data = views.runs_page(dash, params)
    older = None
    if data["next_cursor"]:
        limit = {"limit": params["limit"]} if params.get("limit") else {}
        older = "/runs?" + urlencode({**data["filters"], **limit, "cursor": data["next_cursor"]})
    store = dash.store
    return {
        **data,
        "older": older,
        "query": urlencode(data["filters"]),
        "statuses": [s.value for s in RunStatus],
        "flows": sorted({f.name for f in dash.app.flows} | set(store.queries.counts_by_flow())),
        "error_types": store.queries.error_types(flow=data["filters"].get("flow")),
    }


def run_page(dash: Dashboard, run_id: str, from_step: str | None, **extra: Any) -> dict[str, Any]:
    """The run page's context (``extra``: a signal form's errors and values)."""
    run = views.run_detail(dash, run_id)
    graph = dash.graph(run["flow"])
    terminal = RunStatus(run["status"]).terminal
    preview = views.preview_or_reason(dash, run_id, from_step) if terminal else None
    if terminal and graph is None:
        preview = {"refused": "retrying " + views_ops.NEEDS_DEFINITIONS}
    return {
        "run": run,
        "dag": draw(graph, run["groups"], link="#step-"),
        "timeline": views.shown_timeline(run["steps"]),
        "terminal": terminal,
        "from_step": from_step or "",
        "step_names": list(graph.order()) if graph is not None else [],
        "preview": preview,
        "signal_forms": signal_forms(graph, run["signals"]),
        "signal_errors": extra.get("signal_errors", []),
        "signal_message": extra.get("signal_message", ""),
        "signal_values": extra.get("signal_values", {}),
        "status": extra.get("status", 200),
        "stranded": (dash.store.strands.state(run_id) or (None, None))[1],
    }


def bulk_context(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    """How many runs the bulk action would touch (at most :data:`BULK_CAP`)."""
    action = params.get("action", "")
    if action not in ("retry", "cancel"):
        return {"status": 400, "error": "the bulk action is retry or cancel", "ids": []}
    ids = matching_ids(dash, params)
    return {"action": action, "ids": ids, "capped": len(ids) >= BULK_CAP, "error": ""}


def matching_ids(dash: Dashboard, params: dict[str, str]) -> list[str]:
    f, _ = views.filter_from(params)
    ids: list[str] = []
    cursor = None
    while len(ids) < BULK_CAP:
        page = dash.store.queries.page(f, limit=min(500, BULK_CAP - len(ids)), cursor=cursor)
        ids += [r.id for r in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            break
    return ids[:BULK_CAP]


def page_routes(dash: Dashboard) -> list[Route]:
    def query(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    async def runs(request: Request) -> Response:
        return await _page(dash, request, "runs.html", lambda: runs_context(dash, query(request)))

    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        step = request.query_params.get("from_step") or None
        return await _page(dash, request, "run.html", lambda: run_page(dash, run_id, step))

    async def bulk(request: Request) -> Response:
        params = query(request)
        return await _page(
            dash,
            request,
            "bulk.html",
            lambda: {
                **bulk_context(dash, params),
                "filters": views.filter_from(params)[1],
            },
        )

    def flows_context() -> dict[str, Any]:
        data = views_ops.flows_json(dash)
        for f in data["flows"]:
            f["svg"] = draw(dash.graph(f["name"]))
        return data

    async def flows(request: Request) -> Response:
        return await _page(dash, request, "flows.html", flows_context)

    async def queues(request: Request) -> Response:
        return await _page(dash, request, "queues.html", lambda: views_ops.queues_page(dash))

    async def workers(request: Request) -> Response:
        return await _page(dash, request, "workers.html", lambda: views_ops.workers_page(dash))

    async def dead(request: Request) -> Response:
        return await _page(dash, request, "dead.html", lambda: views_ops.dead_page(dash))

    async def login(request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next"))
        return render(dash, request, "login.html", {"next": nxt, "error": "", "done": ""})

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=302)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    guarded = [
        ("/", home),
        ("/runs", runs),
        ("/runs/bulk", bulk),
        ("/runs/{run_id}", run),
        ("/flows", flows),
        ("/queues", queues),
        ("/workers", workers),
        ("/dead", dead),
    ]
    return [Route(p, page_read(dash, fn), methods=["GET"]) for p, fn in guarded] + [
        Route("/login", login, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
