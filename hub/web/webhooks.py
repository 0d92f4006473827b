"""``POST /webhooks/{system}``: where Shopify, Square and HubSpot send their webhooks.

Not behind the login: a webhook proves who sent it by its signature (hub.events), checked against
the connector's ``webhook_secret``. The answer is quick — the event is stored, and Dagster's
webhook sensor starts the incremental pull that brings the change in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hub.events import Receipt, WebhookRejected, receive
from hub.service import Hub
from hub.web.errors import body as error_body

router = APIRouter(tags=["webhooks"])

CODES = {400: "malformed_webhook", 401: "webhook_not_authentic", 404: "unknown_system"}


@router.post(
    "/webhooks/{system}",
    summary="Take in a source system's signed webhook",
    responses={
        200: {"description": "stored (or already stored: a redelivery is acknowledged, not stored twice)"},
        400: {"description": "not a body this system sends"},
        401: {"description": "signature missing or wrong, or (HubSpot) timestamp too old"},
        404: {"description": "no connector of that name takes webhooks"},
    },
)
async def take_webhook(system: str, request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    body = await request.body()
    headers = dict(request.headers.items())

    def work() -> Receipt:
        with hub.session() as session, session.begin():
            return receive(hub.config, session, system, str(request.url), headers, body)

    try:
        receipt = await run_in_threadpool(work)
    except WebhookRejected as exc:
        return JSONResponse(error_body(CODES.get(exc.status, "rejected"), str(exc)), status_code=exc.status)
    return JSONResponse(receipt.as_dict())
