"""Write-back end to end against the four simulators: a full sync through Dagster, then incremental
runs after a purchase, a refund, a redemption at a Square till and a steward's merge — every system
ends showing the hub's balance and tier, no write is ever sent twice, the hub's own writes that come
back (HubSpot and Odoo move a record's modified date on every write) send nothing again, and a run
with nothing changed sends no request at all."""

from __future__ import annotations

import json
from collections import Counter
from decimal import ROUND_FLOOR, Decimal

import pytest
from dagster import DagsterInstance
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.simulators import start_simulators
from hub import ledger, tiers, writeback
from hub.cli import app
from hub.demo import write_demo_config
from hub.resolution.steward import merge_pair
from hub.service import Hub
from hub.tables import DestinationEventRow, GoldenMember, MemberLink, StagedMember, WritebackState
from orchestration.runner import run_pipeline

READS = ("/search", "search_read", "search_count", "fields_get", "read", "authenticate", "version")


@pytest.fixture
def cluster(tmp_path):
    with start_simulators(members=70, seed=5, state_dir=tmp_path / "systems") as running:
        for name in ("hubspot", "odoo"):  # as the real systems do: a write moves the modified date
            running.simulators[name].bump_modified = True
        yield running


def full_sync(cluster, database_url, config_path, *, dagster: bool) -> Hub:
    write_demo_config(config_path, cluster.connector_configs(), database_url)
    hub = Hub(config_path=config_path)
    hub.upgrade()
    if dagster:
        figures = run_pipeline(str(config_path), database_url=database_url, instance=DagsterInstance.ephemeral())
        failures = figures.pop("_failures")["steps"]
        steps = ("raw", "canonical", "golden", "ledger", "tiers", "writeback")
        assert not [f for f in failures if f.split(":")[0].startswith(steps)], failures
        pushed = {name: figures[f"writeback/{name}"] for name in cluster.simulators}
    else:
        pushed = incremental(hub)
    for counts in pushed.values():
        assert counts["sent"] > 0 and counts["failed"] == 0
    return hub


@pytest.fixture
def hub(cluster, tmp_path):
    """A full sync on SQLite through the facade (the scenario test runs Dagster on both databases)."""
    return full_sync(cluster, f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub.yaml", dagster=False)


class WriteLog:
    """Every write request each simulator answers, normalised so that two sends of the same write
    compare equal (Odoo's JSON-RPC request id left out)."""

    def __init__(self, cluster):
        self.writes: dict[str, list[str]] = {name: [] for name in cluster.simulators}
        for name, sim in cluster.simulators.items():
            sim.after_request = self._recorder(name)

    def _recorder(self, name):
        def record(request, response):
            if request.method == "GET" or request.path.endswith("/search"):
                return
            body = request.json() if request.body else None
            if name == "odoo":
                params = body["params"]
                if params["service"] != "object" or params["args"][4] in READS:
                    return
                body = params["args"][3:]
            self.writes[name].append(f"{request.method} {request.path} {json.dumps(body, sort_keys=True)}")

        return record

    def total(self) -> int:
        return sum(len(w) for w in self.writes.values())

    def repeated(self) -> dict[str, list[str]]:
        return {
            n: [w for w, c in Counter(ws).items() if c > 1] for n, ws in self.writes.items() if len(set(ws)) < len(ws)
        }


def incremental(hub: Hub) -> dict[str, dict]:
    """One incremental run through the facade, in the pipeline's order; every destination's
    changes are taken in before any balance is written."""
    pulled = {name: hub.sync(name) for name in hub.connector_names}
    hub.stage()
    hub.resolve()
    hub.post_ledger()
    imported = {name: hub.import_events(name) for name in hub.writeback_names}
    hub.evaluate_tiers()
    return {
        name: {**hub.push(name), "taken_in": imported[name], "pulled": pulled[name]} for name in hub.writeback_names
    }


def shown_by_hub(hub: Hub) -> dict[tuple[str, str], tuple[int, str]]:
    """(system, customer) -> (points, tier) as the hub says every system should show them."""
    with hub.session() as session:
        balances, current = ledger.balances(session), tiers.current_tiers(session)
        rows = session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id)
            .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
            .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
            .where(GoldenMember.status == "active")
        ).all()
    return {(s, e): (max(0, balances.get(m, 0)), current.get(m, "regular")) for s, e, m in rows}


