"""The signatures Shopify, Square and HubSpot put on their webhooks, and how to check them.

This is the connector side's contract: the simulators sign with these functions, and the hub's
webhook intake verifies with the ``verify_*`` ones. Every check compares in constant time and works
on the raw body bytes exactly as received (re-serialising the JSON would change the signature).

- Shopify: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, raw body)).
- Square: ``x-square-hmacsha256-signature`` = base64(HMAC-SHA256(signature key, notification URL + raw body)).
- HubSpot v3: ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + raw body +
  timestamp)), with ``X-HubSpot-Request-Timestamp`` in epoch milliseconds; requests older than five
  minutes are refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

HUBSPOT_TOLERANCE_SECONDS = 300


def _sign(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def _same(expected: str, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(expected.encode(), header.strip().encode())


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


# ------------------------------------------------------------------------------------- Shopify
def shopify_signature(secret: str | bytes, body: bytes | str) -> str:
    """The ``X-Shopify-Hmac-Sha256`` header value for this raw body."""
    return _sign(secret, _bytes(body))


def verify_shopify(secret: str | bytes, body: bytes | str, header: str | None) -> bool:
    """True when ``header`` (``X-Shopify-Hmac-Sha256``) signs exactly this raw body."""
    return _same(shopify_signature(secret, body), header)


# ------------------------------------------------------------------------------------- Square
def square_signature(key: str | bytes, notification_url: str, body: bytes | str) -> str:
    """The ``x-square-hmacsha256-signature`` value: the URL the subscription was made for, then the body."""
    return _sign(key, notification_url.encode() + _bytes(body))


def verify_square(key: str | bytes, notification_url: str, body: bytes | str, header: str | None) -> bool:
    """True when ``header`` signs this body sent to ``notification_url`` (the subscription's URL,
    exactly as registered with Square: behind a proxy it is not the URL the request arrived at)."""
    return _same(square_signature(key, notification_url, body), header)


# ------------------------------------------------------------------------------------- HubSpot
def hubspot_signature(secret: str | bytes, method: str, uri: str, body: bytes | str, timestamp: str | int) -> str:
    """The ``X-HubSpot-Signature-v3`` value; ``uri`` is the full URL the request was sent to and
    ``timestamp`` the ``X-HubSpot-Request-Timestamp`` header (epoch milliseconds)."""
    message = method.upper().encode() + uri.encode() + _bytes(body) + str(timestamp).encode()
    return _sign(secret, message)


def verify_hubspot(
    secret: str | bytes,
    method: str,
    uri: str,
    body: bytes | str,
    timestamp: str | int | None,
    header: str | None,
    now: float | None = None,
    tolerance: float = HUBSPOT_TOLERANCE_SECONDS,
) -> bool:
    """True when ``header`` signs this request and its timestamp is within ``tolerance`` seconds of
    ``now`` (epoch seconds; the clock when omitted). A stale or missing timestamp is refused even
    with a valid signature: that is a replay."""
    try:
        sent = int(str(timestamp)) / 1000
    except ValueError:
        return False
    moment = time.time() if now is None else now
    if abs(moment - sent) > tolerance:
        return False
    return _same(hubspot_signature(secret, method, uri, body, str(timestamp)), header)


# ------------------------------------------------------------------------------------- MemberHub's own
def memberhub_signature(secret: str | bytes, timestamp: str | int, body: bytes | str) -> str:
    """The ``X-MemberHub-Signature`` of the hub's trigger webhooks: base64(HMAC-SHA256(secret,
    timestamp + "." + raw body)), ``timestamp`` being the ``X-MemberHub-Timestamp`` header (epoch seconds)."""
    return _sign(secret, str(timestamp).encode() + b"." + _bytes(body))


def verify_memberhub(
    secret: str | bytes,
    body: bytes | str,
    timestamp: str | int | None,
    header: str | None,
    now: float | None = None,
    tolerance: float = HUBSPOT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver of the hub's webhooks checks: the signature, and a timestamp within five minutes."""
    try:
        sent = int(str(timestamp))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return _same(memberhub_signature(secret, sent, body), header)


__all__ = [
    "HUBSPOT_TOLERANCE_SECONDS",
    "hubspot_signature",
    "memberhub_signature",
    "shopify_signature",
    "square_signature",
    "verify_hubspot",
    "verify_memberhub",
    "verify_shopify",
    "verify_square",
]
