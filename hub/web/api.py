"""The JSON API under /api/v1: member lookup for tills and shops, search, member pages, points
adjustments, the review queue and its decisions, splits, pins and the audit log.

Every request carries an API token; what it may do follows the token's role (hub.accounts). A clerk
asking for a member outside their stores gets 404, exactly as for a member that does not exist, so a
till cannot probe which phone numbers belong to members elsewhere; a role lacking a permission
altogether gets 403. Writes accept an ``Idempotency-Key`` header (hub.web.idempotency).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub import accounts, search
from hub.accounts import PERMISSIONS, AccessError, Principal
from hub.privacy import decrypt
from hub.resolution.settings import SURVIVING_FIELDS
from hub.web import operations as ops
from hub.web.auth import TokenCache, Verified, api_principal, bearer_token, verify_token
from hub.web.errors import COMMON_RESPONSES, WebError, not_found
from hub.web.idempotency import remember, replay, request_hash
from hub.web.lookup_line import LookupLine
from hub.web.masking import mask_email, mask_name, mask_phone
from hub.web.models import (
    AdjustIn,
    AdjustOut,
    AuditPage,
    DecisionIn,
    DecisionOut,
    LookupResult,
    Me,
    MemberDetail,
    PinIn,
    PinOut,
    Points,
    ReviewDetail,
    ReviewPage,
    SearchPage,
    SplitIn,
    SplitOut,
    TokensRevoked,
    is_plain_text,
)


def check_plain_text(request: Request) -> None:
    """NUL characters and lone surrogates cannot be stored or looked up, and a parameter given twice is
    ambiguous: refuse them up front."""
    params = request.query_params
    for value in (request.scope["path"], *params.values()):  # the scope's path: request.url costs a parse
        if not is_plain_text(value):
            raise WebError(422, "invalid_text", "text with NUL characters or broken Unicode is not accepted")
    if len(params) == len(params.multi_items()):
        return
    names = [name for name, _ in params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # every parameter takes one value: a repeat is a mistake, not a choice of the last one
        raise WebError(422, "repeated_parameter", f"give each query parameter once: {', '.join(repeated)}")


async def _plain_text(request: Request) -> None:
    check_plain_text(request)


router = APIRouter(prefix="/api/v1", responses=COMMON_RESPONSES, dependencies=[Depends(_plain_text)])
Who = Annotated[Principal, Depends(api_principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255, description="retries with the same key and body are answered once"),
]
Page = Annotated[int, Query(ge=1, le=100_000, description="1-based")]
PerPage = Annotated[int, Query(ge=1, le=200)]
ItemId = Annotated[int, Path(ge=1, le=2**62)]
PinField = Enum("PinField", {f: f for f in SURVIVING_FIELDS}, type=str)  # type: ignore[misc]


def _hub(request: Request) -> Any:
    return request.app.state.hub


def _contact_rules(request: Request) -> search.ContactRules:
    return request.app.state.contact_rules


def _write(
    request: Request, who: Principal, key: str | None, payload: Any, status: int, operation: Callable[[Session], Any]
) -> JSONResponse:
    """Run a write in one transaction with its idempotency record."""
    digest = request_hash(request.method, request.url.path, payload)
    try:
        with _hub(request).session() as session, session.begin():
            stored = replay(session, who, key, digest)
            if stored is not None:
                return JSONResponse(stored[1], status_code=stored[0], headers={"Idempotent-Replayed": "true"})
            result = jsonable_encoder(operation(session))
            remember(session, who, key, digest, status, result)
    except IntegrityError as exc:
        if key is not None and "idempotency_keys" in str(exc.orig):
            raise WebError(409, "idempotency_conflict", "a request with this Idempotency-Key is in progress") from None
        raise
    return JSONResponse(result, status_code=status)


@router.get("/me", response_model=Me, summary="the account behind the token")
async def me(who: Who) -> dict[str, Any]:
    return {
        "name": who.name,
        "role": who.role,
        "stores": list(who.stores),
        "permissions": sorted(p for p, roles in PERMISSIONS.items() if who.role in roles),
    }


LOOKUP_KEYS = {"phone": 40, "email": 254, "member_id": 16}
"""The lookup's query parameters and the most characters each takes."""


