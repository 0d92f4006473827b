"""Who is asking: API tokens (``Authorization: Bearer ...``) and console sessions (a cookie plus a
CSRF token in every form)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from hub import accounts
from hub.accounts import Principal, SignedIn
from hub.web.errors import WebError

SESSION_COOKIE = "mh_session"
bearer = HTTPBearer(auto_error=False, description="an API token from `memberhub users token NAME`")


TOKEN_CACHE_SECONDS = 10.0
"""How long a web worker keeps a token it verified for the tills' lookup, so a lookup costs one query.
A revoked token or a disabled account does not wait for it: an entry counts only while the access
generation (hub.accounts) is the one it was verified at, and the lookup reads the generation in its
own query. The time limit covers what does not move the generation (an account edited by hand)."""


@dataclass(frozen=True)
class Verified:
    principal: Principal
    generation: int
    """the access generation read before the token was checked"""


class TokenCache:
    """Used on the worker's event loop only (the lookup is async), so it needs no lock."""

    def __init__(self, ttl: float = TOKEN_CACHE_SECONDS, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[str, tuple[float, Verified]] = {}

    def get(self, token: str) -> Verified | None:
        entry = self._entries.get(token)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, verified: Verified) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + self.ttl, verified)

    def forget(self, token: str) -> None:
        self._entries.pop(token, None)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 without one."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise WebError(401, "unauthorized", "send an API token: Authorization: Bearer <token>")
    return token


def verify_token(session: Session, token: str) -> Verified:
    """The account behind ``token`` now, and the access generation it was read at; 401 if none."""
    generation = accounts.access_generation(session)  # read first: a revocation after it moves it on
    return Verified(_principal(session, token), generation)


def _principal(session: Session, token: str) -> Principal:
    principal = accounts.authenticate_token(session, token)
    if principal is None:
        raise WebError(401, "unauthorized", "the API token is not valid")
    return principal


def api_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """The API's dependency (a plain function, run in the thread pool): the token is checked in the
    database on every request, so a revoked token is refused at once; the endpoints behind it read
    the database anyway. The tills' lookup has its own cached path (hub.web.api)."""
    token = bearer_token(f"{credentials.scheme} {credentials.credentials}" if credentials else None)
    with request.app.state.hub.session() as session:
        return _principal(session, token)


class LoginRequired(Exception):
    """The console page needs a signed-in person: answered with a redirect to /login."""


def console_user(request: Request) -> SignedIn:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with request.app.state.hub.session() as session:
            signed = accounts.session_for(session, cookie)
        if signed is not None:
            return signed
    raise LoginRequired()


def check_csrf(signed: SignedIn, submitted: str | None) -> None:
    if not submitted or not secrets.compare_digest(submitted, signed.csrf_token):
        raise WebError(403, "csrf", "the form is stale or was not sent by the console; reload the page")
