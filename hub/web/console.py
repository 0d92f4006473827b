"""The steward console: server-rendered pages (Jinja2) over the same operations as the API.

Sign-in opens a session whose id lives in an HttpOnly, SameSite=Lax cookie (Secure when the app is
served over https); every form carries the session's CSRF token. The sign-in form itself, having no
session yet, uses a double-submit cookie.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hub import accounts
from hub.accounts import SignedIn, TooManyLogins
from hub.web import operations as ops
from hub.web.auth import SESSION_COOKIE, check_csrf, console_user
from hub.web.errors import WebError
from hub.web.i18n import LANG_COOKIE, LANGUAGES, language, translator

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
TEMPLATES.env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False, default=str)
LOGIN_CSRF_COOKIE = "mh_login_csrf"
router = APIRouter(include_in_schema=False)
User = Annotated[SignedIn, Depends(console_user)]
Csrf = Annotated[str | None, Form()]

NAV: list[tuple[str, str, str]] = [
    ("/review", "nav.review", "review.read"),
    ("/search", "nav.search", "member.read"),
    ("/audit", "nav.audit", "audit.read"),
]
"""(path, message key, permission) of each console section; ``app.state.nav`` starts as a copy, and a
later section (e.g. a dashboard) appends its own entry there."""


def _safe_next(target: str | None, default: str = "/") -> str:
    """Only paths of this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def render(request: Request, template: str, user: SignedIn | None, status: int = 200, **context: Any) -> HTMLResponse:
    lang = language(request)
    nav = [
        (path, key)
        for path, key, permission in request.app.state.nav
        if user is not None and user.principal.can(permission)
    ]
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "t": translator(lang),
            "lang": lang,
            "other_lang": "en" if lang == "zh" else "zh",
            "user": user.principal if user else None,
            "csrf": user.csrf_token if user else None,
            "nav": nav,
            "here": request.url.path,
            "current_url": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
            **context,
        },
        status_code=status,
    )


def _session(request: Request) -> Any:
    return request.app.state.hub.session()


# ----------------------------------------------------------------------------------------------- sign-in
@router.get("/login")
def login_form(request: Request, next: str | None = None, failed: bool = False) -> HTMLResponse:
    return _login_page(request, next, failed=failed)


def _login_page(request: Request, next: str | None, *, failed: bool = False, blocked: int = 0) -> HTMLResponse:
    """The sign-in form; ``blocked``: seconds until the rate limit lets this name and address try again."""
    token = secrets.token_urlsafe(24)
    status = 429 if blocked else 200
    response = render(
        request, "login.html", None, status, next=_safe_next(next), failed=failed, blocked=blocked, login_csrf=token
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.secure_cookies
    )
    if blocked:
        response.headers["Retry-After"] = str(blocked)
    return response


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Csrf = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not csrf_token or not secrets.compare_digest(expected, csrf_token):
        raise WebError(403, "csrf", "the sign-in form is stale; reload the page")
    address = request.client.host if request.client else None
    with _session(request) as session, session.begin():
        try:  # before the password: a blocked guesser learns nothing more
            accounts.check_login_allowed(session, name, address)
        except TooManyLogins as exc:
            return _login_page(request, next, blocked=exc.retry_after)
        principal = accounts.authenticate_password(session, name, password)
        accounts.record_login(session, name, address, succeeded=principal is not None)
        if principal is None:
            return RedirectResponse(f"/login?failed=1&next={quote(_safe_next(next))}", status_code=303)
        cookie, _csrf = accounts.open_session(session, principal)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="lax",
        secure=request.app.state.secure_cookies,
        max_age=accounts.SESSION_HOURS * 3600,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, user: User, csrf_token: Csrf = None) -> Response:
    check_csrf(user, csrf_token)
    with _session(request) as session, session.begin():
        accounts.close_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/lang/{lang}")
def switch_language(request: Request, lang: str, next: str | None = None) -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, samesite="lax", max_age=365 * 86400)
    return response


@router.get("/")
def home(user: User) -> Response:
    return RedirectResponse("/review" if user.principal.can("review.read") else "/search", status_code=303)


# ----------------------------------------------------------------------------------------------- review
@router.get("/review")
def review_list(
    request: Request,
    user: User,
    status: str = "open",
    order: str = "score",
    source: str | None = None,
    store: str | None = None,
    page: int = 1,
) -> HTMLResponse:
    status = status if status in ops.REVIEW_STATUSES else "open"
    order = order if order in ops.REVIEW_ORDERS else "score"
    page, per_page = max(page, 1), 25
    with _session(request) as session:
        items, total = ops.review_page(
            session,
            user.principal,
            status=status,
            order=order,
            source=source or None,
            store=store or None,
            page=page,
            per_page=per_page,
        )
    return render(
        request,
        "review_list.html",
        user,
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // per_page)),
        filters={"status": status, "order": order, "source": source or "", "store": store or ""},
        statuses=ops.REVIEW_STATUSES,
    )


