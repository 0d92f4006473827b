"""The dashboard (经营看板): the report's charts, rendered on the server as SVG, with the CSV behind
each. Chain-wide figures, so it needs the ``review.read`` permission (admins, stewards, auditors)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from hub.accounts import Principal
from hub.analytics import BUILDERS, ReportTable, build, to_csv, to_svg
from hub.web.auth import SESSION_COOKIE, api_principal, bearer, console_user
from hub.web.console import render
from hub.web.errors import COMMON_RESPONSES, WebError
from schemas.errors import ConfigError

PERMISSION = "review.read"
NAV_ENTRY = ("/dashboard", "看板 / Dashboard", PERMISSION)
router = APIRouter()


def reader(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """A console session (the dashboard's own links) or an API token, allowed to read chain figures."""
    principal = (
        console_user(request).principal
        if request.cookies.get(SESSION_COOKIE) and credentials is None
        else api_principal(request, credentials)
    )
    if not principal.can(PERMISSION):
        raise WebError(403, "forbidden", "the dashboard shows chain-wide figures: an admin, steward or auditor only")
    return principal


Reader = Annotated[Principal, Depends(reader)]
ReportName = StrEnum("ReportName", {name: name for name in BUILDERS})
"""The report tables by name, so the OpenAPI document lists them and another name is a 422."""


def _tables(request: Request, only: str | None = None) -> dict[str, ReportTable]:
    if only is not None and only not in BUILDERS:
        raise WebError(404, "not_found", f"no report table {only!r}; tables: {', '.join(BUILDERS)}")
    hub = request.app.state.hub
    try:
        from hub.segments import load_segments

        labels = {s.name: s.label for s in load_segments()}
    except ConfigError:  # a broken segments file must not take the dashboard down
        labels = {}
    with hub.session() as session:
        return build(session, hub.config.programme, segment_labels=labels, only=only)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request) -> HTMLResponse:
    user = console_user(request)
    if not user.principal.can(PERMISSION):
        raise WebError(403, "forbidden", "the dashboard shows chain-wide figures: an admin, steward or auditor only")
    tables = _tables(request)
    return render(request, "dashboard.html", user, tables=list(tables.values()))


@router.get("/dashboard/charts/{table}.svg", include_in_schema=False)
def chart(table: str, request: Request, principal: Reader) -> Response:
    return Response(to_svg(_tables(request, table)[table]), media_type="image/svg+xml")


@router.get(
    "/api/v1/reports/{table}.csv",
    tags=["reports"],
    response_class=Response,
    responses={**COMMON_RESPONSES, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def table_csv(table: ReportName, request: Request, principal: Reader) -> Response:
    """One report table as CSV (UTF-8 with a header row): the data behind a dashboard chart."""
    table = table.value
    body = "\ufeff" + to_csv(_tables(request, table)[table])  # the BOM lets spreadsheet software read 中文
    headers = {"Content-Disposition": f'attachment; filename="{table}.csv"'}
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


def install(app: FastAPI) -> None:
    """Mount the dashboard on the console's app and add it to the navigation."""
    app.include_router(router)
    if NAV_ENTRY not in app.state.nav:
        app.state.nav.append(NAV_ENTRY)
