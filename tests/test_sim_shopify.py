"""The Shopify simulator keeps the real API's contract: auth body, Link paging with filters inside
page_info, incremental filters, the leaky bucket, metafields, and what it persists."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest

from connectors.simulators import TOKENS, generate_world
from connectors.simulators.shopify import (
    CUSTOMER_BASE,
    THROTTLED,
    UNAUTHORISED,
    LeakyBucket,
    ShopifySimulator,
)

API = "/admin/api/2025-01"


@pytest.fixture(scope="module")
def world():
    return generate_world(240, seed=11)


@pytest.fixture
def sim(world):
    simulator = ShopifySimulator(world, token=TOKENS["shopify"], leak_rate=10_000)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.base_url, headers={"X-Shopify-Access-Token": TOKENS["shopify"]}) as client:
        yield client


def follow(http, url, params=None):
    """Every page from ``url`` by rel="next": (records, responses)."""
    records, responses = [], []
    while url:
        response = http.get(url, params=params)
        assert response.status_code == 200, response.text
        resource = "orders" if "orders.json" in str(response.url) else "customers"
        records += response.json()[resource]
        responses.append(response)
        url, params = response.links.get("next", {}).get("url"), None
    return records, responses


def test_same_world_same_ids_and_truth(world, sim):
    again = ShopifySimulator(world, token="x")
    assert [c["id"] for c in again.customers()] == [c["id"] for c in sim.customers()]
    assert [o["id"] for o in again.orders()] == [o["id"] for o in sim.orders()]
    truth = sim.truth()
    assert set(truth) == {str(c["id"]) for c in sim.customers()}
    assert all(c["id"] > CUSTOMER_BASE for c in sim.customers())
    people = {m.person_id for m in world.members["shopify"]}
    assert set(truth.values()) == people


@pytest.mark.parametrize("headers", [{}, {"X-Shopify-Access-Token": "shpat_wrong"}])
def test_wrong_token_gets_the_real_401(sim, headers):
    response = httpx.get(f"{sim.base_url}{API}/customers.json", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errors": UNAUTHORISED}


def test_customers_page_by_link_each_exactly_once(sim, http):
    records, responses = follow(http, f"{API}/customers.json", {"limit": 7})
    ids = [r["id"] for r in records]
    assert ids == sorted(ids) == [c["id"] for c in sim.customers()]
    assert len(set(ids)) == len(ids)
    assert all(len(r.json()["customers"]) == 7 for r in responses[:-1])
    assert "previous" not in responses[0].links and "next" in responses[0].links
    assert "previous" in responses[1].links and "next" not in responses[-1].links
    assert "limit=7" in responses[0].links["next"]["url"]


def test_previous_link_returns_the_page_before(http):
    first = http.get(f"{API}/customers.json", params={"limit": 5})
    second = http.get(first.links["next"]["url"])
    back = http.get(second.links["previous"]["url"])
    assert [c["id"] for c in back.json()["customers"]] == [c["id"] for c in first.json()["customers"]]


def test_one_page_has_no_link_header(http):
    response = http.get(f"{API}/customers.json", params={"limit": 250})
    assert response.status_code == 200 and "link" not in response.headers
    assert len(http.get(f"{API}/customers.json").json()["customers"]) == 50  # default limit


@pytest.mark.parametrize(
    "extra", [{"updated_at_min": "2025-01-01T00:00:00+08:00"}, {"since_id": "1"}, {"status": "any"}]
)
def test_page_info_with_a_filter_is_refused(http, extra):
    first = http.get(f"{API}/customers.json", params={"limit": 5})
    response = http.get(first.links["next"]["url"] + "&" + urlencode(extra))
    assert response.status_code == 400
    assert "page_info" in response.json()["errors"]


def test_page_info_keeps_limit_and_fields(http):
    first = http.get(f"{API}/customers.json", params={"limit": 5, "fields": "id,updated_at"})
    second = http.get(first.links["next"]["url"])
    assert second.status_code == 200
    assert all(set(c) == {"id", "updated_at"} for c in second.json()["customers"])


@pytest.mark.parametrize("limit", ["0", "251", "many"])
def test_bad_limit_is_refused(http, limit):
    assert http.get(f"{API}/customers.json", params={"limit": limit}).status_code == 400


def test_updated_at_window_and_since_id_filter_like_the_api(sim, http):
    moments = sorted(datetime.fromisoformat(c["updated_at"]) for c in sim.customers())
    low, high = moments[len(moments) // 3], moments[2 * len(moments) // 3]
    since_id = sim.customers()[10]["id"]
    params = {
        "limit": 9,
        "updated_at_min": low.isoformat(),
        "updated_at_max": high.isoformat(),
        "since_id": since_id,
    }
    records, _ = follow(http, f"{API}/customers.json", params)
    expected = [
        c["id"]
        for c in sim.customers()
        if low <= datetime.fromisoformat(c["updated_at"]) <= high and c["id"] > since_id
    ]
    assert [r["id"] for r in records] == expected and expected


def test_orders_default_to_open_and_status_any_lists_all(sim, http):
    everything, _ = follow(http, f"{API}/orders.json", {"limit": 250, "status": "any"})
    opened, _ = follow(http, f"{API}/orders.json", {"limit": 250})
    assert len(everything) == len(sim.orders())
    assert 0 < len(opened) < len(everything)
    assert all(o["closed_at"] is None for o in opened)
    cancelled, _ = follow(http, f"{API}/orders.json", {"limit": 250, "status": "cancelled"})
    assert cancelled and all(o["cancelled_at"] and o["closed_at"] for o in cancelled)


def test_order_shapes_money_times_refunds(sim):
    orders = sim.orders()
    customers = {c["id"] for c in sim.customers()}
    for order in orders:
        assert order["created_at"].endswith("+08:00")
        assert Decimal(order["total_price"]) == sum(Decimal(li["price"]) * li["quantity"] for li in order["line_items"])
        assert order["total_price"].count(".") == 1 and len(order["total_price"].split(".")[1]) == 2
        assert order["customer"]["id"] in customers
    refunded = [o for o in orders if o["financial_status"] == "refunded"]
    assert refunded
    for order in refunded:
        refund = order["refunds"][0]
        assert sum(Decimal(t["amount"]) for t in refund["transactions"]) == Decimal(order["total_price"])
        assert order["current_total_price"] == "0.00"
    assert any(o["cancelled_at"] and o["financial_status"] == "voided" for o in orders)


def test_leaky_bucket_refuses_the_41st_call_with_the_real_429(world):
    slow = ShopifySimulator(world, token="t")  # the real 40 calls, 2 per second
    slow.start()
    try:
        with httpx.Client(base_url=slow.base_url, headers={"X-Shopify-Access-Token": "t"}) as client:
            answers = [client.get(f"{API}/shop.json") for _ in range(45)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "a burst of 45 calls must overflow a bucket of 40"
        assert refused[0].json() == {"errors": THROTTLED}
        assert refused[0].headers["Retry-After"] == "2.0"
        used, size = answers[0].headers["X-Shopify-Shop-Api-Call-Limit"].split("/")
        assert (int(used), int(size)) == (1, 40)
    finally:
        slow.stop()


def test_bucket_drains_at_its_rate():
    now = [0.0]
    bucket = LeakyBucket(3, 2.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.header() == "3/3"
    now[0] += 0.5  # one call drained
    assert bucket.take() and not bucket.take()
    now[0] += 10
    assert bucket.header() == "0/3"


def test_metafields_create_update_list_and_refusals(sim, http):
    customer = sim.customers()[0]["id"]
    base = f"{API}/customers/{customer}/metafields"
    created = http.post(
        f"{base}.json",
        json={"metafield": {"namespace": "loyalty", "key": "points", "type": "number_integer", "value": "1250"}},
    )
    assert created.status_code == 201
    metafield = created.json()["metafield"]
    assert metafield["owner_id"] == customer and metafield["value"] == "1250"
    duplicate = http.post(
        f"{base}.json",
        json={"metafield": {"namespace": "loyalty", "key": "points", "type": "number_integer", "value": "1"}},
    )
    assert duplicate.status_code == 422 and "key" in duplicate.json()["errors"]
    bad = http.put(f"{base}/{metafield['id']}.json", json={"metafield": {"id": metafield["id"], "value": "lots"}})
    assert bad.status_code == 422 and bad.json()["errors"] == {"value": ["must be an integer"]}
    updated = http.put(f"{base}/{metafield['id']}.json", json={"metafield": {"id": metafield["id"], "value": "1300"}})
    assert updated.status_code == 200 and updated.json()["metafield"]["value"] == "1300"
    http.post(
        f"{base}.json",
        json={"metafield": {"namespace": "loyalty", "key": "tier", "type": "single_line_text_field", "value": "gold"}},
    )
    listed = http.get(f"{base}.json", params={"namespace": "loyalty"}).json()["metafields"]
    assert [m["key"] for m in listed] == ["points", "tier"]
    assert sim.loyalty()[str(customer)] == (1300, "gold")
    assert http.post(f"{API}/customers/1/metafields.json", json={"metafield": {}}).status_code == 404
    assert http.post(f"{base}.json", content=b"not json").status_code == 400
    assert (
        http.put(f"{API}/customers/{customer}/metafields/42.json", json={"metafield": {"value": "1"}}).status_code
        == 404
    )


def test_metafields_survive_a_restart_with_the_same_state_dir(world, tmp_path):
    first = ShopifySimulator(world, token="t", state_dir=tmp_path, leak_rate=10_000)
    first.start()
    customer = first.customers()[3]["id"]
    with httpx.Client(base_url=first.base_url, headers={"X-Shopify-Access-Token": "t"}) as client:
        client.post(
            f"{API}/customers/{customer}/metafields.json",
            json={"metafield": {"namespace": "loyalty", "key": "points", "type": "number_integer", "value": "77"}},
        )
    first.stop()
    assert (tmp_path / "shopify.json").exists()
    second = ShopifySimulator(world, token="t", state_dir=tmp_path, leak_rate=10_000)
    second.start()
    try:
        assert second.loyalty()[str(customer)] == (77, None)
        with httpx.Client(base_url=second.base_url, headers={"X-Shopify-Access-Token": "t"}) as client:
            made = client.post(
                f"{API}/customers/{customer}/metafields.json",
                json={
                    "metafield": {"namespace": "loyalty", "key": "tier", "type": "single_line_text_field", "value": "x"}
                },
            ).json()["metafield"]
        assert made["id"] > min(second.metafields)  # ids keep counting after a restart
    finally:
        second.stop()
