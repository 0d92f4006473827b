"""Webhook intake, end to end over real HTTP: the simulators sign and send as the vendors do, the hub's
router (uvicorn on 127.0.0.1) checks and stores, the Dagster sensor asks for a run, the run pulls
the purchase in, and the member's points show — in the hub and in the shop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
import uvicorn
import yaml
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context, instance_for_test
from fastapi import FastAPI
from sqlalchemy import select

import hub.web.webhooks
from connectors.simulators import start_simulators
from connectors.simulators._world import PRODUCTS
from connectors.simulators.webhooks import deliver, hubspot_event, hubspot_webhook, shopify_webhook, square_webhook
from hub import ledger
from hub.demo import write_demo_config
from hub.resolve import active_member_id
from hub.service import Hub
from hub.tables import MemberLink, StagedMember, WebhookEventRow
from orchestration.definitions import build_definitions
from orchestration.resources import HubResource
from orchestration.runner import run_pipeline


# ------------------------------------------------------------------------------------- helpers
class Served:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def member_of(hub: Hub, source: str, source_id: str) -> str:
    with hub.session() as session:
        member = session.scalar(
            select(MemberLink.member_id)
            .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
            .where(StagedMember.source == source, StagedMember.source_id == source_id)
        )
        return active_member_id(session, member)


def balance(hub: Hub, member_id: str) -> int:
    with hub.session() as session:
        return ledger.balance(session, member_id)


def stored_events(hub: Hub) -> list[WebhookEventRow]:
    with hub.session() as session:
        return list(session.scalars(select(WebhookEventRow).order_by(WebhookEventRow.id)))


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Simulators, a hub on SQLite that has run once, and the webhook router served on 127.0.0.1."""
    base = tmp_path_factory.mktemp("chain")
    patch = pytest.MonkeyPatch()
    patch.setenv("MEMBERHUB_HOME", str(base / "home"))
    with start_simulators(members=40, seed=5, state_dir=base / "systems") as cluster:
        config_path = base / "hub.yaml"
        database_url = f"sqlite:///{base / 'hub.db'}"
        write_demo_config(config_path, cluster.connector_configs(), database_url)
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        secrets = {
            "shopify": cluster.simulators["shopify"].webhook_secret,
            "square": cluster.simulators["square"].webhook_signature_key,
            "hubspot": cluster.simulators["hubspot"].client_secret,
        }
        for name, secret in secrets.items():
            data["connectors"][name]["webhook_secret"] = secret
        config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        hub_ = Hub(config_path=config_path)
        hub_.upgrade()
        figures = run_pipeline(str(config_path), database_url=database_url, instance=DagsterInstance.ephemeral())
        assert figures["_failures"]["success"], figures["_failures"]
        app = FastAPI()
        app.state.hub = hub_
        app.include_router(hub.web.webhooks.router)
        served = Served(app)
        try:
            yield {
                "cluster": cluster,
                "hub": hub_,
                "url": served.url,
                "config": str(config_path),
                "db": database_url,
                "home": str(base / "home"),
            }
        finally:
            served.close()
    patch.undo()


@pytest.fixture(autouse=True)
def _chain_home(chain: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain's database is sealed with the key file under its own home: every test reads it there."""
    monkeypatch.setenv("MEMBERHUB_HOME", chain["home"])


def _sensor_tick(chain: dict, instance, cursor: str | None):
    defs = build_definitions(chain["config"], chain["db"])
    sensor = defs.resolve_sensor_def("webhook_events")
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"hub": HubResource(config_path=chain["config"], database_url=chain["db"])},
    )
    return defs, sensor(context)


# ------------------------------------------------------------------------------------- tests
def test_a_purchase_webhook_becomes_points_for_the_member(chain):
    shop = chain["cluster"].simulators["shopify"]
    hub_: Hub = chain["hub"]
    customer_id = shop.customers()[0]["id"]
    member_id = member_of(hub_, "shopify", str(customer_id))
    before = balance(hub_, member_id)
    sku = PRODUCTS[0][0]
    order = shop.place_order(customer_id, [(sku, 3)])  # a purchase at the shop, now
    order_id, earned = order["id"], int(Decimal(order["total_price"]))  # 1 point per whole yuan
    assert earned > 0

    answer = shop.send_webhook(f"{chain['url']}/webhooks/shopify", "orders/create", order_id)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["stored"]) == 1
    [event] = [e for e in stored_events(hub_) if e.object_id == str(order_id)]
    assert (event.system, event.topic, event.processed_at) == ("shopify", "orders/create", None)
    assert event.payload["id"] == order_id  # the payload is kept (sealed at rest)

    with instance_for_test() as instance:
        defs, result = _sensor_tick(chain, instance, cursor=None)
        assert isinstance(result, SensorResult)
        [request] = result.run_requests
        assert {k.to_user_string() for k in request.asset_selection} == {
            "raw/shopify",
            "canonical",
            "golden",
            "ledger",
            "tiers",
            "writeback/shopify",
        }
        assert request.tags["memberhub/system"] == "shopify"
        assert int(result.cursor) == event.id

        run = defs.resolve_job_def("webhook_sync").execute_in_process(
            instance=instance, asset_selection=request.asset_selection, tags=request.tags
        )
        assert run.success
        checks = {c.asset_check_key.name: c.passed for c in run.get_asset_check_evaluations()}
        assert checks == dict.fromkeys(
            ("golden_ids_unique", "ledger_reconciles", "no_schema_drift", "quarantine_rate"), True
        )

        _defs, again = _sensor_tick(chain, instance, cursor=result.cursor)
        assert isinstance(again, SkipReason)

    assert balance(hub_, member_id) == before + earned
    assert shop.loyalty()[str(customer_id)][0] == balance(hub_, member_id)  # written back to the shop
    [event] = [e for e in stored_events(hub_) if e.object_id == str(order_id)]
    assert event.processed_at is not None


