"""Webhooks from the source systems: checked, taken apart into events, stored once each.

A webhook only says that something changed; the pull that follows (an incremental sync of that
connector, started by the Dagster sensor) brings the change itself in, through the same path as
every other record. So an event is stored, not applied, and marked processed once a pull of its
system has started after it arrived.

Who may send (each check on the raw body, in constant time, by ``connectors.webhooks``):

- Shopify signs the body with the app secret. It puts no time under the signature, so a replayed
  delivery is caught by its event id (``X-Shopify-Event-Id``, else ``X-Shopify-Webhook-Id``).
- Square signs the subscription URL and the body, which carries ``event_id``; it redelivers the same
  event for up to three days, so age is not held against it — the event id is.
- HubSpot (v3) signs method, URL, body and a millisecond timestamp; a request more than five minutes
  from the hub's clock is refused even with a valid signature (a replay). Its body is a batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.webhooks import HUBSPOT_TOLERANCE_SECONDS, verify_hubspot, verify_shopify, verify_square
from hub.tables import WebhookEventRow, utcnow
from schemas import HubConfig
from schemas.config import WEBHOOK_KINDS
from schemas.errors import HubError


class WebhookRejected(HubError):
    """A webhook the hub will not take: ``status`` is the HTTP answer (401 signature or age, 404 no
    such system, 400 a body that is not what the system sends)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    topic: str
    object_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Receipt:
    system: str
    stored: list[str]  # event ids stored now
    duplicates: list[str]  # event ids already stored: a redelivery or a replay

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "stored": self.stored, "duplicates": self.duplicates}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookRejected(400, "the body is not JSON") from None


