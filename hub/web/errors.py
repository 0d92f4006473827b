"""One error body for the whole API: ``{"error": {"code": ..., "message": ..., "details": ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.ledger import InsufficientPoints
from schemas.errors import HubError


class WebError(Exception):
    """An error a request can cause, with the status the API answers it with."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def not_found(what: str) -> WebError:
    return WebError(404, "not_found", f"{what} not found")


def forbidden(permission: str) -> WebError:
    return WebError(403, "forbidden", f"your role may not {permission}")


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorInfo


def _described(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _described("the request is malformed"),
    401: _described("no valid API token (Authorization: Bearer ...)"),
    403: _described("the token's role may not do this"),
    404: _described("no such resource, or not one of a clerk's stores"),
    409: _described("a request with this Idempotency-Key is still being handled, or a conflict with the data"),
    422: _described("the request is not valid: bad field, unknown value, or a reused Idempotency-Key"),
}


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def from_hub_error(exc: HubError) -> WebError:
    """Domain errors are the caller's to fix (a split that leaves nothing, too few points...)."""
    if isinstance(exc, InsufficientPoints):
        return WebError(409, "insufficient_points", str(exc))
    return WebError(422, "rejected", str(exc))


async def web_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WebError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers)


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
    ]
    return JSONResponse(body("invalid_request", "the request is not valid", details), status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
