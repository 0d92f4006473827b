"""Webhook signatures (the connector side's contract) and the simulators' senders."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.simulators import TOKENS, generate_world
from connectors.simulators.hubspot import HubSpotSimulator
from connectors.simulators.shopify import ShopifySimulator
from connectors.simulators.square import SquareSimulator
from connectors.simulators.webhooks import hubspot_event, hubspot_webhook, shopify_webhook, square_webhook
from connectors.webhooks import (
    hubspot_signature,
    shopify_signature,
    square_signature,
    verify_hubspot,
    verify_shopify,
    verify_square,
)

SECRET = "hush"
URL = "https://hub.example.cn/webhooks/square"


def test_known_signatures():
    # Computed independently: printf '{"id":1}' | openssl dgst -sha256 -hmac hush -binary | base64
    assert shopify_signature(SECRET, b'{"id":1}') == "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY="
    assert square_signature(SECRET, URL, b"{}") == shopify_signature(SECRET, URL.encode() + b"{}")
    assert hubspot_signature(SECRET, "post", "https://h/x", b"[]", 5) == shopify_signature(
        SECRET, b"POSThttps://h/x[]5"
    )


def test_shopify_round_trip_and_forgery():
    headers, body = shopify_webhook(SECRET, "customers/update", {"id": 7, "email": "a@b.cn"})
    assert verify_shopify(SECRET, body, headers["X-Shopify-Hmac-Sha256"])
    assert headers["X-Shopify-Topic"] == "customers/update" and headers["X-Shopify-Webhook-Id"]
    assert not verify_shopify(SECRET, body.replace(b"a@b.cn", b"x@b.cn"), headers["X-Shopify-Hmac-Sha256"])
    assert not verify_shopify("other", body, headers["X-Shopify-Hmac-Sha256"])
    assert not verify_shopify(SECRET, body, None)


def test_square_round_trip_and_forgery():
    headers, body = square_webhook(SECRET, URL, "customer.updated", {"id": "C1", "version": 2}, merchant_id="M1")
    event = json.loads(body)
    assert {k: event[k] for k in ("merchant_id", "type")} == {"merchant_id": "M1", "type": "customer.updated"}
    assert event["event_id"] and event["created_at"].endswith("Z")
    assert event["data"] == {"type": "customer", "id": "C1", "object": {"customer": {"id": "C1", "version": 2}}}
    signature = headers["x-square-hmacsha256-signature"]
    assert verify_square(SECRET, URL, body, signature)
    assert not verify_square(SECRET, URL, body + b" ", signature)
    assert not verify_square(SECRET, URL + "?x=1", body, signature)  # signed for another URL


def test_hubspot_round_trip_forgery_and_stale_timestamp():
    now_ms = int(time.time() * 1000)
    event = hubspot_event("contact.propertyChange", 1001, property_name="email", property_value="a@b.cn")
    headers, body = hubspot_webhook(SECRET, "https://hub.example.cn/wh", [event], timestamp_ms=now_ms)
    stamp, signature = headers["X-HubSpot-Request-Timestamp"], headers["X-HubSpot-Signature-v3"]
    [sent] = json.loads(body)
    assert {k: sent[k] for k in ("subscriptionType", "objectId", "propertyName", "propertyValue")} == {
        "subscriptionType": "contact.propertyChange",
        "objectId": 1001,
        "propertyName": "email",
        "propertyValue": "a@b.cn",
    }
    assert sent["eventId"] and sent["occurredAt"]
    uri = "https://hub.example.cn/wh"
    assert verify_hubspot(SECRET, "POST", uri, body, stamp, signature, now_ms / 1000)
    assert not verify_hubspot(SECRET, "POST", uri, body.replace(b"a@b.cn", b"evil"), stamp, signature, now_ms / 1000)
    assert not verify_hubspot(SECRET, "GET", uri, body, stamp, signature, now_ms / 1000)
    assert not verify_hubspot(SECRET, "POST", uri, body, stamp, signature, now_ms / 1000 + 301)  # stale: a replay
    assert verify_hubspot(SECRET, "POST", uri, body, stamp, signature, now_ms / 1000 + 299)
    assert not verify_hubspot(SECRET, "POST", uri, body, str(now_ms + 1), signature, now_ms / 1000)
    assert not verify_hubspot(SECRET, "POST", uri, body, None, signature, now_ms / 1000)


# ------------------------------------------------------------------------------------- senders
class Receiver:
    """A tiny webhook endpoint on 127.0.0.1 that records what arrives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def world():
    return generate_world(20, seed=2)


def test_shopify_sends_a_signed_webhook_for_its_change(world, receiver):
    sim = ShopifySimulator(world, token=TOKENS["shopify"])
    customer = sim.customers()[0]
    sim.touch(customer["id"], note="VIP")
    assert sim.send_webhook(receiver.url, "customers/update", customer["id"]).status_code == 200
    [got] = receiver.received
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert verify_shopify(sim.webhook_secret, got["body"], headers["x-shopify-hmac-sha256"])
    assert headers["x-shopify-topic"] == "customers/update"
    assert headers["x-shopify-shop-domain"].endswith(".myshopify.com") and headers["x-shopify-webhook-id"]
    assert json.loads(got["body"]) == json.loads(json.dumps(sim.customers()[0]))
    assert json.loads(got["body"])["note"] == "VIP"


def test_square_sends_a_signed_webhook_for_its_change(world, receiver):
    sim = SquareSimulator(world, token=TOKENS["square"])
    customer_id = sim.customer_list()[0]["id"]
    sim.touch(customer_id, note="VIP")
    assert sim.send_webhook(receiver.url, "customer.updated", customer_id).status_code == 200
    [got] = receiver.received
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert verify_square(sim.webhook_signature_key, receiver.url, got["body"], headers["x-square-hmacsha256-signature"])
    event = json.loads(got["body"])
    assert event["type"] == "customer.updated" and event["data"]["id"] == customer_id
    assert event["data"]["object"]["customer"]["note"] == "VIP"


def test_hubspot_sends_a_signed_webhook_for_its_change(world, receiver):
    sim = HubSpotSimulator(world, token=TOKENS["hubspot"])
    contact_id = sorted(sim.truth(), key=int)[0]
    sim.touch(contact_id, firstname="Mei")
    assert sim.send_webhook(receiver.url, "contact.propertyChange", contact_id, "firstname").status_code == 200
    [got] = receiver.received
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert verify_hubspot(
        sim.client_secret,
        "POST",
        receiver.url,
        got["body"],
        headers["x-hubspot-request-timestamp"],
        headers["x-hubspot-signature-v3"],
    )
    [event] = json.loads(got["body"])
    assert (event["objectId"], event["propertyName"], event["propertyValue"]) == (int(contact_id), "firstname", "Mei")