class _ServedAsIs(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself: served as is,
    without FastAPI's per-request dependency solving and parameter validation (together more CPU than
    the tills' lookup's own query). Its parameters and security are documented in ``openapi_extra``
    and checked by hand in the endpoint, in FastAPI's order: text, token, parameters, permission."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


async def lookup(request: Request) -> Response:
    """For tills and shops: who this is, their tier and points, by exactly one of phone, email or
    member_id. Names and contacts come masked, for every role: a lookup shows no personal data, so it
    is not a read of PII and is not written to the audit log (a person reads contacts on the member's
    page, which is)."""
    # Async on purpose, with the query run inline on the worker's own connection (hub.web.lookup_line):
    # it is one indexed statement, and handing it to the thread pool costs more than the query itself.
    # Every other endpoint that touches the database is a plain ``def``.
    check_plain_text(request)
    token = bearer_token(request.headers.get("authorization"))
    given = {}
    for name, most in LOOKUP_KEYS.items():
        value = request.query_params.get(name)
        if value is not None and len(value) > most:
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": f"String should have at most {most} characters", "type": "too_long"}]
            )
        if value is not None:
            given[name] = value
    line, cache = request.app.state.lookup_line, request.app.state.token_cache
    verified = cache.get(token) or _verify(line, cache, token)
    generation, rows = _lookup(request, verified.principal, given)
    if generation != verified.generation:  # a token was revoked or an account disabled since: this one?
        fresh = _verify(line, cache, token)
        if fresh.principal != verified.principal:
            generation, rows = _lookup(request, fresh.principal, given)
    if not rows:
        raise not_found("member")
    items = [
        {
            "member_id": row["member_id"],
            "name": mask_name(row["full_name"]),
            "phone": mask_phone(row["phone"] and decrypt(row["phone"])),
            "email": mask_email(row["email"] and decrypt(row["email"])),
            "tier": row["tier"],
            "balance": row["balance"],
            "pending": row["pending"],
            "redirected_from": row["redirected_from"],
        }
        for row in rows
    ]
    return JSONResponse({"items": items})  # built to the documented model already: no second validation pass


def _verify(line: LookupLine, cache: TokenCache, token: str) -> Verified:
    try:
        with line.session() as session:
            verified = verify_token(session, token)
    except WebError:
        cache.forget(token)
        raise
    cache.put(token, verified)
    return verified


def _lookup(request: Request, who: Principal, given: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    ops.require(who, "member.lookup")
    if len(given) != 1:
        raise WebError(422, "one_key", "give exactly one of phone, email, member_id")
    return search.lookup(
        request.app.state.lookup_line,
        **given,
        stores=who.stores if who.store_scoped else None,
        rules=_contact_rules(request),
    )


router.add_api_route(
    "/members/lookup",
    lookup,
    methods=["GET"],
    response_model=LookupResult,
    summary="balance and tier by phone, email or member id",
    route_class_override=_ServedAsIs,
    openapi_extra={
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string", "maxLength": most}}
            for name, most in LOOKUP_KEYS.items()
        ],
        "security": [{"HTTPBearer": []}],
    },
)