# ------------------------------------------------------------------------------------- checking
def verify(
    kind: str, secret: str, url: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> None:
    """Raise ``WebhookRejected`` unless ``body`` was signed by ``kind``'s system with ``secret``.
    ``url``: the URL the system sends to, as it signs it (Square, HubSpot)."""
    if kind == "shopify":
        signed = verify_shopify(secret, body, _header(headers, "X-Shopify-Hmac-Sha256"))
    elif kind == "square":
        signed = verify_square(secret, url, body, _header(headers, "x-square-hmacsha256-signature"))
    elif kind == "hubspot":
        stamp = _header(headers, "X-HubSpot-Request-Timestamp")
        moment = time.time() if now is None else now
        try:
            age = abs(moment - int(stamp or "") / 1000)
        except ValueError:
            raise WebhookRejected(401, "X-HubSpot-Request-Timestamp is missing or not a number") from None
        if age > HUBSPOT_TOLERANCE_SECONDS:
            raise WebhookRejected(
                401, f"stale request: its timestamp is {age:.0f} s from now (at most {HUBSPOT_TOLERANCE_SECONDS})"
            )
        signed = verify_hubspot(
            secret, "POST", url, body, stamp, _header(headers, "X-HubSpot-Signature-v3"), now=moment
        )
    else:
        raise WebhookRejected(404, f"{kind} sends no webhooks the hub takes; valid: {', '.join(sorted(WEBHOOK_KINDS))}")
    if not signed:
        raise WebhookRejected(401, "the signature does not match: not sent by the system, or altered on the way")


def parse(kind: str, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
    """The events in one verified webhook (HubSpot sends a batch; the others one each)."""
    data = _json(body)
    if kind == "shopify":
        event_id = _header(headers, "X-Shopify-Event-Id") or _header(headers, "X-Shopify-Webhook-Id")
        topic = _header(headers, "X-Shopify-Topic")
        if not event_id or not topic or not isinstance(data, dict):
            raise WebhookRejected(400, "a Shopify webhook needs X-Shopify-Topic, X-Shopify-Webhook-Id and an object")
        object_id = data.get("id")
        return [WebhookEvent(event_id, topic, None if object_id is None else str(object_id), data)]
    if kind == "square":
        if not isinstance(data, dict) or not data.get("event_id") or not data.get("type"):
            raise WebhookRejected(400, "a Square event needs event_id and type")
        object_id = (data.get("data") or {}).get("id")
        return [WebhookEvent(str(data["event_id"]), str(data["type"]), str(object_id) if object_id else None, data)]
    if not isinstance(data, list) or not all(isinstance(e, dict) and e.get("eventId") for e in data):
        raise WebhookRejected(400, "a HubSpot webhook is a JSON array of events, each with eventId")
    return [
        WebhookEvent(
            str(e["eventId"]),
            str(e.get("subscriptionType", "")),
            None if e.get("objectId") is None else str(e["objectId"]),
            {"batch_timestamp": _header(headers, "X-HubSpot-Request-Timestamp"), "event": e},
        )
        for e in data
    ]


# ------------------------------------------------------------------------------------- storing
def store(session: Session, system: str, events: list[WebhookEvent]) -> Receipt:
    """Store each event unless its id is already stored for ``system``; safe under concurrent
    deliveries (the unique key decides)."""
    stored: list[str] = []
    duplicates: list[str] = []
    for event in events:
        known = session.scalar(
            select(WebhookEventRow.id).where(
                WebhookEventRow.system == system, WebhookEventRow.event_id == event.event_id
            )
        )
        if known is not None:
            duplicates.append(event.event_id)
            continue
        row = WebhookEventRow(
            system=system,
            event_id=event.event_id,
            topic=event.topic[:64],
            object_id=event.object_id,
            payload=event.payload,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            duplicates.append(event.event_id)
        else:
            stored.append(event.event_id)
    return Receipt(system, stored, duplicates)


def receive(
    config: HubConfig, session: Session, system: str, url: str, headers: Mapping[str, str], body: bytes
) -> Receipt:
    """Everything ``POST /webhooks/{system}`` does: find the connector, check who sent it, store
    each event once. ``url`` is the URL the request arrived at (used unless the connector names
    its registered ``webhook_url``)."""
    settings = config.connectors.get(system)
    if settings is None or not settings.enabled or settings.kind not in WEBHOOK_KINDS:
        raise WebhookRejected(404, f"no connector {system!r} that takes webhooks")
    if settings.webhook_secret is None:
        raise WebhookRejected(401, f"connector {system!r} has no webhook_secret: its webhooks cannot be checked")
    verify(settings.kind, settings.webhook_secret.get_secret_value(), settings.webhook_url or url, headers, body)
    return store(session, system, parse(settings.kind, headers, body))


# ------------------------------------------------------------------------------------- processing
def waiting(session: Session, *, after_id: int = 0) -> dict[str, tuple[int, int]]:
    """System -> (events not yet processed with an id above ``after_id``, the highest such id)."""
    rows = session.execute(
        select(WebhookEventRow.system, func.count(), func.max(WebhookEventRow.id))
        .where(WebhookEventRow.processed_at.is_(None), WebhookEventRow.id > after_id)
        .group_by(WebhookEventRow.system)
    )
    return {system: (int(count), int(top)) for system, count, top in rows}


def mark_processed(session: Session, system: str, received_before: datetime, *, at: datetime | None = None) -> int:
    """Events of ``system`` that arrived before a pull started are covered by it: mark them."""
    done = session.execute(
        update(WebhookEventRow)
        .where(
            WebhookEventRow.system == system,
            WebhookEventRow.processed_at.is_(None),
            WebhookEventRow.received_at <= received_before,
        )
        .values(processed_at=at or utcnow())
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def backlog(session: Session) -> dict[str, dict[str, Any]]:
    """System -> events waiting and the oldest one's arrival, for ``memberhub status``."""
    rows = session.execute(
        select(WebhookEventRow.system, func.count(), func.min(WebhookEventRow.received_at))
        .where(WebhookEventRow.processed_at.is_(None))
        .group_by(WebhookEventRow.system)
    )
    return {system: {"waiting": int(n), "oldest": oldest} for system, n, oldest in rows}


__all__ = [
    "Receipt",
    "WebhookEvent",
    "WebhookRejected",
    "backlog",
    "mark_processed",
    "parse",
    "receive",
    "store",
    "verify",
    "waiting",
]
