"""The one web application ``memberhub serve`` runs: the JSON API under /api/v1 (OpenAPI document at
/api/v1/openapi.json), the steward console, and the source systems' webhooks."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.search import ContactRules
from hub.service import Hub
from hub.web import api, console, dashboard, webhooks
from hub.web.auth import LoginRequired, TokenCache
from hub.web.errors import WebError, from_hub_error, http_error_handler, validation_handler, web_error_handler
from hub.web.lookup_line import LookupLine
from schemas.errors import HubError

STATIC = Path(__file__).resolve().parent / "static"
SECURE_COOKIES_ENV = "MEMBERHUB_SECURE_COOKIES"


def _is_api(request: Request) -> bool:
    return not _is_console(request)


def _is_console(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/webhooks/"))


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    if _is_api(request):
        return await web_error_handler(request, exc)
    user = None
    with contextlib.suppress(LoginRequired):
        user = console.console_user(request)
    return console.render(request, "error.html", user, status=exc.status, error=exc)


async def _hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return await _web_error(request, from_hub_error(exc))


async def _login_required(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={target}", status_code=303)


async def _validation(request: Request, exc: Exception) -> Response:
    if _is_api(request):
        return await validation_handler(request, exc)
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(str(e.get("msg")) for e in exc.errors())
    return await _web_error(request, WebError(422, "invalid_request", message))


async def _http_error(request: Request, exc: Exception) -> Response:
    if _is_api(request):
        return await http_error_handler(request, exc)
    assert isinstance(exc, StarletteHTTPException)
    return await _web_error(request, WebError(exc.status_code, "http_error", str(exc.detail)))


def create_app(hub: Hub, *, secure_cookies: bool | None = None) -> FastAPI:
    """``secure_cookies``: mark the session cookie Secure (serve over https); default from the
    MEMBERHUB_SECURE_COOKIES environment variable, else off (plain http on 127.0.0.1)."""
    if secure_cookies is None:
        secure_cookies = os.environ.get(SECURE_COOKIES_ENV, "").lower() in ("1", "true", "yes")
    app = FastAPI(
        title="MemberHub API",
        version="1",
        description="Members, points, tiers and the steward review queue. Authenticate with "
        "`Authorization: Bearer <token>` (`memberhub users token NAME`).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.hub = hub
    app.state.secure_cookies = secure_cookies
    app.state.token_cache = TokenCache()
    app.state.lookup_line = LookupLine(hub.database_url)
    app.state.contact_rules = ContactRules.of(hub.config.programme)
    app.state.nav = list(console.NAV)
    app.add_exception_handler(WebError, _web_error)
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(api.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    dashboard.install(app)
    app.include_router(webhooks.router)  # signed by the source systems, no login
    return app


def app_from_environment() -> FastAPI:
    """The factory ``memberhub serve`` hands to uvicorn (each worker builds its own app): the
    configuration file comes from MEMBERHUB_CONFIG, the database from it or MEMBERHUB_DATABASE_URL."""
    hub = Hub(config_path=os.environ.get("MEMBERHUB_CONFIG") or None)
    app = create_app(hub)
    # A worker starts with some 400,000 long-lived objects (the hub's modules, their tables and
    # dictionaries). A full garbage collection walks them all: 200-300 ms during which every
    # connection the worker holds waits, which is the lookup's p99. Frozen, they are never walked.
    gc.collect()
    gc.freeze()
    return app
