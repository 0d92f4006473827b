"""Tiers on SQLite and PostgreSQL: a ladder by qualifying spend or points in a rolling window;
upgrades at once, downgrades at a review by one level, retention floors (保级), overrides with an
expiry, tier history, and evaluation that depends only on the orders, the ledger and the time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from hub import ledger, tiers
from hub.db import engine_for
from hub.service import Hub
from hub.tables import (
    AuditLog,
    GoldenMember,
    MemberLink,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
    TierReview,
)
from schemas import HubConfig, ProgrammeConfig

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LADDER = [
    {"name": "regular", "label": "普通", "min_spend": 0, "min_points": 0},
    {"name": "silver", "label": "银卡", "min_spend": 1000, "min_points": 1000, "retain_spend": 600},
    {"name": "gold", "label": "金卡", "min_spend": 5000, "min_points": 5000, "retain_spend": 3000},
    {"name": "diamond", "label": "钻石", "min_spend": 20000, "min_points": 20000},
]


def programme(**policy):
    return ProgrammeConfig.model_validate({"tiers": LADDER, "tier_policy": policy})


@pytest.fixture
def sessions(database_url):
    return sessionmaker(engine_for(database_url), expire_on_commit=False)


def new_member(session, member_id=None):
    seq = (session.scalar(select(func.max(GoldenMember.seq))) or 0) + 1
    member_id = member_id or f"MH{seq:08d}"
    source_id = uuid.uuid4().hex[:12]
    record = SourceRecordRow(source="pos", stream="members", external_id=source_id, payload={}, content_hash="x")
    session.add(record)
    session.flush()
    staged = StagedMember(source_record_id=record.id, source="pos", source_id=source_id, channel="pos")
    session.add_all([staged, GoldenMember(seq=seq, member_id=member_id, status="active")])
    session.flush()
    session.add(MemberLink(staged_member_id=staged.id, member_id=member_id, rule="new", evidence={}))
    session.flush()
    return member_id, source_id


def order(session, buyer, total, *, at=T0, refunded="0", status="paid", order_id=None):
    order_id = order_id or uuid.uuid4().hex[:12]
    row = session.scalar(select(StagedOrder).where(StagedOrder.source == "pos", StagedOrder.source_id == order_id))
    if row is None:
        record = SourceRecordRow(source="pos", stream="orders", external_id=order_id, payload={}, content_hash="x")
        session.add(record)
        session.flush()
        row = StagedOrder(
            source_record_id=record.id,
            source="pos",
            source_id=order_id,
            currency="CNY",
            channel="pos",
            store_code="SH01",
            member_source_id=buyer,
            lines={},
        )
        session.add(row)
    row.total_amount, row.refunded_amount, row.status, row.ordered_at = Decimal(total), Decimal(refunded), status, at
    row.updated_at = at
    session.flush()
    return order_id


def history(session, member_id):
    return [(h["tier"], h["previous"], h["reason"]) for h in tiers.history(session, member_id)]


def tier_of(session, member_id):
    return tiers.current_tiers(session)[member_id]


def test_upgrades_apply_at_once_and_may_skip_levels(sessions):
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        order(session, buyer, "999.99")
        tiers.evaluate(session, programme(), at=T0)
        order(session, buyer, "4000.01", at=T0 + DAY)
        counts = tiers.evaluate(session, programme(), at=T0 + DAY)
        assert (counts.upgraded, counts.changed) == (1, 1)
        assert history(session, member) == [("regular", None, "initial"), ("gold", "regular", "upgrade")]
        rows = session.scalars(select(TierAssignmentRow).order_by(TierAssignmentRow.id)).all()
        assert [(r.assigned_at, r.qualifying_amount) for r in rows] == [
            (T0, Decimal("999.99")),
            (T0 + DAY, Decimal("5000.00")),
        ]


def test_downgrades_wait_for_a_review_go_one_level_and_respect_retention(sessions):
    rules = programme(window_days=365, review_every="month")
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        kept, kept_buyer = new_member(session)
        order(session, buyer, "25000", at=T0)
        order(session, kept_buyer, "5000", at=T0)
        order(session, kept_buyer, "3000", at=T0 + 200 * DAY)
        tiers.evaluate(session, rules, at=T0)
        assert (tier_of(session, member), tier_of(session, kept)) == ("diamond", "gold")
        later = T0 + 400 * DAY  # the first orders left the window
        assert tiers.evaluate(session, rules, at=later).downgraded == 0  # not a review: nothing goes down
        counts = tiers.review_tiers(session, rules, at=later)
        assert (counts.downgraded, counts.retained, counts.period) == (1, 1, "2026-04")
        assert (tier_of(session, member), tier_of(session, kept)) == ("gold", "gold")  # 3000 ≥ gold's floor
        assert tiers.review_tiers(session, rules, at=later + DAY).downgraded == 0  # once per period
        tiers.review_tiers(session, rules, at=later + 31 * DAY)
        assert (tier_of(session, member), tier_of(session, kept)) == ("silver", "gold")
        tiers.review_tiers(session, rules, at=later + 200 * DAY)
        assert (tier_of(session, member), tier_of(session, kept)) == ("regular", "silver")
        assert history(session, member) == [
            ("diamond", None, "initial"),
            ("gold", "diamond", "downgrade"),
            ("silver", "gold", "downgrade"),
            ("regular", "silver", "downgrade"),
        ]
        assert session.scalar(select(func.count()).select_from(TierReview)) == 3


def test_refunds_lower_qualifying_spend(sessions):
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        bought = order(session, buyer, "6000")
        tiers.evaluate(session, programme(), at=T0)
        order(session, buyer, "6000", refunded="5500", status="partially_refunded", order_id=bought, at=T0)
        assert tiers.qualifying_spend(session)[member] == Decimal(500)
        tiers.evaluate(session, programme(), at=T0 + DAY, review=True)
        assert tier_of(session, member) == "silver"  # one level per review, even though 500 is regular
        order(session, buyer, "6000", status="cancelled", order_id=bought, at=T0)
        assert tiers.qualifying_spend(session).get(member, Decimal(0)) == 0


def test_points_basis_counts_released_points_and_spending_never_lowers_a_tier(sessions):
    rules = programme(basis="points")
    ledger_rules = ProgrammeConfig(pending_days=7)
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        order(session, buyer, "1500", at=T0)
        ledger.post_orders(session, ledger_rules, now=T0)
        assert tiers.evaluate(session, rules, at=T0).per_tier == {"regular": 1}  # pending counts for nothing
        tiers.evaluate(session, rules, at=T0 + 7 * DAY)
        assert tier_of(session, member) == "silver"
        ledger.release_pending(session, T0 + 7 * DAY)
        ledger.redeem(session, member, 1500, source="pos", document="spend-it-all", at=T0 + 8 * DAY)
        tiers.evaluate(session, rules, at=T0 + 9 * DAY, review=True)
        assert tier_of(session, member) == "silver"
        assert tiers.qualifying_points(session, until=T0 + 9 * DAY)[member] == 1500


def test_overrides_hold_until_they_lapse_and_are_audited(sessions):
    rules = programme()
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        order(session, buyer, "1200")
        tiers.evaluate(session, rules, at=T0)
        tiers.set_override(
            session, rules, member, "diamond", until=T0 + 30 * DAY, reason="VIP event", actor="li", at=T0
        )
        tiers.evaluate(session, rules, at=T0 + DAY, review=True)
        assert tier_of(session, member) == "diamond"
        counts = tiers.evaluate(session, rules, at=T0 + 30 * DAY)
        assert counts.overrides_expired == 1 and tier_of(session, member) == "silver"
        assert history(session, member) == [
            ("silver", None, "initial"),
            ("diamond", "silver", "override"),
            ("silver", "diamond", "override_expired"),
        ]
        audit = session.scalar(select(AuditLog).where(AuditLog.action == "tier.override"))
        assert (audit.actor, audit.after["reason"]) == ("li", "VIP event")
        with pytest.raises(Exception, match="no tier 'platinum'"):
            tiers.set_override(session, rules, member, "platinum", until=T0 + DAY, reason="x", actor="li", at=T0)


def test_an_override_below_what_the_rules_give_is_overtaken_by_an_upgrade(sessions):
    rules = programme()
    with sessions() as session, session.begin():
        member, buyer = new_member(session)
        tiers.evaluate(session, rules, at=T0)
        tiers.set_override(session, rules, member, "silver", until=T0 + 90 * DAY, reason="trial", actor="li", at=T0)
        order(session, buyer, "6000", at=T0 + DAY)
        tiers.evaluate(session, rules, at=T0 + DAY)
        assert tier_of(session, member) == "gold"


def test_the_nightly_jobs_run_from_the_hub(database_url):
    config = HubConfig.model_validate(
        {"programme": {"pending_days": 7, "expiry": {"policy": "days", "days": 30}, "tiers": LADDER}}
    )
    hub = Hub(config, database_url=database_url)
    with hub.session() as session, session.begin():
        _member, buyer = new_member(session)
        order(session, buyer, "1200", at=T0)
        ledger.post_orders(session, config.programme, now=T0)
    first = hub.nightly(T0 + 8 * DAY)
    assert (first["released"]["points"], first["expired"]["points"], first["tiers"]["per_tier"]) == (
        1200,
        0,
        {"silver": 1},
    )
    again = hub.nightly(T0 + 8 * DAY)
    assert (again["released"]["points"], again["expired"]["points"], again["tiers"]["changed"]) == (0, 0, 0)
    assert hub.nightly(T0 + 40 * DAY)["expired"]["points"] == 1200


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)
@given(
    orders=st.lists(
        st.tuples(st.integers(0, 720), st.integers(1, 15000_00), st.integers(0, 100)), min_size=1, max_size=8
    ),
    reviews=st.lists(st.integers(0, 900), min_size=1, max_size=6),
)
def test_evaluation_is_deterministic_and_moves_down_one_level_at_most(sessions, orders, reviews):
    rules = programme(window_days=365)
    rank = {level.name: i for i, level in enumerate(rules.tiers)}
    with sessions() as session, session.begin():
        twins = [new_member(session), new_member(session)]
        for day, cents, refund in orders:
            total = Decimal(cents) / 100
            refunded = (total * refund / 100).quantize(Decimal("0.01"))
            for _member, buyer in twins:
                order(
                    session,
                    buyer,
                    total,
                    at=T0 + day * DAY,
                    refunded=refunded,
                    status="partially_refunded" if refunded else "paid",
                )
        for day in sorted(reviews):
            at = T0 + day * DAY
            before = tiers.current_tiers(session)
            tiers.evaluate(session, rules, at=at, review=True)
            after = tiers.current_tiers(session)
            amounts = tiers.qualifying_amounts(session, rules, at)
            for member, _buyer in twins:
                reached = tiers.tier_for(amounts.get(member, Decimal(0)), rules.tiers).name
                if member in before:
                    assert rank[after[member]] >= rank[before[member]] - 1
                    assert rank[after[member]] >= min(rank[reached], rank[before[member]])
                if rank[reached] >= rank.get(before.get(member, "regular"), 0):
                    assert after[member] == reached
        first, second = (
            [(h["tier"], h["reason"], h["qualifying_amount"], h["at"]) for h in tiers.history(session, m)]
            for m, _ in twins
        )
        assert first == second
