"""The Square connector against the simulator: customers listed or searched, orders per location
with per-page cursors, faults, check(), loyalty write-back with idempotency, and the mappings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import connectors.square as square_module
from connectors import WritebackUpdate, connector_for
from connectors.simulators import TOKENS, generate_world
from connectors.simulators.square import SquareSimulator, e164
from connectors.square import SquareConnector
from mappings import load_mapping
from mappings.engine import MAPPINGS_DIR
from schemas import ConnectorConfig, Member, Order
from schemas.errors import ConfigError, FatalError


@pytest.fixture(scope="module")
def world():
    return generate_world(260, seed=9)


@pytest.fixture
def sim(world):
    with SquareSimulator(world, token=TOKENS["square"], enrolled_share=0) as simulator:
        yield simulator


def connect(sim, *, token=TOKENS["square"], page_size=20, locations=None) -> SquareConnector:
    settings = sim.connector_settings()
    if locations is not None:
        settings["locations"] = locations
    config = ConnectorConfig(kind="square", base_url=sim.base_url, token=token, page_size=page_size, **settings)
    connector = connector_for("square", config)
    assert isinstance(connector, SquareConnector)
    return connector


def read_all(connector, stream, since=None):
    pages = list(connector.read(stream, since))
    return [r for p in pages for r in p.records], pages


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# ------------------------------------------------------------------------------ reads
def test_full_customer_read_lists_everyone_once_with_a_final_cursor(sim):
    with connect(sim) as connector:
        records, pages = read_all(connector, "customers")
    assert sorted(r["id"] for r in records) == sorted(sim.customers) and len(records) == len(sim.customers)
    assert records[0] == sim.customers[records[0]["id"]]
    assert sim.requests["GET /v2/customers"] == len(pages) > 3
    assert all(p.cursor is None for p in pages[:-1])
    assert utc(pages[-1].cursor) == max(utc(c["updated_at"]) for c in sim.customers.values())


def test_incremental_customer_read_searches_by_updated_at(sim):
    times = sorted(utc(c["updated_at"]) for c in sim.customers.values())
    since = times[len(times) // 2]
    with connect(sim, page_size=7) as connector:
        records, pages = read_all(connector, "customers", since.isoformat())
    assert {r["id"] for r in records} == {c["id"] for c in sim.customers.values() if utc(c["updated_at"]) >= since}
    assert sim.requests["POST /v2/customers/search"] == len(pages) > 1
    assert all(p.cursor is None for p in pages[:-1]) and utc(pages[-1].cursor) == times[-1]


def test_orders_read_sorted_by_update_so_every_page_has_a_cursor(sim):
    with connect(sim, page_size=25) as connector:
        records, pages = read_all(connector, "orders")
    assert sorted(r["id"] for r in records) == sorted(sim.orders) and len(records) == len(sim.orders)
    seen = []
    for page in pages:
        seen += page.records
        assert utc(page.cursor) == max(utc(r["updated_at"]) for r in seen)


def test_incremental_orders_read(sim):
    times = sorted(utc(o["updated_at"]) for o in sim.orders.values())
    since = times[2 * len(times) // 3]
    with connect(sim) as connector:
        records, pages = read_all(connector, "orders", since.isoformat())
    assert {r["id"] for r in records} == {o["id"] for o in sim.orders.values() if utc(o["updated_at"]) >= since}
    assert utc(pages[-1].cursor) == times[-1]


def test_several_location_queries_move_the_cursor_only_at_the_end(sim, monkeypatch):
    monkeypatch.setattr(square_module, "LOCATIONS_PER_QUERY", 2)  # 5 locations: 3 queries
    with connect(sim, page_size=30) as connector:
        records, pages = read_all(connector, "orders")
    assert sorted(r["id"] for r in records) == sorted(sim.orders)
    assert sim.requests["POST /v2/orders/search"] == len(pages) > 3
    assert all(p.cursor is None for p in pages[:-1]) and pages[-1].cursor is not None


def test_orders_need_configured_locations(sim):
    with connect(sim, locations=[]) as connector, pytest.raises(ConfigError, match="locations"):
        list(connector.read("orders", None))


def test_wrong_token_is_fatal_with_advice(sim):
    with connect(sim, token="EAAA_wrong") as connector, pytest.raises(FatalError) as failure:
        list(connector.read("orders", None))
    assert "401" in str(failure.value) and "access token" in str(failure.value)


@pytest.mark.parametrize(
    ("stream", "fault"),
    [
        ("customers", {"rate_limit": 2}),  # 429 RATE_LIMITED, no Retry-After: exponential backoff
        ("orders", {"rate_limit": 2}),
        ("orders", {"errors": 2}),  # a burst of 500s
        ("orders", {"malformed": 2}),  # cut-off JSON bodies
        ("orders", {"reset": 2}),  # connections dropped mid-body
    ],
)
def test_transient_faults_are_retried_and_nothing_is_lost(sim, stream, fault):
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    with connect(sim, page_size=50) as connector:
        records, _ = read_all(connector, stream)
    expected = sim.customers if stream == "customers" else sim.orders
    assert sorted(r["id"] for r in records) == sorted(expected) and len(records) == len(expected)
    assert sim.faults.rate_limit == sim.faults.errors == sim.faults.malformed == sim.faults.reset == 0


def test_check_explains_each_step(sim):
    with connect(sim) as connector:
        steps = connector.check()
    assert [s.name for s in steps] == ["reach", "authenticate", "locations", "sample read", "loyalty"]
    assert all(s.ok for s in steps), steps
    with connect(sim, locations=["LSH01A7KQ2XPM", "LXX99"]) as connector:
        steps = {s.name: s for s in connector.check()}
    assert not steps["locations"].ok and "LXX99" in steps["locations"].detail
    assert "LBJ01C9MS4ZRP" in steps["locations"].detail  # lists what the seller has
    with connect(sim, token="EAAA_wrong") as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reach", True), ("authenticate", False)]


# ------------------------------------------------------------------------------ write-back
def customers_with_phone(sim, count):
    return [c for c in sim.customers.values() if c.get("phone_number")][:count]


def update(customer, points, tier="gold", *, acknowledged=None, key=None, remote=None, phone="auto"):
    return WritebackUpdate(
        member_id=f"M-{customer['id'][:6]}",
        external_id=customer["id"],
        points=points,
        tier=tier,
        tier_label=tier,
        acknowledged_points=acknowledged,
        idempotency_key=key or f"{customer['id']}|{acknowledged}|{points}",
        phone=e164(customer.get("phone_number")) if phone == "auto" else phone,
        remote=remote or {},
    )


def test_push_enrols_adjusts_and_sets_tiers_in_batches(sim):
    customers = customers_with_phone(sim, 30)
    updates = [update(c, 100 + i, "silver" if i % 2 else "gold") for i, c in enumerate(customers)]
    with connect(sim) as connector:
        results = connector.push(updates)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(r.remote["loyalty_account_id"] in sim.accounts for r in results)
    shown = sim.loyalty()
    assert [shown[u.external_id] for u in updates] == [(u.points, u.tier) for u in updates]
    assert sim.requests["POST /v2/customers/custom-attributes/bulk-upsert"] == 2  # 25 + 5
    assert sim.requests["POST /v2/loyalty/accounts/search"] == 1  # 30 customer ids per search


def test_resending_the_same_change_never_applies_twice(sim):
    [customer] = customers_with_phone(sim, 1)
    adjust = "POST /v2/loyalty/accounts/(?P<id>[^/]+)/adjust"
    cut = []

    def cut_first_adjust(request, response):  # applied at Square, but the answer never arrives
        if request.path.endswith("/adjust") and not cut:
            cut.append(request.body)
            sim.faults.reset = 1

    sim.after_request = cut_first_adjust
    with connect(sim) as connector:
        first = connector.push([update(customer, 100, acknowledged=0, key="k-0-100")])
        assert first[0].ok and sim.requests[adjust] == 2  # retried with the same key: applied once
        assert sim.loyalty()[customer["id"]] == (100, "gold")
        again = connector.push([update(customer, 100, acknowledged=0, key="k-0-100")])  # a crash before the ack
    assert again[0].ok and sim.loyalty()[customer["id"]] == (100, "gold")
    assert sim.requests[adjust] == 2  # the balance already moved: nothing to send
    assert [e["adjust_points"]["points"] for e in sim.events if e["type"] == "ADJUST_POINTS"] == [100]


def test_a_remembered_account_is_adjusted_from_its_balance_read_just_before(sim):
    [customer] = customers_with_phone(sim, 1)
    with connect(sim) as connector:
        [first] = connector.push([update(customer, 80)])
        searches = sim.requests["POST /v2/loyalty/accounts/search"]
        [second] = connector.push([update(customer, 130, "silver", acknowledged=80, remote=first.remote)])
    assert second.ok and second.remote == first.remote
    assert sim.requests["POST /v2/loyalty/accounts/search"] == searches + 1  # one search reads the balance
    assert sim.loyalty()[customer["id"]] == (130, "silver")
    event = sim.events[-1]
    assert event["type"] == "ADJUST_POINTS" and event["adjust_points"]["points"] == 50


def test_an_account_enrolled_at_the_till_is_brought_to_the_hub_balance(world):
    enrolled = SquareSimulator(world, token="t", enrolled_share=1.0)
    enrolled.start()
    try:
        account = next(a for a in enrolled.accounts.values() if a["balance"] > 20)
        customer = enrolled.customers[account["customer_id"]]
        with connect(enrolled, token="t") as connector:
            [result] = connector.push([update(customer, 20)])
        assert result.ok and result.remote == {"loyalty_account_id": account["id"]}
        assert enrolled.loyalty()[customer["id"]] == (20, "gold")
        assert enrolled.requests["POST /v2/loyalty/accounts"] == 0  # found, not enrolled again
    finally:
        enrolled.stop()


def test_row_failures_are_per_customer(sim):
    [good] = customers_with_phone(sim, 1)
    phoneless = next(c for c in sim.customers.values() if not c.get("phone_number"))
    ghost = {"id": "NOSUCHCUSTOMER0000000000000", "phone_number": "+8613900000000"}
    bad_phone = customers_with_phone(sim, 2)[1]
    with connect(sim) as connector:
        results = connector.push(
            [update(good, 5), update(phoneless, 5), update(ghost, 5), update(bad_phone, 5, phone="139 0000")]
        )
    assert [r.ok for r in results] == [True, True, False, False]
    assert "no phone number" in results[1].skipped and results[1].remote == {"needs_phone": True}
    assert "NOT_FOUND" in results[2].error
    assert "INVALID_PHONE_NUMBER" in results[3].error
    assert sim.loyalty()[phoneless["id"]] == (None, "gold")  # the tier still went through
    assert sim.loyalty()[good["id"]] == (5, "gold")


# ------------------------------------------------------------------------------ mappings
def test_mappings_turn_every_record_into_a_valid_canonical_one(sim):
    members = load_mapping(MAPPINGS_DIR / "square" / "customers.yaml")
    orders = load_mapping(MAPPINGS_DIR / "square" / "orders.yaml")
    with connect(sim, page_size=100) as connector:
        customers, _ = read_all(connector, "customers")
        sales, _ = read_all(connector, "orders")
    mapped = [Member(**members.apply(r)) for r in customers]
    assert all(m.channel == "pos" and m.source_id == r["id"] for m, r in zip(mapped, customers, strict=True))
    assert any(m.birthday for m in mapped) and any(m.marketing_consent is False for m in mapped)
    stores = {loc: code for loc, code in [("LSH01A7KQ2XPM", "SH01"), ("LGZ01E2PU6BTR", "GZ01")]}
    canonical = [Order(**orders.apply(r)) for r in sales]
    assert {"paid", "refunded", "cancelled"} <= {o.status for o in canonical}
    for order, raw in zip(canonical, sales, strict=True):
        assert order.total.amount * 100 == raw["total_money"]["amount"]
        assert stores.get(raw["location_id"], order.store_code) == order.store_code
        assert sum(line.unit_price.amount * line.quantity for line in order.lines) == order.total.amount
        if order.status == "refunded":
            assert order.refunded.amount * 100 == raw["return_amounts"]["total_money"]["amount"]
        else:
            assert order.refunded is None
