"""Webhooks as Shopify, Square and HubSpot send them: pure builders of (headers, raw body), signed
with ``connectors.webhooks``, and ``deliver`` to post one to a URL. The simulators' ``send_webhook``
methods use these for a change they make; the hub's intake verifies what arrives."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.webhooks import hubspot_signature, shopify_signature, square_signature

Signed = tuple[dict[str, str], bytes]
"""Headers to send and the raw body they sign."""

SHOPIFY_API_VERSION = "2025-01"
SHOPIFY_TOPICS = ("customers/create", "customers/update", "orders/create", "orders/updated", "orders/paid")
HUBSPOT_SUBSCRIPTIONS = ("contact.creation", "contact.propertyChange", "contact.deletion")


def _raw(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def shopify_webhook(
    secret: str,
    topic: str,
    resource: Mapping[str, Any],
    *,
    shop_domain: str = "memberhub-sim.myshopify.com",
    webhook_id: str | None = None,
) -> Signed:
    """A Shopify webhook: the body is the REST resource itself."""
    if topic not in SHOPIFY_TOPICS:
        raise ValueError(f"unknown Shopify topic {topic!r}; valid: {', '.join(SHOPIFY_TOPICS)}")
    body = _raw(dict(resource))
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": shopify_signature(secret, body),
        "X-Shopify-Shop-Domain": shop_domain,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-API-Version": SHOPIFY_API_VERSION,
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    return headers, body


def square_webhook(
    key: str,
    notification_url: str,
    event_type: str,
    obj: Mapping[str, Any],
    *,
    merchant_id: str,
    event_id: str | None = None,
    created_at: str | None = None,
) -> Signed:
    """A Square event notification, e.g. ``customer.updated``: ``data.object`` holds the object under
    its type's name (``{"customer": {...}}``), as Square sends it."""
    object_type = event_type.split(".", 1)[0]
    body = _raw(
        {
            "merchant_id": merchant_id,
            "type": event_type,
            "event_id": event_id or str(uuid.uuid4()),
            "created_at": created_at or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"type": object_type, "id": str(obj.get("id", "")), "object": {object_type: dict(obj)}},
        }
    )
    headers = {
        "Content-Type": "application/json",
        "x-square-hmacsha256-signature": square_signature(key, notification_url, body),
        "Square-Version": "2025-08-20",
    }
    return headers, body


def hubspot_event(
    subscription_type: str,
    object_id: int | str,
    *,
    property_name: str | None = None,
    property_value: str | None = None,
    portal_id: int = 62515,
    app_id: int = 1160452,
    occurred_at: int | None = None,
    change_source: str = "CRM_UI",
) -> dict[str, Any]:
    """One event of a HubSpot webhook batch."""
    if subscription_type not in HUBSPOT_SUBSCRIPTIONS:
        valid = ", ".join(HUBSPOT_SUBSCRIPTIONS)
        raise ValueError(f"unknown HubSpot subscription {subscription_type!r}; valid: {valid}")
    event: dict[str, Any] = {
        "eventId": uuid.uuid4().int % 10**10,
        "subscriptionId": 2_400_000 + HUBSPOT_SUBSCRIPTIONS.index(subscription_type),
        "portalId": portal_id,
        "appId": app_id,
        "occurredAt": occurred_at if occurred_at is not None else int(time.time() * 1000),
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": int(object_id),
        "changeSource": change_source,
    }
    if property_name is not None:
        event["propertyName"] = property_name
        event["propertyValue"] = property_value
    return event


def hubspot_webhook(
    secret: str, uri: str, events: list[dict[str, Any]], *, method: str = "POST", timestamp_ms: int | None = None
) -> Signed:
    """A HubSpot webhook request: a JSON array of events, signed v3 over method, URI, body, timestamp."""
    body = _raw(events)
    stamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature(secret, method, uri, body, stamp),
        "X-HubSpot-Signature-Version": "v3",
    }
    return headers, body


def deliver(url: str, signed: Signed, *, timeout: float = 10.0) -> httpx.Response:
    """POST a built webhook to ``url`` and return the receiver's answer."""
    headers, body = signed
    return httpx.post(url, content=body, headers=headers, timeout=timeout)
