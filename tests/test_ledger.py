"""The points ledger on SQLite and PostgreSQL: append-only entries, lots with expiry and pending
state, refunds and debt, cancelled redemptions, cross-store points, merges and splits, the nightly
jobs, adjustments and the CLI, reconciliation, and the migration of a skeleton-era ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import column, create_engine, func, insert, select, text, update
from sqlalchemy import table as sa_table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from hub import ledger
from hub.db import engine_for, upgrade
from hub.tables import (
    AuditLog,
    GoldenMember,
    LedgerEntryRow,
    MemberLink,
    PointsAccount,
    PointsAllocation,
    PointsLot,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
)
from schemas import EntryKind, LedgerEntry, ProgrammeConfig
from schemas.errors import LedgerError

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
DAY = timedelta(days=1)


@pytest.fixture
def sessions(database_url):
    return sessionmaker(engine_for(database_url), expire_on_commit=False)


def entry(member, points, document, *, kind=EntryKind.earn, at=T0, store="SH01", source="pos", **extra):
    return LedgerEntry(
        member_id=member,
        kind=kind,
        points=points,
        store_code=store,
        source=source,
        document=document,
        occurred_at=at,
        **extra,
    )


def earn(session, member, points, document, *, now=None, **extra):
    return ledger.post(session, entry(member, points, document, **extra), now=now or extra.get("at", T0))


def open_lots(session, member):
    return [(lot.remaining, lot.expires_at, lot.pending, lot.store_code) for lot in ledger.lots(session, member)]


def state(session):
    """Everything the ledger holds, to prove a refused posting changed nothing."""
    return (
        session.scalar(select(func.count()).select_from(LedgerEntryRow)),
        session.scalar(select(func.count()).select_from(PointsAllocation)),
        sorted(tuple(r) for r in session.execute(select(PointsLot.id, PointsLot.remaining))),
        sorted(
            tuple(r)
            for r in session.execute(select(PointsAccount.member_id, PointsAccount.balance, PointsAccount.pending))
        ),
    )


# ------------------------------------------------------------------------------------------- seeding orders
def seed_member(session, member_id, source_id, *, source="pos", seq=None):
    record = SourceRecordRow(source=source, stream="members", external_id=source_id, payload={}, content_hash="x")
    session.add(record)
    session.flush()
    staged = StagedMember(source_record_id=record.id, source=source, source_id=source_id, channel="pos")
    session.add(staged)
    if session.scalar(select(GoldenMember).where(GoldenMember.member_id == member_id)) is None:
        session.add(GoldenMember(seq=seq or int(member_id[2:]), member_id=member_id, status="active"))
    session.flush()
    session.add(MemberLink(staged_member_id=staged.id, member_id=member_id, rule="new", evidence={}))
    session.flush()
    return staged.id


def seed_order(
    session,
    order_id,
    member_source_id,
    total,
    *,
    source="pos",
    status="paid",
    refunded="0",
    store="SH01",
    at=T0,
    lines=(),
    updated=None,
):
    row = session.scalar(select(StagedOrder).where(StagedOrder.source == source, StagedOrder.source_id == order_id))
    if row is None:
        record = SourceRecordRow(source=source, stream="orders", external_id=order_id, payload={}, content_hash="x")
        session.add(record)
        session.flush()
        row = StagedOrder(source_record_id=record.id, source=source, source_id=order_id, currency="CNY", channel="pos")
        session.add(row)
    row.member_source_id, row.store_code, row.status = member_source_id, store, status
    row.total_amount, row.refunded_amount, row.ordered_at = Decimal(total), Decimal(refunded), at
    row.updated_at = updated or at
    row.lines = {
        "items": [{"sku": sku, "quantity": q, "unit_price": {"amount": p, "currency": "CNY"}} for sku, q, p in lines]
    }
    session.flush()


# ------------------------------------------------------------------------------------------- append-only
APPEND_ONLY = [
    "UPDATE ledger_entries SET points = points + 1",
    "DELETE FROM ledger_entries",
    "UPDATE points_allocations SET points = 0",
    "DELETE FROM points_allocations",
]


def test_the_database_refuses_to_change_or_delete_ledger_rows(database_url, sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1")
        ledger.redeem(session, "MH1", 30, source="pos", document="r1", at=T0)
    for statement in APPEND_ONLY:
        with pytest.raises(DBAPIError, match="append-only"), engine_for(database_url).begin() as connection:
            connection.execute(text(statement))
    with sessions() as session:
        assert ledger.balance(session, "MH1") == 70 and ledger.reconcile(session) == []


def test_truncate_is_refused_on_postgresql(postgres_url):
    upgrade(postgres_url)
    with pytest.raises(DBAPIError, match="append-only"), engine_for(postgres_url).begin() as connection:
        connection.execute(text("TRUNCATE ledger_entries CASCADE"))


# ------------------------------------------------------------------------------------------- rule 1: idempotency
CHANGED_REPLAYS = [
    {"points": 11},
    {"member_id": "MH2"},
    {"store_code": "BJ01"},
    {"occurred_at": T0 + timedelta(seconds=1)},
    {"expires_at": T0 + 30 * DAY},
    {"available_at": T0 + 7 * DAY},
]


def test_a_document_posts_once_and_a_changed_replay_is_refused_without_effect(sessions):
    original = entry("MH1", 10, "order:1")
    same_instant_elsewhere = original.model_copy(update={"occurred_at": T0.astimezone(timezone(timedelta(hours=8)))})
    with sessions() as session, session.begin():
        assert ledger.post(session, original, now=T0) is True
        assert ledger.post(session, original, now=T0) is False
        assert ledger.post(session, same_instant_elsewhere, now=T0) is False
    with sessions() as session:
        before = state(session)
    for change in CHANGED_REPLAYS:
        with sessions() as session, session.begin(), pytest.raises(LedgerError, match="different content"):
            ledger.post(session, LedgerEntry.model_validate({**original.model_dump(), **change}), now=T0)
        with sessions() as session:
            assert state(session) == before, change
    with sessions() as session:
        assert ledger.balance(session, "MH1") == 10 and ledger.balance(session, "MH2") == 0


# ------------------------------------------------------------------------------------------- lots and expiry
def test_redemptions_draw_on_the_soonest_expiring_lots_first(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:never")
        earn(session, "MH1", 50, "order:late", expires_at=T0 + 300 * DAY)
        earn(session, "MH1", 30, "order:soon", expires_at=T0 + 10 * DAY)
        earn(session, "MH1", 20, "order:soon-too", expires_at=T0 + 10 * DAY, at=T0 + timedelta(hours=1))
        ledger.redeem(session, "MH1", 60, source="pos", document="r1", at=T0 + DAY)
    with sessions() as session:
        assert open_lots(session, "MH1") == [
            (40, T0 + 300 * DAY, False, "SH01"),
            (100, None, False, "SH01"),
        ]
        assert ledger.balance(session, "MH1") == 140


def test_a_redemption_beyond_the_balance_is_refused_and_changes_nothing(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1")
    with sessions() as session:
        before = state(session)
    with sessions() as session, session.begin(), pytest.raises(ledger.InsufficientPoints, match="has 100 spendable"):
        ledger.redeem(session, "MH1", 101, source="pos", document="r1", at=T0)
    with sessions() as session:
        assert state(session) == before


def test_the_expiry_job_lapses_each_lot_once(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1", expires_at=T0 + 10 * DAY)
        earn(session, "MH1", 40, "order:2", expires_at=T0 + 20 * DAY, store="BJ01")
        ledger.redeem(session, "MH1", 30, source="pos", document="r1", at=T0)
    for now, expired in (
        (T0 + 9 * DAY, 0),
        (T0 + 10 * DAY, 70),
        (T0 + 10 * DAY, 0),
        (T0 + 30 * DAY, 40),
        (T0 + 99 * DAY, 0),
    ):
        with sessions() as session, session.begin():
            assert ledger.expire(session, now).points == expired
    with sessions() as session:
        assert ledger.balance(session, "MH1") == 0
        kinds = [(e["kind"], e["points"], e["store"]) for e in ledger.history(session, "MH1")]
        assert kinds[-2:] == [("expire", -70, "SH01"), ("expire", -40, "BJ01")]
        assert ledger.reconcile(session) == []


def test_pending_points_count_for_nothing_until_released(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1", available_at=T0 + 7 * DAY, now=T0)
        earn(session, "MH1", 10, "order:2")
        assert (ledger.balance(session, "MH1"), ledger.pending_balance(session, "MH1")) == (10, 100)
        with pytest.raises(ledger.InsufficientPoints):
            ledger.redeem(session, "MH1", 11, source="pos", document="r1", at=T0)
    with sessions() as session, session.begin():
        assert ledger.release_pending(session, T0 + 7 * DAY - timedelta(seconds=1)).points == 0
        assert ledger.release_pending(session, T0 + 7 * DAY).points == 100
        assert ledger.release_pending(session, T0 + 8 * DAY).points == 0
        assert (ledger.balance(session, "MH1"), ledger.pending_balance(session, "MH1")) == (110, 0)
        assert ledger.redeem(session, "MH1", 110, source="pos", document="r1", at=T0 + 8 * DAY)
        assert ledger.reconcile(session) == []


# ------------------------------------------------------------------------------------------- rule 2: refunds
REFUNDS = [  # (spent before the refunds, refund states in turn, reversals posted, balance, debt)
    (0, [("40.50", "partially_refunded")], [40], 59, 0),
    (0, [("40.50", "partially_refunded"), ("40.50", "partially_refunded"), ("99.99", "refunded")], [40, 59], 0, 0),
    (0, [("30", "cancelled")], [99], 0, 0),
    # the points were spent: what the refund takes back becomes a debt, never dropped
    (90, [("99.99", "refunded")], [99], -90, 90),
    (90, [("50", "partially_refunded"), ("99.99", "refunded")], [49, 50], -90, 90),
    # other points pay first: 50 more came from another order, spent 90 of 149
    (-50, [("99.99", "refunded")], [99], -40, 40),
]


def test_refunds_reverse_in_proportion_and_a_shortfall_becomes_debt(sessions):
    for n, (spent, refunds, reversed_, balance, debt) in enumerate(REFUNDS, start=1):
        member, buyer, first = f"MH{n:08d}", f"m{n}", f"{n}-1"
        with sessions() as session, session.begin():
            seed_member(session, member, buyer)
            seed_order(session, first, buyer, "99.99")
            if spent < 0:
                seed_order(session, f"{n}-2", buyer, "50", at=T0 + DAY)
            ledger.post_orders(session, ProgrammeConfig(), now=T0)
            if spent:
                ledger.redeem(session, member, 90, source="pos", document=f"r{n}", at=T0 + DAY)
        for i, (refunded, status) in enumerate(refunds):
            with sessions() as session, session.begin():
                seed_order(session, first, buyer, "99.99", refunded=refunded, status=status, updated=T0 + (2 + i) * DAY)
                ledger.post_orders(session, ProgrammeConfig(), now=T0)
                assert ledger.post_orders(session, ProgrammeConfig(), now=T0).entries == 0  # a re-run changes nothing
        with sessions() as session:
            rows = session.scalars(
                select(LedgerEntryRow)
                .where(LedgerEntryRow.kind == "reverse", LedgerEntryRow.member_id == member)
                .order_by(LedgerEntryRow.id)
            )
            assert [-(r.points + r.pending_points) for r in rows] == reversed_, n
            assert sum(reversed_) <= 99
            statement = ledger.statement(session, member)
            assert (statement["balance"], statement["debt"]) == (balance, debt), n
            assert ledger.reconcile(session) == []


def test_debt_is_paid_first_by_the_next_points(sessions):
    with sessions() as session, session.begin():
        seed_member(session, "MH00000001", "m1")
        seed_order(session, "1", "m1", "100")
        ledger.post_orders(session, ProgrammeConfig(), now=T0)
        ledger.redeem(session, "MH00000001", 100, source="pos", document="r1", at=T0)
        seed_order(session, "1", "m1", "100", status="refunded", refunded="100", updated=T0 + DAY)
        seed_order(session, "2", "m1", "30", at=T0 + 2 * DAY, store="BJ01")
        counts = ledger.post_orders(session, ProgrammeConfig(), now=T0 + 2 * DAY)
        assert (counts.reversed, counts.debt) == (100, 70)
    with sessions() as session:
        assert ledger.statement(session, "MH00000001")["debt"] == 70
        assert open_lots(session, "MH00000001") == [(-70, None, False, "SH01")]
    with sessions() as session, session.begin():
        seed_order(session, "3", "m1", "100", at=T0 + 3 * DAY)
        ledger.post_orders(session, ProgrammeConfig(), now=T0 + 3 * DAY)
    with sessions() as session:
        assert ledger.balance(session, "MH00000001") == 30
        assert open_lots(session, "MH00000001") == [(30, None, False, "SH01")]
        assert ledger.reconcile(session) == []


def test_a_refund_after_expiry_takes_back_only_what_did_not_lapse(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1", expires_at=T0 + 10 * DAY)
        ledger.redeem(session, "MH1", 60, source="pos", document="r1", at=T0)
        ledger.expire(session, T0 + 10 * DAY)  # 40 lapse unspent
        earn(session, "MH1", 500, "order:2", at=T0 + 11 * DAY)
        taken, debt = ledger.refund(
            session,
            "MH1",
            source="pos",
            order_document="order:1",
            target=100,
            document="order:1/refund",
            at=T0 + 12 * DAY,
        )
        assert (taken, debt) == (
            60,
            0,
        )  # the 60 spent come back from the other lot; the 40 lapsed are not charged again
        assert ledger.balance(session, "MH1") == 440


# ------------------------------------------------------------------------------------------- rule 3: cancelling
def test_cancelling_a_redemption_restores_the_original_lots_and_expiry(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 30, "order:1", expires_at=T0 + 10 * DAY)
        earn(session, "MH1", 50, "order:2", expires_at=T0 + 40 * DAY, store="BJ01")
        earn(session, "MH1", 70, "order:3")
        before = open_lots(session, "MH1")
        ledger.redeem(session, "MH1", 100, source="pos", document="r1", store_code="GZ01", at=T0 + DAY)
        assert open_lots(session, "MH1") == [(50, None, False, "SH01")]
        assert ledger.cancel_redemption(session, source="pos", document="r1", at=T0 + 2 * DAY)
        assert open_lots(session, "MH1") == before
        assert not ledger.cancel_redemption(session, source="pos", document="r1", at=T0 + 2 * DAY)  # once
        assert ledger.balance(session, "MH1") == 150 and ledger.reconcile(session) == []


def test_points_given_back_after_their_expiry_lapse_at_the_next_run(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 30, "order:1", expires_at=T0 + 10 * DAY)
        ledger.redeem(session, "MH1", 30, source="pos", document="r1", at=T0)
        ledger.cancel_redemption(session, source="pos", document="r1", at=T0 + 20 * DAY)
        assert ledger.expire(session, T0 + 20 * DAY).points == 30
        assert ledger.balance(session, "MH1") == 0 and ledger.reconcile(session) == []


# ------------------------------------------------------------------------------------------- rule 5: cross-store
def test_points_earned_at_one_store_are_spent_at_another_and_stores_add_up(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1", store="SH01", expires_at=T0 + 5 * DAY)
        earn(session, "MH1", 80, "order:2", store="BJ01", expires_at=T0 + 50 * DAY)
        earn(session, "MH2", 60, "order:3", store="GZ01", available_at=T0 + 7 * DAY)
        ledger.redeem(session, "MH1", 130, source="pos", document="r1", store_code="ONLINE", at=T0)
        per_store = ledger.liabilities(session)
        assert {k: (v.available, v.pending) for k, v in per_store.items()} == {
            "SH01": (0, 0),
            "BJ01": (50, 0),
            "GZ01": (0, 60),
        }
        total = sum(v.total for v in per_store.values())
        assert total == sum(ledger.balances(session).values()) + ledger.pending_balance(session, "MH2") == 110
        assert ledger.cross_store_redemptions(session) == {("SH01", "ONLINE"): 100, ("BJ01", "ONLINE"): 30}
        ledger.cancel_redemption(session, source="pos", document="r1", at=T0)
        assert ledger.cross_store_redemptions(session) == {}


# ------------------------------------------------------------------------------------------- rule 6: merge and split
def test_merging_moves_lots_with_expiry_and_pending_and_a_split_restores_both_sides(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1", expires_at=T0 + 30 * DAY)
        earn(session, "MH2", 40, "order:2", store="BJ01", expires_at=T0 + 10 * DAY)
        earn(session, "MH2", 25, "order:3", store="GZ01", available_at=T0 + 7 * DAY)
        a, b = open_lots(session, "MH1"), open_lots(session, "MH2")
        assert ledger.transfer_balance(session, "MH2", "MH1", actor="steward:li", at=T0 + DAY) == 40
        assert sorted(open_lots(session, "MH1"), key=str) == sorted(a + b, key=str)
        assert (ledger.balance(session, "MH1"), ledger.pending_balance(session, "MH1")) == (140, 25)
        assert ledger.balance(session, "MH2") == 0 and open_lots(session, "MH2") == []
        assert ledger.split_balance(session, "MH1", "MH3", absorbed="MH2", actor="steward:li", at=T0 + 2 * DAY) == 40
        assert open_lots(session, "MH1") == a and open_lots(session, "MH3") == b
        audit = [(r.action, r.actor) for r in session.scalars(select(AuditLog).order_by(AuditLog.id))]
        assert audit == [("points.transfer", "steward:li"), ("points.split", "steward:li")]
        assert ledger.reconcile(session) == []


def test_a_merge_settles_debt_and_the_split_gives_it_back(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1")
        earn(session, "MH2", 50, "order:2")
        ledger.redeem(session, "MH2", 50, source="pos", document="r1", at=T0)
        ledger.refund(session, "MH2", source="pos", order_document="order:2", target=50, document="order:2/r", at=T0)
        a, b = open_lots(session, "MH1"), open_lots(session, "MH2")
        assert b == [(-50, None, False, "SH01")]
        ledger.transfer_balance(session, "MH2", "MH1", at=T0 + DAY)
        assert ledger.statement(session, "MH1")["debt"] == 0 and ledger.balance(session, "MH1") == 50
        ledger.split_balance(session, "MH1", "MH3", absorbed="MH2", at=T0 + 2 * DAY)
        assert open_lots(session, "MH1") == a and open_lots(session, "MH3") == b
        assert ledger.reconcile(session) == []


def test_a_split_of_source_records_takes_the_points_of_their_orders(sessions):
    with sessions() as session, session.begin():
        seed_member(session, "MH00000001", "a1")
        leaving = seed_member(session, "MH00000002", "b1")
        seed_order(session, "1", "a1", "100")
        seed_order(session, "2", "b1", "40", store="BJ01", at=T0 + DAY)
        ledger.post_orders(session, ProgrammeConfig(expiry={"policy": "end_of_year"}), now=T0)
        ledger.transfer_balance(session, "MH00000002", "MH00000001", at=T0 + 2 * DAY)
        moved = ledger.split_balance(session, "MH00000001", "MH00000003", staged_member_ids=[leaving], at=T0 + 3 * DAY)
        assert moved == 40
        assert open_lots(session, "MH00000003") == [(40, datetime(2025, 12, 31, 16, tzinfo=UTC), False, "BJ01")]
        assert ledger.balance(session, "MH00000001") == 100 and ledger.reconcile(session) == []


# ------------------------------------------------------------------------------------------- earning from orders
def test_orders_earn_under_the_programmes_rules_with_pending_and_expiry(sessions):
    programme = ProgrammeConfig.model_validate(
        {
            "pending_days": 7,
            "expiry": {"policy": "end_of_year", "years": 1},
            "earn_rules": [
                {"type": "sku_multiplier", "skus": ["TEA"], "factor": 3},
                {"type": "promotion", "start": "2025-03-01", "end": "2025-03-01", "factor": 2},
            ],
        }
    )
    with sessions() as session, session.begin():
        seed_member(session, "MH00000001", "m1")
        seed_order(session, "1", "m1", "100", lines=[("TEA", 1, "50"), ("CUP", 1, "50")])  # ×2 lines, ×2 promo
        seed_order(session, "2", "m1", "10", at=T0 - 30 * DAY)  # its return window is over
        seed_order(session, "3", "ghost", "10")
        counts = ledger.post_orders(session, programme, now=T0 + DAY)
        assert (counts.entries, counts.points, counts.pending, counts.unattributed_orders) == (2, 410, 400, 1)
        assert (ledger.balance(session, "MH00000001"), ledger.pending_balance(session, "MH00000001")) == (10, 400)
        earned = session.scalar(select(LedgerEntryRow).where(LedgerEntryRow.document == "order:1"))
        assert earned.reason == "1/unit; ×2 lines; ×2 promotion 2025-03-01"
        assert earned.expires_at == datetime(2026, 12, 31, 16, tzinfo=UTC)
        assert ledger.release_pending(session, T0 + 7 * DAY).points == 400
        assert ledger.balance(session, "MH00000001") == 410 and ledger.reconcile(session) == []


# ------------------------------------------------------------------------------------------- adjustments, CLI
def test_adjustments_are_audited_and_cannot_overdraw(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1")
        assert ledger.adjust(session, "MH1", -30, reason="wrong till", actor="li", document="adj-1", at=T0) == 70
        assert ledger.adjust(session, "MH1", -30, reason="wrong till", actor="li", document="adj-1", at=T0) == 70
        with pytest.raises(ledger.InsufficientPoints):
            ledger.adjust(session, "MH1", -71, reason="too much", actor="li", at=T0)
        with pytest.raises(LedgerError):
            ledger.adjust(session, "MH1", 5, reason=" ", actor="li", at=T0)
        programme = ProgrammeConfig(expiry={"policy": "days", "days": 30})
        ledger.adjust(session, "MH1", 5, reason="goodwill", actor="li", programme=programme, at=T0)
        assert [lot[0:2] for lot in open_lots(session, "MH1")] == [
            (5, datetime(2025, 3, 31, 16, tzinfo=UTC)),
            (70, None),
        ]
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "points.adjust").order_by(AuditLog.id)).all()
        assert [(a.actor, a.before, a.after["balance"], a.after["reason"]) for a in audit] == [
            ("li", {"balance": 100}, 70, "wrong till"),
            ("li", {"balance": 70}, 75, "goodwill"),
        ]


def test_the_points_commands(database_url, sessions, tmp_path, monkeypatch):
    from hub.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    with sessions() as session, session.begin():
        seed_member(session, "MH00000001", "m1")
        earn(session, "MH00000001", 100, "order:1", expires_at=T0 + 30 * DAY)
    runner = CliRunner()
    result = runner.invoke(app, ["points", "adjust", "MH00000001", "-30", "--reason", "wrong till", "--actor", "li"])
    assert result.exit_code == 0, result.output
    assert "100 → 70" in result.output
    result = runner.invoke(app, ["points", "show", "MH00000001", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["balance"], shown["pending"], shown["debt"]) == (70, 0, 0)
    assert [(lot["remaining"], lot["expires_at"]) for lot in shown["lots"]] == [(70, "2025-03-31 02:00:00+00:00")]
    assert [(e["kind"], e["points"], e["actor"]) for e in shown["history"]] == [
        ("earn", 100, "system"),
        ("adjust", -30, "li"),
    ]
    assert runner.invoke(app, ["points", "show", "MH00000001"]).exit_code == 0
    assert runner.invoke(app, ["points", "reconcile"]).exit_code == 0
    result = runner.invoke(app, ["points", "liabilities", "--json"])
    assert json.loads(result.output)["total"] == {"available": 70, "pending": 0, "total": 70}
    result = runner.invoke(app, ["points", "expire", "--now", "2025-04-01T00:00:00", "--json"])
    assert json.loads(result.output)["points"] == 70
    result = runner.invoke(app, ["points", "adjust", "MH00000001", "-1", "--reason", "x"])
    assert result.exit_code != 0


# ------------------------------------------------------------------------------------------- reconciliation
def test_reconciliation_finds_a_cache_that_drifted(sessions):
    with sessions() as session, session.begin():
        earn(session, "MH1", 100, "order:1")
        assert ledger.reconcile(session) == []
    tampering = [
        (update(PointsAccount).values(balance=PointsAccount.balance + 1), "account balance"),
        (update(PointsLot).values(remaining=PointsLot.remaining - 1), "lot remaining"),
        (update(PointsLot).values(origin_entry_id=PointsLot.origin_entry_id + 1000), "lot references"),
    ]
    for tamper, check in tampering:
        with sessions() as session:
            session.execute(tamper)
            assert check in {d.check for d in ledger.reconcile(session)}
            session.rollback()


# ------------------------------------------------------------------------------------------- migration
def test_a_skeleton_ledger_is_migrated_into_lots_that_reconcile(database_url):
    url = database_url
    if url.startswith("sqlite"):
        url = url.replace("hub.db", "legacy.db")
    else:  # a schema of its own, at revision 0001
        url = url.replace("search_path%3D", "search_path%3Dlegacy_")
        schema = url.rsplit("%3D", 1)[1]
        admin = create_engine(url.split("?")[0], isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        upgrade(url, "0001")
        rows = [
            ("MH1", "earn", 100, "pos", "order:1"),
            ("MH1", "reverse", -40, "pos", "order:1/refund:40:partially_refunded"),
            ("MH2", "earn", 50, "pos", "order:2"),
            ("MH2", "transfer", -50, "hub", "merge:MH2->MH1:out"),
            ("MH1", "transfer", 50, "hub", "merge:MH2->MH1:in"),
            ("MH3", "earn", 10, "pos", "order:3"),
            ("MH3", "reverse", -25, "pos", "order:3/refund:x"),
        ]
        table = sa_table(  # the 0001 shape
            "ledger_entries",
            *(column(c) for c in ("member_id", "kind", "points", "store_code", "source", "document", "payload_hash")),
            *(column(c) for c in ("actor", "occurred_at", "recorded_at")),
        )
        with engine_for(url).begin() as connection:
            for i, (member, kind, points, source, document) in enumerate(rows):
                connection.execute(
                    insert(table).values(
                        member_id=member,
                        kind=kind,
                        points=points,
                        store_code="SH01",
                        source=source,
                        document=document,
                        payload_hash="old",
                        actor="system",
                        occurred_at=_naive_if_sqlite(url, T0 + timedelta(minutes=i)),
                        recorded_at=_naive_if_sqlite(url, T0),
                    )
                )
        upgrade(url)
        with sessionmaker(engine_for(url))() as session:
            assert ledger.reconcile(session) == []
            assert ledger.balances(session) == {"MH1": 110, "MH2": 0, "MH3": -15}
            assert ledger.statement(session, "MH3")["debt"] == 15
            assert [lot[0] for lot in open_lots(session, "MH1")] == [60, 50]
            refund = session.scalar(select(LedgerEntryRow).where(LedgerEntryRow.kind == "reverse"))
            assert refund.ref == "order:1"
        with sessionmaker(engine_for(url))() as session, session.begin():  # replays are recognised
            assert ledger.post(session, entry("MH1", 100, "order:1", at=T0), now=T0) is False
    finally:
        engine_for(url).dispose()
        if not url.startswith("sqlite"):
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def _naive_if_sqlite(url, value):
    return value.replace(tzinfo=None) if url.startswith("sqlite") else value