def assert_every_system_shows_the_hub(cluster, hub):
    expected = shown_by_hub(hub)
    square = cluster.simulators["square"]
    phoneless = {c["id"] for c in square.customers.values() if not c.get("phone_number")}
    shown = cluster.loyalty()
    assert set(shown) == set(expected)
    for key, (points, tier) in expected.items():
        if key[0] == "square" and key[1] in phoneless:
            points = None  # no phone, no Square loyalty account: the tier alone
        assert shown[key] == (points, tier), f"{key}: shows {shown[key]}, the hub says {(points, tier)}"


def member_of(hub: Hub, source: str, external_id: str) -> str:
    with hub.session() as session:
        return session.scalar(
            select(MemberLink.member_id)
            .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
            .where(StagedMember.source == source, StagedMember.source_id == external_id)
        )


def balance(hub: Hub, member_id: str) -> int:
    with hub.session() as session:
        return ledger.balance(session, member_id)


def customers_of(hub: Hub, member_id: str) -> list[tuple[str, str]]:
    with hub.session() as session:
        return list(
            session.execute(
                select(StagedMember.source, StagedMember.source_id)
                .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
                .where(MemberLink.member_id == member_id)
            ).all()
        )


def test_changes_anywhere_reach_every_system_once(cluster, database_url, tmp_path):
    hub = full_sync(cluster, database_url, tmp_path / "hub.yaml", dagster=True)
    assert_every_system_shows_the_hub(cluster, hub)
    log = WriteLog(cluster)
    shopify, square = cluster.simulators["shopify"], cluster.simulators["square"]

    # 1. a new purchase online, 2. a refund of an earlier paid order, each for a different member
    taken: set[str] = set()
    buyer = next(c for c in shopify.customers() if member_of(hub, "shopify", str(c["id"])))
    buyer_member = member_of(hub, "shopify", str(buyer["id"]))
    taken.add(buyer_member)
    refunded = next(
        o
        for o in shopify.orders()
        if o["financial_status"] == "paid" and member_of(hub, "shopify", str(o["customer"]["id"])) not in taken
    )
    refund_member = member_of(hub, "shopify", str(refunded["customer"]["id"]))
    taken.add(refund_member)
    # 3. a redemption at a Square till, by a member with a loyalty account and points
    till = next(
        c
        for c in square.customer_list()
        if c.get("phone_number")
        and (m := member_of(hub, "square", c["id"])) not in taken
        and balance(hub, m) >= 30
        and len(customers_of(hub, m)) == 1
    )
    till_member = member_of(hub, "square", till["id"])
    taken.add(till_member)
    # 4. a steward merges two members who each hold points, each known to one system only
    pair = []
    for system in ("shopify", "odoo"):
        for source, external_id in cluster.truth():
            member = member_of(hub, source, external_id) if source == system else None
            if member and member not in taken and balance(hub, member) > 0 and len(customers_of(hub, member)) == 1:
                pair.append(member)
                taken.add(member)
                break
    before = {m: balance(hub, m) for m in (buyer_member, refund_member, till_member, *pair)}

    shopify.place_order(buyer["id"], [("SKU-TEA-01", 2)])  # 536.00: 536 points
    shopify.refund_order(refunded["id"])
    earned = int(Decimal(refunded["total_price"]).to_integral_value(rounding=ROUND_FLOOR))
    square.redeem_at_till(till["id"], 30)
    with hub.session() as session, session.begin():
        staged = {
            m: session.scalar(
                select(MemberLink.staged_member_id)
                .where(MemberLink.member_id == m)
                .order_by(MemberLink.staged_member_id)
            )
            for m in pair
        }
        merge_pair(session, staged[pair[0]], staged[pair[1]], actor="steward", reason="same person, two accounts")

    first = incremental(hub)
    assert all(counts["failed"] == 0 for counts in first.values()), first
    assert first["square"]["taken_in"]["imported"] == 1 and first["square"]["taken_in"]["points"] == -30
    assert balance(hub, buyer_member) == before[buyer_member] + 536
    assert balance(hub, refund_member) == before[refund_member] - earned
    assert balance(hub, till_member) == before[till_member] - 30
    survivor = min(pair)  # the older golden id survives a merge
    assert balance(hub, survivor) == before[pair[0]] + before[pair[1]]
    assert_every_system_shows_the_hub(cluster, hub)
    assert square.loyalty()[till["id"]][0] == before[till_member] - 30  # the till's spend was not overwritten
    for system, external_id in customers_of(hub, survivor):
        assert cluster.loyalty()[(system, external_id)][0] in (None, before[pair[0]] + before[pair[1]])
    assert log.total() > 0 and log.repeated() == {}

    # the writes above moved HubSpot's and Odoo's modified dates: those records come back, and
    # nothing is sent again; the till's redemption is not taken twice
    echo = incremental(hub)
    # what the hub wrote to HubSpot contacts comes back (moved modified dates), and is recognised as
    # the hub's own write: pulled again, not a change
    came_back = echo["hubspot"]["pulled"]
    assert log.writes["hubspot"] and came_back["pulled"] > 0 and came_back["changed"] == 0, came_back
    assert sum(c["sent"] + c["failed"] for c in echo.values()) == 0, echo
    adjusted = sum(1 for w in log.writes["square"] if "/adjust " in w)
    assert echo["square"]["taken_in"]["imported"] == 0 and echo["square"]["taken_in"]["own"] == adjusted > 0
    assert log.repeated() == {}
    writes = log.total()
    quiet = incremental(hub)
    assert sum(c["sent"] for c in quiet.values()) == 0 and log.total() == writes
    assert_every_system_shows_the_hub(cluster, hub)
    with hub.session() as session:
        [event] = session.scalars(select(DestinationEventRow)).all()
    assert (event.kind, event.points, event.member_id, event.outcome) == ("redeem", -30, till_member, "imported")