@router.get("/members", response_model=SearchPage, summary="search by phone, email, name, member id or source id")
def search_members(
    request: Request,
    who: Who,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict[str, Any]:
    with _hub(request).session() as session:
        hits = ops.search(session, who, q, limit=page * per_page, rules=_contact_rules(request))
    return {"items": hits[(page - 1) * per_page :], "page": page, "per_page": per_page, "total": len(hits)}


@router.get("/members/{member_id}", response_model=MemberDetail, summary="golden fields, lineage, sources, points")
def member(request: Request, who: Who, member_id: str) -> dict[str, Any]:
    """Reading a member's unmasked contacts is written to the audit log."""
    with _hub(request).session() as session, session.begin():
        return ops.member_detail(session, who, member_id, via="api")


@router.get("/members/{member_id}/points", response_model=Points, summary="balance, lots and history")
def points(request: Request, who: Who, member_id: str) -> dict[str, Any]:
    with _hub(request).session() as session:
        return ops.points_statement(session, who, member_id)


@router.post(
    "/members/{member_id}/points/adjustments", response_model=AdjustOut, status_code=201, summary="correct points"
)
def adjust(request: Request, who: Who, member_id: str, body: AdjustIn, key: IdempotencyKey = None) -> JSONResponse:
    programme = _hub(request).config.programme
    document = f"api:{who.id}:{key}" if key else None
    return _write(
        request,
        who,
        key,
        body.model_dump(),
        201,
        lambda s: ops.adjust_points(
            s, who, programme, member_id, body.delta, body.reason, store_code=body.store_code, document=document
        ),
    )


@router.post("/members/{member_id}/split", response_model=SplitOut, summary="take source records out of a member")
def split(request: Request, who: Who, member_id: str, body: SplitIn, key: IdempotencyKey = None) -> JSONResponse:
    return _write(
        request,
        who,
        key,
        body.model_dump(),
        200,
        lambda s: ops.split_member(s, who, member_id, body.staged_member_ids, body.reason),
    )


@router.put("/members/{member_id}/pins/{field}", response_model=PinOut, summary="pin a golden field's value")
def pin(
    request: Request, who: Who, member_id: str, field: PinField, body: PinIn, key: IdempotencyKey = None
) -> JSONResponse:
    return _write(
        request,
        who,
        key,
        body.model_dump(),
        200,
        lambda s: ops.pin(s, who, member_id, field.value, body.value, body.reason),
    )


@router.delete("/members/{member_id}/pins/{field}", response_model=PinOut, summary="unpin a golden field")
def unpin(request: Request, who: Who, member_id: str, field: PinField, key: IdempotencyKey = None) -> JSONResponse:
    return _write(request, who, key, None, 200, lambda s: ops.unpin(s, who, member_id, field.value))


@router.get("/review", response_model=ReviewPage, summary="the review queue (待审核)")
def review_queue(
    request: Request,
    who: Who,
    status: Annotated[str, Query(pattern="^(" + "|".join(ops.REVIEW_STATUSES) + ")$")] = "open",
    order: Annotated[str, Query(pattern="^(score|age)$", description="score: likeliest first; age: oldest first")] = (
        "score"
    ),
    source: Annotated[str | None, Query(max_length=64)] = None,
    store: Annotated[str | None, Query(max_length=32)] = None,
    page: Page = 1,
    per_page: PerPage = 25,
) -> dict[str, Any]:
    with _hub(request).session() as session:
        items, total = ops.review_page(
            session, who, status=status, order=order, source=source, store=store, page=page, per_page=per_page
        )
    return {"items": items, "page": page, "per_page": per_page, "total": total}


@router.get("/review/{item_id}", response_model=ReviewDetail, summary="one pair with per-field evidence")
def review_item(request: Request, who: Who, item_id: ItemId) -> dict[str, Any]:
    with _hub(request).session() as session, session.begin():
        return ops.review_item(session, who, item_id, via="api")


@router.post("/review/{item_id}/decision", response_model=DecisionOut, summary="merge, reject or defer a pair")
def decide(request: Request, who: Who, item_id: ItemId, body: DecisionIn, key: IdempotencyKey = None) -> JSONResponse:
    return _write(
        request, who, key, body.model_dump(), 200, lambda s: ops.decide(s, who, item_id, body.decision, body.note)
    )


@router.get("/audit", response_model=AuditPage, summary="the audit log, newest first")
def audit(
    request: Request,
    who: Who,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=160)] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> dict[str, Any]:
    with _hub(request).session() as session:
        items, total = ops.audit_page(
            session, who, actor=actor, action=action, entity_id=entity_id, page=page, per_page=per_page
        )
    return {"items": items, "page": page, "per_page": per_page, "total": total}


@router.delete(
    "/users/{name}/tokens/{prefix}", response_model=TokensRevoked, summary="revoke an API token (admins only)"
)
def revoke_token(
    request: Request,
    who: Who,
    name: Annotated[str, Path(max_length=64)],
    prefix: Annotated[str, Path(max_length=64, description="as `memberhub users list` shows it, or the token")],
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Every web worker refuses the token from its next request on."""
    ops.require(who, "users.manage")

    def revoke(session: Session) -> dict[str, Any]:
        try:
            return {"name": name, "revoked": accounts.revoke_tokens(session, name, prefix, actor=who.actor)}
        except AccessError:
            raise not_found("active token") from None

    return _write(request, who, key, None, 200, revoke)