def test_a_replayed_event_is_acknowledged_but_not_stored_twice(chain):
    shop = chain["cluster"].simulators["shopify"]
    customer = shop.customers()[1]
    signed = shopify_webhook(shop.webhook_secret, "customers/update", customer, webhook_id="replay-1")
    url = f"{chain['url']}/webhooks/shopify"
    first, second = deliver(url, signed), deliver(url, signed)
    assert first.status_code == second.status_code == 200
    assert (first.json()["stored"], second.json()["stored"], second.json()["duplicates"]) == (
        ["replay-1"],
        [],
        ["replay-1"],
    )
    assert sum(1 for e in stored_events(chain["hub"]) if e.event_id == "replay-1") == 1


def test_forged_and_altered_webhooks_get_401_and_store_nothing(chain):
    shop = chain["cluster"].simulators["shopify"]
    square = chain["cluster"].simulators["square"]
    customer = shop.customers()[2]
    before = len(stored_events(chain["hub"]))

    forged = shopify_webhook("not-the-app-secret", "customers/update", customer)
    answer = deliver(f"{chain['url']}/webhooks/shopify", forged)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "webhook_not_authentic"

    headers, body = shopify_webhook(shop.webhook_secret, "customers/update", customer)
    altered = deliver(f"{chain['url']}/webhooks/shopify", (headers, body.replace(b'"id":', b'"id": ', 1)))
    assert altered.status_code == 401

    other_url = square_webhook(
        square.webhook_signature_key,
        "https://elsewhere.example/hook",
        "customer.updated",
        {"id": "C1"},
        merchant_id="M",
    )
    assert deliver(f"{chain['url']}/webhooks/square", other_url).status_code == 401

    unsigned = httpx.post(f"{chain['url']}/webhooks/hubspot", content=b"[]", timeout=10)
    assert unsigned.status_code == 401
    assert len(stored_events(chain["hub"])) == before


def test_a_stale_hubspot_request_is_refused_even_when_signed(chain):
    spot = chain["cluster"].simulators["hubspot"]
    url = f"{chain['url']}/webhooks/hubspot"
    event = hubspot_event("contact.propertyChange", 1001, property_name="firstname", property_value="Mei")
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    answer = deliver(url, hubspot_webhook(spot.client_secret, url, [event], timestamp_ms=ten_minutes_ago))
    assert answer.status_code == 401
    assert "stale" in answer.json()["error"]["message"]
    assert not [e for e in stored_events(chain["hub"]) if e.event_id == str(event["eventId"])]


def test_square_and_hubspot_events_are_stored_with_their_ids(chain):
    square = chain["cluster"].simulators["square"]
    spot = chain["cluster"].simulators["hubspot"]
    customer_id = square.customer_list()[0]["id"]
    assert square.send_webhook(f"{chain['url']}/webhooks/square", "customer.updated", customer_id).status_code == 200
    url = f"{chain['url']}/webhooks/hubspot"
    batch = [hubspot_event("contact.creation", 2001), hubspot_event("contact.deletion", 2002)]
    answer = deliver(url, hubspot_webhook(spot.client_secret, url, batch))
    assert answer.status_code == 200 and len(answer.json()["stored"]) == 2
    found = {(e.system, e.topic, e.object_id) for e in stored_events(chain["hub"])}
    assert ("square", "customer.updated", customer_id) in found
    assert {("hubspot", "contact.creation", "2001"), ("hubspot", "contact.deletion", "2002")} <= found


def test_a_system_that_sends_no_webhooks_is_404(chain):
    assert httpx.post(f"{chain['url']}/webhooks/odoo", content=b"{}", timeout=10).status_code == 404
    assert httpx.post(f"{chain['url']}/webhooks/nowhere", content=b"{}", timeout=10).status_code == 404
