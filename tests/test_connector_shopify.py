"""The Shopify connector against the simulator: full and incremental reads, cursors, faults,
the leaky bucket, write-back of metafields, and the mapping files applied to what it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors import WritebackUpdate, connector_for
from connectors._paging import paginator
from connectors.shopify import ShopifyConnector
from connectors.simulators import TOKENS, generate_world
from connectors.simulators.shopify import ShopifySimulator
from mappings import load_mapping
from mappings.engine import MAPPINGS_DIR
from schemas import ConnectorConfig, Member, Order
from schemas.errors import ConfigError, FatalError


@pytest.fixture(scope="module")
def world():
    return generate_world(240, seed=5)


@pytest.fixture
def sim(world):
    with ShopifySimulator(world, token=TOKENS["shopify"], leak_rate=10_000, retry_after=0.05) as simulator:
        yield simulator


def connect(sim, *, token=TOKENS["shopify"], page_size=25) -> ShopifyConnector:
    config = ConnectorConfig(kind="shopify", base_url=sim.base_url, token=token, page_size=page_size)
    connector = connector_for("shopify", config)
    assert isinstance(connector, ShopifyConnector)
    return connector


def read_all(connector, stream, since=None):
    pages = list(connector.read(stream, since))
    return [r for p in pages for r in p.records], pages


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize("stream", ["customers", "orders"])
def test_full_read_returns_every_record_once_and_a_final_cursor(sim, stream):
    with connect(sim) as connector:
        records, pages = read_all(connector, stream)
    expected = sim.customers() if stream == "customers" else sim.orders()  # orders: status=any, closed too
    assert [r["id"] for r in records] == [r["id"] for r in expected]
    assert records == expected  # raw, exactly as the API returns them
    assert len(pages) > 3
    assert all(p.cursor is None for p in pages[:-1])  # listed by id, not by update time
    assert utc(pages[-1].cursor) == max(utc(r["updated_at"]) for r in expected)
    assert pages[-1].cursor.endswith("+00:00")


def test_incremental_read_returns_what_changed_since(sim):
    moments = sorted(utc(o["updated_at"]) for o in sim.orders())
    since = moments[len(moments) // 2]
    with connect(sim) as connector:
        records, pages = read_all(connector, "orders", since.isoformat())
    assert {r["id"] for r in records} == {o["id"] for o in sim.orders() if utc(o["updated_at"]) >= since}
    assert utc(pages[-1].cursor) == moments[-1]


def test_incremental_read_with_nothing_new_has_no_cursor(sim):
    with connect(sim) as connector:
        records, pages = read_all(connector, "customers", (datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert records == [] and [p.cursor for p in pages] == [None]


def test_wrong_token_is_fatal_with_advice(sim):
    with connect(sim, token="shpat_wrong") as connector, pytest.raises(FatalError) as failure:
        list(connector.read("customers", None))
    assert "401" in str(failure.value) and "access token" in str(failure.value)


@pytest.mark.parametrize(
    "fault",
    [
        {"rate_limit": 2},  # 429 with Retry-After
        {"errors": 2},  # a burst of 500s
        {"malformed": 2},  # cut-off JSON bodies
        {"reset": 2},  # connections dropped mid-body
    ],
)
def test_transient_faults_are_retried_and_nothing_is_lost(sim, fault):
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    with connect(sim) as connector:
        records, _ = read_all(connector, "customers")
    assert [r["id"] for r in records] == [c["id"] for c in sim.customers()]
    assert sim.faults.rate_limit == sim.faults.errors == sim.faults.malformed == sim.faults.reset == 0


@pytest.mark.parametrize("pacing", [40.0, float("inf")], ids=["paced", "unpaced-so-429s-are-retried"])
def test_a_small_real_bucket_is_paced_or_retried(world, pacing):
    tight = ShopifySimulator(world, token="t", bucket_size=8, leak_rate=40.0, retry_after=0.05)
    tight.start()
    try:
        with connect(tight, token="t", page_size=5) as connector:
            connector.leak_per_second = pacing  # the real drain is 2/s; this bucket drains 20 times faster
            records, pages = read_all(connector, "customers")
        assert len(pages) > 10
        assert [r["id"] for r in records] == [c["id"] for c in tight.customers()]
    finally:
        tight.stop()


def test_check_explains_each_step(sim):
    with connect(sim) as connector:
        steps = connector.check()
    assert [s.name for s in steps] == ["reach", "authenticate", "sample read"]
    assert all(s.ok for s in steps), steps
    with connect(sim, token="shpat_wrong") as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reach", True), ("authenticate", False)]
    assert "token" in steps[1].detail


def test_check_of_an_unreachable_shop_fails_the_first_step(sim):
    config = ConnectorConfig(kind="shopify", base_url="http://127.0.0.1:9", token="t", timeout_seconds=1)
    with connector_for("shopify", config) as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reach", False)]


def update(external_id, points, tier, remote=None):
    return WritebackUpdate(
        member_id=f"M{external_id}",
        external_id=str(external_id),
        points=points,
        tier=tier,
        tier_label=tier,
        remote=remote or {},
    )


def test_push_writes_metafields_then_puts_by_remembered_id(sim):
    ids = [c["id"] for c in sim.customers()[:3]]
    with connect(sim) as connector:
        first = connector.push([update(i, 100 * n, "silver") for n, i in enumerate(ids, start=1)])
        assert all(r.ok for r in first), first
        assert all(set(r.remote) == {"points_metafield_id", "tier_metafield_id"} for r in first)
        posts = sim.requests[r"POST /admin/api/2025-01/customers/(?P<id>\d+)/metafields\.json"]
        second = connector.push([update(ids[0], 999, "gold", first[0].remote)])
    assert second[0].ok and second[0].remote == first[0].remote
    assert sim.requests[r"POST /admin/api/2025-01/customers/(?P<id>\d+)/metafields\.json"] == posts  # PUT only
    shown = sim.loyalty()
    assert shown[str(ids[0])] == (999, "gold")
    assert shown[str(ids[1])] == (200, "silver") and shown[str(ids[2])] == (300, "silver")


def test_push_without_remembered_ids_finds_the_existing_metafields(sim):
    customer = sim.customers()[5]["id"]
    with connect(sim) as connector:
        first = connector.push([update(customer, 10, "regular")])
        again = connector.push([update(customer, 20, "silver")])  # the hub lost the ids
    assert again[0].ok and again[0].remote == first[0].remote
    assert sim.loyalty()[str(customer)] == (20, "silver")


def test_one_refused_customer_does_not_fail_the_batch(sim):
    good = sim.customers()[0]["id"]
    with connect(sim) as connector:
        results = connector.push([update(7_000_009_999_999, 1, "gold"), update(good, 5, "gold"), update("abc", 1, "x")])
    assert [r.ok for r in results] == [False, True, False]
    assert "not in Shopify" in results[0].error and "not a Shopify customer id" in results[2].error
    assert sim.loyalty()[str(good)] == (5, "gold")


def test_mappings_turn_every_record_into_a_valid_canonical_one(sim):
    members = load_mapping(MAPPINGS_DIR / "shopify" / "customers.yaml")
    orders = load_mapping(MAPPINGS_DIR / "shopify" / "orders.yaml")
    with connect(sim, page_size=250) as connector:
        customers, _ = read_all(connector, "customers")
        sales, _ = read_all(connector, "orders")
    mapped = [Member(**members.apply(r)) for r in customers]
    assert all(m.channel == "online" and m.source_id == str(r["id"]) for m, r in zip(mapped, customers, strict=True))
    assert any(m.marketing_consent for m in mapped) and any(m.city for m in mapped)
    canonical = [Order(**orders.apply(r)) for r in sales]
    statuses = {o.status for o in canonical}
    assert {"paid", "refunded", "cancelled"} <= statuses
    for order, raw in zip(canonical, sales, strict=True):
        assert order.store_code == "ONLINE" and order.member_source_id == str(raw["customer"]["id"])
        assert str(order.total.amount) == raw["total_price"]
        assert sum(line.unit_price.amount * line.quantity for line in order.lines) == order.total.amount
        assert (order.refunded is not None) == (order.status == "refunded")


def test_paginators_are_looked_up_by_name_and_a_typo_gets_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'header_link'"):
        paginator("header_lnk")
    assert paginator("body_cursor", cursor_param="after").cursor_param == "after"
