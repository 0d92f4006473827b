"""The Odoo connector against its simulator over real JSON-RPC: paging by write_date with ties and
concurrent edits, incremental reads, order lines and refunds, the mappings for a whole world (and
the points they earn), errors inside HTTP 200, session expiry, transport faults, and write-back."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest

from connectors import WritebackUpdate, connector_for
from connectors.odoo import OdooConnector
from connectors.simulators import TOKENS
from connectors.simulators._world import generate_world
from connectors.simulators.odoo import OdooSimulator
from mappings import load_mapping
from mappings.engine import MAPPINGS_DIR
from schemas import ConnectorConfig, Member, Order
from schemas.errors import ConfigError, FatalError

PEOPLE = 150
STREAMS = ("partners", "sale_orders", "pos_orders")
MODEL = {"partners": "res.partner", "sale_orders": "sale.order", "pos_orders": "pos.order"}


@pytest.fixture(scope="module")
def world():
    return generate_world(PEOPLE, 17, systems=("odoo",))


def simulator(world, **options) -> OdooSimulator:
    sim = OdooSimulator(world, token=TOKENS["odoo"], **options)
    sim.start()
    return sim


@pytest.fixture
def sim(world):
    with simulator(world) as running:
        yield running


@pytest.fixture(scope="module")
def reader(world):
    with simulator(world) as running:
        yield running


def connect(sim, *, page_size=40, **changes) -> OdooConnector:
    settings = {"kind": "odoo", "base_url": sim.base_url, "token": sim.token, "page_size": page_size}
    settings.update(sim.connector_settings())
    settings.update(changes)
    connector = OdooConnector("erp", ConnectorConfig(**settings))
    connector._client.max_wait = 0.05  # retry quickly: the production backoff only slows the tests
    return connector


def read_all(connector, stream, since=None):
    pages = list(connector.read(stream, since))
    return pages, [record for page in pages for record in page.records]


def ids_of(sim, stream, since=None):
    records = sim.tables[MODEL[stream]].records.values()
    return sorted(r["id"] for r in records if since is None or r["write_date"] >= since)


def test_the_registry_builds_it_and_needs_database_and_login(reader):
    config = ConnectorConfig(kind="odoo", base_url=reader.base_url, token=reader.token, **reader.connector_settings())
    with connector_for("erp", config) as connector:
        assert isinstance(connector, OdooConnector) and [s.name for s in connector.streams] == list(STREAMS)
    with pytest.raises(ConfigError, match="database"):
        OdooConnector("erp", ConnectorConfig(kind="odoo", base_url=reader.base_url, token="k", login="x"))


@pytest.mark.parametrize("stream", STREAMS)
def test_a_full_read_yields_every_record_once_with_a_cursor_per_page(reader, stream):
    with connect(reader) as connector:
        pages, records = read_all(connector, stream)
    assert sorted(r["id"] for r in records) == ids_of(reader, stream)
    assert len(records) == len({r["id"] for r in records}) and len(pages) > 1
    cursors = [page.cursor for page in pages]
    assert cursors == sorted(cursors) and all(c.endswith("+00:00") for c in cursors)
    newest = max(r["write_date"] for r in records)
    assert cursors[-1] == newest.replace(" ", "T") + "+00:00"


@pytest.mark.parametrize("stream", ["partners", "sale_orders"])
def test_an_incremental_read_starts_at_since(reader, stream):
    stamps = sorted(r["write_date"] for r in reader.tables[MODEL[stream]].records.values())
    since = stamps[len(stamps) // 2]
    with connect(reader, page_size=15) as connector:
        _, records = read_all(connector, stream, since.replace(" ", "T") + "+08:00")
    shifted = sorted(s for s in stamps if s >= _minus_hours(since, 8))
    assert len(records) == len(shifted)
    assert all(r["write_date"] >= _minus_hours(since, 8) for r in records)


def _minus_hours(stamp, hours):
    return (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")


def test_ties_and_edits_while_paging_lose_nothing(sim):
    """Thirty partners share one write_date across page boundaries, and a partner already read is
    edited between two pages: every partner is still read, the edited one twice."""
    table = sim.tables["res.partner"]
    tied = sorted(table.records)[:30]
    for pid in tied:
        table.put({**table.records[pid], "write_date": "2025-06-01 00:00:00"})
    with connect(sim, page_size=7) as connector:
        pages = connector.read("partners", "2025-05-01T00:00:00+00:00")
        first = next(pages)
        sim.touch("res.partner", first.records[0]["id"], city="杭州")
        records = first.records + [r for page in pages for r in page.records]
    counts = Counter(r["id"] for r in records)
    assert set(counts) == set(ids_of(sim, "partners", "2025-05-01 00:00:00"))
    assert counts[first.records[0]["id"]] == 2 and sum(counts.values()) == len(counts) + 1


def test_orders_carry_their_goods_lines_with_product_codes(reader):
    with connect(reader) as connector:
        _, sales = read_all(connector, "sale_orders")
        _, tills = read_all(connector, "pos_orders")
    for model, via, orders in (("sale.order", "order_line", sales), ("pos.order", "lines", tills)):
        for order in orders:
            line_ids = reader.tables[model].records[order["id"]][via]
            assert [line["id"] for line in order["lines"]] == sorted(line_ids)
            for line in order["lines"]:
                assert line["order_id"][0] == order["id"]
                assert line["product"]["default_code"].startswith("SKU-")


def test_a_refund_brings_its_original_along_even_when_the_original_is_older(reader):
    refunds = sorted(
        (r for r in reader.tables["pos.order"].records.values() if r["refunded_order_ids"]),
        key=lambda r: r["write_date"],
    )
    refund = refunds[-1]
    original = reader.tables["pos.order"].records[refund["refunded_order_ids"][0]]
    assert original["write_date"] < refund["write_date"]
    with connect(reader) as connector:
        _, records = read_all(connector, "pos_orders", refund["write_date"].replace(" ", "T") + "+00:00")
    by_id = {r["id"]: r for r in records}
    assert refund["id"] in by_id and by_id[original["id"]]["is_refunded"] is True
    assert len(by_id) == len(records)


def test_every_record_of_the_world_maps_and_earns_what_the_world_says(world, reader):
    """Members and orders validate; and per person, the points the hub's ledger rule gives the
    mapped orders (floor of the net amount, nothing for cancelled) equal the floor of every paid
    generated order — refunded and cancelled ones net to zero."""
    mappings = {s: load_mapping(MAPPINGS_DIR / "odoo" / f"{s}.yaml") for s in STREAMS}
    with connect(reader, page_size=200) as connector:
        read = {s: read_all(connector, s)[1] for s in STREAMS}
    members = [Member(**mappings["partners"].apply(r)) for r in read["partners"]]
    assert len(members) == len(world.members["odoo"]) and all(m.channel == "erp" for m in members)
    assert all(m.phone or m.email for m in members)
    truth = reader.truth()
    earned: dict[int, int] = defaultdict(int)
    statuses = Counter()
    for stream in ("sale_orders", "pos_orders"):
        seen = set()
        for record in read[stream]:
            if record["id"] in seen:
                continue
            seen.add(record["id"])
            order = Order(**mappings[stream].apply(record))
            statuses[(stream, order.status.value)] += 1
            assert order.lines and order.store_code and order.member_source_id
            assert sum(line.unit_price.amount * line.quantity for line in order.lines) == order.total.amount
            if order.status != "cancelled":
                earned[truth[order.member_source_id]] += _floor(order.net_amount)
    expected: dict[int, int] = defaultdict(int)
    for generated in world.orders["odoo"]:
        if generated.status == "paid":
            expected[generated.person_id] += _floor(generated.total)
    assert {p: v for p, v in earned.items() if v} == {p: v for p, v in expected.items() if v}
    assert statuses[("pos_orders", "refunded")] == statuses[("pos_orders", "cancelled")] - sum(
        1 for o in world.orders["odoo"] if o.store_code != "ONLINE" and o.status == "cancelled"
    )
    assert statuses[("sale_orders", "paid")] and statuses[("pos_orders", "paid")]


def _floor(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "words"),
    [({"token": "wrong"}, "API key"), ({"login": "nobody"}, "login"), ({"database": "nodb"}, "database")],
)
def test_bad_credentials_are_fatal_and_say_what_to_fix(reader, change, words):
    with connect(reader, **change) as connector, pytest.raises(FatalError, match=words):
        read_all(connector, "partners")


def test_a_missing_right_is_an_actionable_access_error(sim):
    sim.deny("sale.order")
    with connect(sim) as connector, pytest.raises(FatalError) as caught:
        read_all(connector, "sale_orders")
    assert "(sale.order)" in str(caught.value) and "read access" in str(caught.value)


def test_other_server_errors_carry_the_servers_message(reader):
    with connect(reader) as connector, pytest.raises(FatalError, match=r"Invalid field res\.partner\.nope"):
        connector._execute("res.partner", "search_read", [["nope", "=", 1]])


def test_an_expired_session_signs_in_again_once(sim):
    with connect(sim) as connector:
        connector.read("partners", None).__next__()
        sim.expire_sessions = 1
        _, records = read_all(connector, "partners")
        assert len(records) == len(sim.truth())
        sim.expire_sessions = 2
        with pytest.raises(FatalError, match="again right after signing in"):
            read_all(connector, "partners")


def test_the_expired_token_fault_is_access_denied(sim):
    sim.faults.expired_token = True
    with connect(sim) as connector, pytest.raises(FatalError, match="Access Denied"):
        read_all(connector, "partners")


@pytest.mark.parametrize(
    "fault", [{"errors": 3}, {"errors": 2, "error_status": 502}, {"malformed": 2}, {"reset": 2}, {"rate_limit": 2}]
)
def test_retriable_faults_are_retried_and_nothing_is_lost(sim, fault):
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    with connect(sim) as connector:
        _, records = read_all(connector, "pos_orders")
    assert sorted(r["id"] for r in records) == ids_of(sim, "pos_orders")


def test_check_explains_each_step(reader):
    with connect(reader) as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [
        ("reachable", True),
        ("authenticated", True),
        ("sample read", True),
        ("write-back", True),
    ]
    assert "17.0" in steps[0].detail
    assert f"{len(reader.truth())} partners" in steps[2].detail
    with connect(reader, token="wrong") as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reachable", True), ("authenticated", False)]
    config = ConnectorConfig(kind="odoo", base_url="http://127.0.0.1:9", token="k", database="d", login="l")
    with OdooConnector("erp", config) as connector:
        assert [(s.name, s.ok) for s in connector.check()] == [("reachable", False)]


# ----------------------------------------------------------------------------------- write-back
def update(partner, points, tier="gold", remote=None):
    return WritebackUpdate(
        member_id=f"M-{partner}",
        external_id=str(partner),
        points=points,
        tier=tier,
        tier_label=tier,
        remote=remote or {},
    )


def test_push_writes_the_card_and_the_tier_and_remembers_the_card(sim):
    cards = sim.tables["loyalty.card"]
    holder = next(c["partner_id"][0] for c in cards.records.values() if c["program_id"][0] == 1)
    newcomer = next(pid for pid in sorted(sim.tables["res.partner"].records) if not cards.refs["partner_id"].get(pid))
    gift = {cid: dict(c) for cid, c in cards.records.items() if c["program_id"][0] == 2}
    with connect(sim) as connector:
        results = connector.push([update(holder, 1250, "gold"), update(newcomer, 80, "regular")])
        assert all(r.ok for r in results)
        assert sim.loyalty()[str(holder)] == (1250, "gold") and sim.loyalty()[str(newcomer)] == (80, "regular")
        card = results[1].remote["card_id"]
        assert cards.records[card]["partner_id"][0] == newcomer and results[1].remote["program_id"] == 1
        again = connector.push([update(newcomer, 95, "silver", remote=results[1].remote)])
    assert again[0].ok and again[0].remote["card_id"] == card
    assert sim.loyalty()[str(newcomer)] == (95, "silver")
    assert len([c for c in cards.records.values() if c["partner_id"] and c["partner_id"][0] == newcomer]) == 1
    assert {cid: c for cid, c in cards.records.items() if c["program_id"][0] == 2} == gift


def test_one_bad_row_fails_alone(sim):
    partners = sorted(sim.tables["res.partner"].records)[:3]
    updates = [update(partners[0], 10), update(999999, 20), update("abc", 30), *[update(p, 40) for p in partners[1:]]]
    with connect(sim) as connector:
        results = connector.push(updates)
    assert [r.ok for r in results] == [True, False, False, True, True]
    assert "loyalty card" in results[1].error and "999999" in results[1].error
    assert "not an Odoo partner id" in results[2].error
    assert sim.loyalty()[str(partners[2])] == (40, "gold")


def test_a_whole_batch_is_a_handful_of_calls(sim):
    partners = sorted(sim.tables["res.partner"].records)
    with connect(sim) as connector:
        connector.push([update(p, 100, "gold" if i % 2 else "silver") for i, p in enumerate(partners[:100])])
    # sign in, programme, card search, card create, points write, two tier writes
    assert sim.requests["POST /jsonrpc"] <= 8
    assert all(sim.loyalty()[str(p)][0] == 100 for p in partners[:100])


def test_written_values_survive_a_simulator_restart(world, tmp_path):
    sim = simulator(world, state_dir=tmp_path)
    partner = sorted(sim.tables["res.partner"].records)[7]
    with connect(sim) as connector:
        result = connector.push([update(partner, 640, "silver")])[0]
    sim.stop()
    again = simulator(world, state_dir=tmp_path)
    try:
        assert again.loyalty()[str(partner)] == (640, "silver")
        with connect(again) as connector:
            assert connector.push([update(partner, 700, "gold", remote=result.remote)])[0].remote == result.remote
        assert again.loyalty()[str(partner)] == (700, "gold")
    finally:
        again.stop()


@pytest.mark.parametrize("bump", [True, False])
def test_the_tier_write_comes_back_on_the_next_read_only_when_odoo_moves_write_date(sim, bump):
    sim.bump_modified = bump  # Odoo does; the simulator's default keeps the demo's second run quiet
    partner = sorted(sim.tables["res.partner"].records)[3]
    newest = max(r["write_date"] for r in sim.tables["res.partner"].records.values())
    since = (datetime.fromisoformat(newest) + timedelta(seconds=1)).isoformat() + "+00:00"
    with connect(sim) as connector:
        assert read_all(connector, "partners", since)[1] == []
        assert connector.push([update(partner, 5, "silver")])[0].ok
        after = [r["id"] for r in read_all(connector, "partners", since)[1]]
    assert after == ([partner] if bump else [])
