"""Who is asking: API tokens (``Authorization: Bearer ...``) and console sessions (a cookie plus a
CSRF token in every form)."""

from __future__ import annotations

import secrets
import threading
import time

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import accounts
from hub.accounts import Principal, SignedIn
from hub.web.errors import WebError

SESSION_COOKIE = "mh_session"
bearer = HTTPBearer(auto_error=False, description="an API token from `memberhub users token NAME`")


TOKEN_CACHE_SECONDS = 10.0
"""A valid token is checked against the database at most this often per worker, so a till's lookup
costs one query. A revoked token or a disabled account is refused within this time."""


class TokenCache:
    def __init__(self, ttl: float = TOKEN_CACHE_SECONDS, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(accounts.digest(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[accounts.digest(token)] = (time.monotonic() + self.ttl, principal)


def api_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """The account behind an API token (a plain function: it may read the database)."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise WebError(401, "unauthorized", "send an API token: Authorization: Bearer <token>")
    cache: TokenCache = request.app.state.token_cache
    principal = cache.get(credentials.credentials)
    if principal is None:
        with request.app.state.hub.session() as session, session.begin():
            principal = accounts.authenticate_token(session, credentials.credentials)
        if principal is None:
            raise WebError(401, "unauthorized", "the API token is not valid")
        cache.put(credentials.credentials, principal)
    return principal


async def api_caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """The API's dependency: a cached token costs no trip to the thread pool; only a miss goes there
    to read the database."""
    if credentials is not None and credentials.credentials:
        principal = request.app.state.token_cache.get(credentials.credentials)
        if principal is not None and credentials.scheme.lower() == "bearer":
            return principal
    return await run_in_threadpool(api_principal, request, credentials)


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