def test_a_run_with_nothing_changed_sends_no_request(cluster, hub):
    before = cluster.request_counts()
    for name in hub.writeback_names:
        with hub.connector(name) as connector:
            counts = writeback.push(connector, hub.session, hub.config.programme)
        assert (counts.sent, counts.failed) == (0, 0) and counts.skipped > 0
    assert cluster.request_counts() == before
    with hub.session() as session:
        runs = writeback.history(session, limit=50)
    assert {r["destination"] for r in runs if r["sent"] == 0 and r["status"] == "finished"} == set(cluster.simulators)


def test_square_customers_without_a_phone_get_their_tier_and_a_reason_once(cluster, hub):
    square = cluster.simulators["square"]
    phoneless = [c["id"] for c in square.customers.values() if not c.get("phone_number")]
    assert phoneless
    with hub.session() as session:
        rows = {
            r.external_id: r
            for r in session.scalars(select(WritebackState).where(WritebackState.destination == "square"))
        }
    for customer in phoneless:
        assert rows[customer].last_error is None and "no phone number" in rows[customer].skipped
        assert square.loyalty()[customer][1] is not None  # the tier was written
    with hub.session() as session:
        assert writeback.plan(session, "square", hub.config.programme).updates == []  # not retried every run


def test_a_negative_balance_is_written_as_zero(cluster, hub):
    shopify = cluster.simulators["shopify"]
    customer = next(
        c for c in shopify.customers() if (m := member_of(hub, "shopify", str(c["id"]))) and balance(hub, m) > 10
    )
    member = member_of(hub, "shopify", str(customer["id"]))
    with hub.session() as session, session.begin():
        ledger.redeem(session, member, balance(hub, member), source="test", document="spend-all")
    order = shopify.place_order(customer["id"], [("SKU-MUG-02", 1)])
    incremental(hub)
    assert balance(hub, member) == 59 and shopify.loyalty()[str(customer["id"])][0] == 59
    with hub.session() as session, session.begin():
        ledger.redeem(session, member, 59, source="test", document="spend-the-mug")
    shopify.refund_order(order["id"])  # the mug's 59 points were spent: a debt of 59
    incremental(hub)
    assert balance(hub, member) == -59
    for system, external_id in customers_of(hub, member):
        assert cluster.loyalty()[(system, external_id)][0] in (0, None)


def test_a_destination_that_is_down_delays_only_itself(cluster, hub):
    member = next(
        m
        for s, e in cluster.truth()
        if s == "hubspot" and (m := member_of(hub, s, e)) and "shopify" in {s for s, _ in customers_of(hub, m)}
    )
    with hub.session() as session, session.begin():
        ledger.adjust(session, member, 77, reason="goodwill", actor="test")
    cluster.simulators["hubspot"].faults.errors = 10_000  # HubSpot is down
    results = {}
    for name in hub.writeback_names:
        try:
            results[name] = hub.push(name)
        except Exception as exc:
            results[name] = exc
    assert not isinstance(results["shopify"], Exception) and results["shopify"]["sent"] >= 1
    assert isinstance(results["hubspot"], Exception)
    with hub.session() as session:
        [last] = writeback.history(session, "hubspot", limit=1)
    assert last["status"] == "failed" and "500" in last["error"]
    cluster.simulators["hubspot"].faults.errors = 0
    assert hub.push("hubspot")["failed"] == 0
    assert_every_system_shows_the_hub(cluster, hub)


