"""Rendering pages: one Jinja2 environment (autoescape on) over the package's templates."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..__about__ import __version__
from ..config import mask_url
from .core import Dashboard
from .security import authorized, csrf_token, set_cookies
from .shown import pretty

__all__ = ["render"]


def _when(value: str | datetime | None) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _clock(value: str | datetime | None) -> str:
    """The time of day, UTC (``HH:MM:SS``), as the pages' other times."""
    return _when(value)[-8:] if value else "-"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}m" if value < 7200 else f"{value / 3600:.1f}h"


def _ms(value: int | None) -> str:
    return "-" if value is None else _secs(value / 1000)


@functools.cache
def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flowkit.dashboard", "templates"),
        autoescape=True,  # every value is text: a key holding <script> shows as text
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, clock=_clock, secs=_secs, ms=_ms, tojson_pretty=pretty)
    return Jinja2Templates(env=env)


def render(
    dash: Dashboard, request: Request, name: str, context: dict[str, Any], status: int = 200
) -> Response:
    """A page, with what every page needs (the CSRF token, whether actions are shown)."""
    settings = dash.app.settings
    base = {
        "dash": dash,
        "csrf": csrf_token(request),
        "can_act": dash.actions and authorized(dash, request),
        "logged_in": dash.token is not None and authorized(dash, request),
        "version": __version__,
        "broker": mask_url(settings.broker_url),
        "database": mask_url(settings.database_url),
        "path": request.url.path,
    }
    response = templates().TemplateResponse(request, name, {**base, **context}, status_code=status)
    return set_cookies(request, response)