@router.get("/review/{item_id}")
def review_item(request: Request, user: User, item_id: int) -> HTMLResponse:
    with _session(request) as session, session.begin():
        item = ops.review_item(session, user.principal, item_id, via="console")
    return render(request, "review_item.html", user, item=item)


@router.post("/review/{item_id}/decision")
def review_decide(
    request: Request,
    user: User,
    item_id: int,
    decision: Annotated[str, Form()],
    note: Annotated[str | None, Form()] = None,
    csrf_token: Csrf = None,
) -> Response:
    check_csrf(user, csrf_token)
    with _session(request) as session, session.begin():
        ops.decide(session, user.principal, item_id, decision, note or None)
    return RedirectResponse(f"/review/{item_id}", status_code=303)


# ----------------------------------------------------------------------------------------------- members
@router.get("/search")
def search_page(request: Request, user: User, q: str = "") -> HTMLResponse:
    hits: list[dict[str, Any]] = []
    if q.strip():
        with _session(request) as session:
            hits = ops.search(session, user.principal, q, rules=request.app.state.contact_rules)
    return render(request, "search.html", user, q=q, hits=hits)


@router.get("/members/{member_id}")
def member_page(request: Request, user: User, member_id: str) -> HTMLResponse:
    with _session(request) as session, session.begin():
        member = ops.member_detail(session, user.principal, member_id, via="console")
    return render(request, "member.html", user, member=member, pinnable=ops.SURVIVING_FIELDS)


@router.post("/members/{member_id}/split")
def member_split(
    request: Request,
    user: User,
    member_id: str,
    leaving: Annotated[list[int] | None, Form()] = None,
    reason: Annotated[str | None, Form()] = None,
    csrf_token: Csrf = None,
) -> Response:
    check_csrf(user, csrf_token)
    with _session(request) as session, session.begin():
        result = ops.split_member(session, user.principal, member_id, leaving or [], reason or None)
    return RedirectResponse(f"/members/{result['member_id']}", status_code=303)


@router.post("/members/{member_id}/pins")
def member_pin(
    request: Request,
    user: User,
    member_id: str,
    field: Annotated[str, Form()],
    value: Annotated[str | None, Form()] = None,
    reason: Annotated[str | None, Form()] = None,
    csrf_token: Csrf = None,
) -> Response:
    check_csrf(user, csrf_token)
    with _session(request) as session, session.begin():
        result = ops.pin(session, user.principal, member_id, field, value or None, reason or None)
    return RedirectResponse(f"/members/{result['member_id']}", status_code=303)


@router.post("/members/{member_id}/pins/{field}/delete")
def member_unpin(request: Request, user: User, member_id: str, field: str, csrf_token: Csrf = None) -> Response:
    check_csrf(user, csrf_token)
    with _session(request) as session, session.begin():
        result = ops.unpin(session, user.principal, member_id, field)
    return RedirectResponse(f"/members/{result['member_id']}", status_code=303)


@router.post("/members/{member_id}/points")
def member_adjust(
    request: Request,
    user: User,
    member_id: str,
    delta: Annotated[int, Form()],
    reason: Annotated[str, Form()],
    store_code: Annotated[str | None, Form()] = None,
    csrf_token: Csrf = None,
) -> Response:
    check_csrf(user, csrf_token)
    programme = request.app.state.hub.config.programme
    with _session(request) as session, session.begin():
        result = ops.adjust_points(
            session, user.principal, programme, member_id, delta, reason, store_code=store_code or None
        )
    return RedirectResponse(f"/members/{result['member_id']}", status_code=303)


# ----------------------------------------------------------------------------------------------- audit
@router.get("/audit")
def audit_page(
    request: Request, user: User, actor: str | None = None, entity_id: str | None = None, page: int = 1
) -> HTMLResponse:
    page, per_page = max(page, 1), 50
    with _session(request) as session:
        entries, total = ops.audit_page(
            session, user.principal, actor=actor or None, entity_id=entity_id or None, page=page, per_page=per_page
        )
    return render(
        request,
        "audit.html",
        user,
        entries=entries,
        total=total,
        page=page,
        pages=max(1, -(-total // per_page)),
        filters={"actor": actor or "", "entity_id": entity_id or ""},
    )