def test_sync_commands_plan_push_and_history(cluster, hub, tmp_path):
    config = str(tmp_path / "hub.yaml")
    shopify = cluster.simulators["shopify"]
    customer = shopify.customers()[0]
    member = member_of(hub, "shopify", str(customer["id"]))
    with hub.session() as session, session.begin():
        ledger.adjust(session, member, 5, reason="goodwill", actor="test")
    runner = CliRunner()
    plan = runner.invoke(app, ["--config", config, "sync", "plan", "shopify", "--json"])
    assert plan.exit_code == 0, plan.output
    data = json.loads(plan.output)
    assert data["to_send"] >= 1 and data["changed_fields"]["points"] >= 1 and data["changed_fields"]["tier"] == 0
    assert any(row["external_id"] == str(customer["id"]) for row in data["sample"]) or data["to_send"] > 5
    pushed = runner.invoke(app, ["--config", config, "sync", "push", "shopify", "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["sent"] == data["to_send"]
    again = runner.invoke(app, ["--config", config, "sync", "plan", "shopify"])
    assert "0 to send" in again.output
    history = runner.invoke(app, ["--config", config, "sync", "history", "shopify", "--json"])
    runs = json.loads(history.output)
    assert runs[0]["sent"] == data["to_send"] and runs[0]["status"] == "finished" and runs[0]["finished_at"]
    table = runner.invoke(app, ["--config", config, "sync", "history"])
    assert table.exit_code == 0 and "回写记录" in table.output


def test_the_hubs_own_writes_coming_back_send_nothing_again(cluster, hub):
    """A tier written to an Odoo partner and a HubSpot contact moves their modified dates; the next
    incremental run reads them again and sends nothing, for as long as nothing else changes."""
    from datetime import UTC, datetime, timedelta

    members = {}
    for system in ("odoo", "hubspot"):
        external_id = next(e for s, e in cluster.truth() if s == system and member_of(hub, s, e))
        members[system] = member_of(hub, system, external_id)
    with hub.session() as session, session.begin():
        for member in members.values():
            tiers.set_override(
                session,
                hub.config.programme,
                member,
                "diamond",
                until=datetime.now(UTC) + timedelta(days=30),
                reason="VIP guest",
                actor="test",
            )
    log = WriteLog(cluster)
    pushed = incremental(hub)
    assert pushed["odoo"]["sent"] >= 1 and pushed["hubspot"]["sent"] >= 1
    assert any("x_loyalty_tier" in w for w in log.writes["odoo"])
    writes = log.total()
    for _ in range(2):
        echo = incremental(hub)
        assert echo["odoo"]["pulled"]["pulled"] + echo["hubspot"]["pulled"]["pulled"] >= 1 or _ == 1, echo
        assert sum(c["sent"] + c["failed"] for c in echo.values()) == 0, echo
    assert log.total() == writes
    assert_every_system_shows_the_hub(cluster, hub)


def test_a_dashboard_adjustment_comes_into_the_ledger_and_is_not_undone(cluster, hub):
    square = cluster.simulators["square"]
    customer = next(
        c
        for c in square.customer_list()
        if c.get("phone_number")
        and (m := member_of(hub, "square", c["id"]))
        and balance(hub, m) >= 5
        and len(customers_of(hub, m)) == 1
    )
    member = member_of(hub, "square", customer["id"])
    before = balance(hub, member)
    square.adjust_in_dashboard(customer["id"], -5, "damaged voucher")
    adjusts = square.requests["POST /v2/loyalty/accounts/(?P<id>[^/]+)/adjust"]
    counts = hub.push("square")
    assert counts["imported"]["imported"] == 1 and counts["imported"]["points"] == -5
    assert balance(hub, member) == before - 5 == square.loyalty()[customer["id"]][0]
    assert square.requests["POST /v2/loyalty/accounts/(?P<id>[^/]+)/adjust"] == adjusts  # nothing to correct
    with hub.session() as session:
        [history] = [h for h in ledger.history(session, member) if "damaged voucher" in (h.get("reason") or "")]
    assert history["points"] == -5
    assert hub.push("square")["imported"]["imported"] == 0  # taken once
