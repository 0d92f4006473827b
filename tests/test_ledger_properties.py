"""The ledger's invariants as properties (hypothesis), on SQLite and PostgreSQL.

Every example works on members of its own in one migrated database per backend, and ends with the
whole ledger reconciling: caches, lots and allocations add up to the entries."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from hub import ledger
from hub.db import engine_for
from hub.tables import PointsAllocation, PointsLot
from schemas import EntryKind, LedgerEntry
from schemas.errors import LedgerError

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
STORES = ("SH01", "BJ01", "GZ01", "ONLINE")
PROPERTY = settings(  # MEMBERHUB_PROPERTY_EXAMPLES=500 for a deeper run than the default suite's
    max_examples=int(os.environ.get("MEMBERHUB_PROPERTY_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)


@pytest.fixture
def sessions(database_url):
    return sessionmaker(engine_for(database_url), expire_on_commit=False)


def fresh(prefix: str = "P") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def earning(member, points, document, *, at=T0, store="SH01", expires=None, available=None):
    return LedgerEntry(
        member_id=member,
        kind=EntryKind.earn,
        points=points,
        store_code=store,
        source="pos",
        document=document,
        occurred_at=at,
        expires_at=expires,
        available_at=available,
    )


FAR = datetime.max.replace(tzinfo=UTC)


def _terms(lot):
    return (lot[0], lot[1] or FAR, lot[2], lot[3])


def lots_of(session, member):
    """(open lots as comparable terms, balance, pending)."""
    lots = [(lot.remaining, lot.expires_at, lot.pending, lot.store_code) for lot in ledger.lots(session, member)]
    return sorted(lots, key=_terms), ledger.balance(session, member), ledger.pending_balance(session, member)


def assert_consistent(session, *members):
    for member in members:
        lots = ledger.lots(session, member)
        spendable = [lot.remaining for lot in lots if not lot.pending]
        assert sum(spendable) == ledger.balance(session, member)
        assert sum(lot.remaining for lot in lots if lot.pending) == ledger.pending_balance(session, member)
        assert not (any(r < 0 for r in spendable) and any(r > 0 for r in spendable)), "debt next to spendable points"
    assert ledger.reconcile(session, members) == []


lot_terms = st.tuples(
    st.integers(1, 300),  # points
    st.one_of(st.none(), st.integers(1, 90)),  # expires after N days
    st.booleans(),  # pending
    st.sampled_from(STORES),
)


# -------------------------------------------------------------------------------------------- rule 1
entries = st.lists(
    st.tuples(
        st.integers(1, 500), st.sampled_from(STORES), st.integers(0, 23), st.one_of(st.none(), st.integers(1, 60))
    ),
    min_size=1,
    max_size=6,
)
changes = st.sampled_from(["points", "store_code", "occurred_at", "expires_at", "member_id", "available_at"])


@PROPERTY
@given(entries=entries, change=changes, which=st.integers(0, 5))
def test_replays_change_nothing_and_changed_replays_are_refused(sessions, entries, change, which):
    member = fresh()
    posted = [
        earning(
            member,
            points,
            f"order:{member}:{i}",
            store=store,
            at=T0 + timedelta(hours=hour),
            expires=T0 + days * DAY if days else None,
        )
        for i, (points, store, hour, days) in enumerate(entries)
    ]
    with sessions() as session, session.begin():
        assert all(ledger.post(session, e, now=T0) for e in posted)
        assert not any(ledger.post(session, e, now=T0) for e in posted)
        before = lots_of(session, member)
    original = posted[which % len(posted)]
    altered = {
        "points": original.points + 1,
        "store_code": "XX99",
        "occurred_at": original.occurred_at + timedelta(microseconds=1),
        "expires_at": (original.expires_at or T0 + 365 * DAY) + DAY,
        "member_id": fresh(),
        "available_at": T0 + DAY,
    }[change]
    with sessions() as session, session.begin(), pytest.raises(LedgerError, match="different content"):
        ledger.post(session, original.model_copy(update={change: altered}), now=T0)
    with sessions() as session:
        assert lots_of(session, member) == before
        assert_consistent(session, member)


# -------------------------------------------------------------------------------------------- all rules at once
operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), lot_terms),
        st.tuples(st.just("redeem"), st.integers(1, 400), st.sampled_from(STORES)),
        st.tuples(st.just("refund"), st.integers(0, 20), st.integers(0, 100)),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("wait"), st.integers(0, 40)),
        st.tuples(st.just("adjust"), st.integers(-100, 100).filter(bool)),
    ),
    min_size=1,
    max_size=18,
)


@PROPERTY
@given(ops=operations)
def test_any_sequence_of_movements_keeps_every_invariant(sessions, ops):
    member = fresh()
    now = T0
    earned: list[tuple[str, int]] = []  # (document, points)
    targets: dict[str, int] = {}
    redemptions: list[str] = []
    with sessions() as session, session.begin():
        for i, op in enumerate(ops):
            balance = ledger.balance(session, member)
            if op[0] == "earn":
                points, days, pending, store = op[1]
                document = f"order:{member}:{i}"
                ledger.post(
                    session,
                    earning(
                        member,
                        points,
                        document,
                        at=now,
                        store=store,
                        expires=now + days * DAY if days else None,
                        available=now + 3 * DAY if pending else None,
                    ),
                    now=now,
                )
                earned.append((document, points))
            elif op[0] == "redeem":
                document = f"redeem:{member}:{i}"
                if op[1] > balance:
                    with pytest.raises(ledger.InsufficientPoints):
                        ledger.redeem(session, member, op[1], source="pos", document=document, store_code=op[2], at=now)
                else:
                    assert ledger.redeem(
                        session, member, op[1], source="pos", document=document, store_code=op[2], at=now
                    )
                    redemptions.append(document)
                    assert ledger.balance(session, member) == balance - op[1] >= 0
                    assert_soonest_first(session, member, document)
            elif op[0] == "refund" and earned:
                document, points = earned[op[1] % len(earned)]
                target = max(targets.get(document, 0), points * op[2] // 100)  # refunds only grow
                targets[document] = target
                ledger.refund(
                    session,
                    member,
                    source="pos",
                    order_document=document,
                    target=target,
                    document=f"{document}/refund:{target}",
                    at=now,
                )
            elif op[0] == "cancel" and redemptions:
                document = redemptions.pop(op[1] % len(redemptions))
                ledger.cancel_redemption(session, source="pos", document=document, at=now)
            elif op[0] == "wait":
                now += op[1] * DAY
                ledger.release_pending(session, now)
                ledger.expire(session, now)
                assert ledger.expire(session, now).points == 0  # idempotent
            elif op[0] == "adjust":
                if -op[1] > balance:
                    with pytest.raises(ledger.InsufficientPoints):
                        ledger.adjust(session, member, op[1], reason="test", actor="t", at=now)
                else:
                    ledger.adjust(session, member, op[1], reason="test", actor="t", at=now)
            assert_consistent(session, member)
        for document, points in earned:  # never more taken back than earned
            reversed_ = session.scalars(
                select(ledger.E.c.points + ledger.E.c.pending_points).where(
                    ledger.E.c.ref == document, ledger.E.c.kind == "reverse"
                )
            ).all()
            assert -sum(reversed_) <= points


def assert_soonest_first(session, member, document):
    """No lot left untouched by a redemption expires before one it drew on."""
    redemption = ledger._find(session, "pos", document, "redeem")
    drawn = set(session.scalars(select(PointsAllocation.lot_id).where(PointsAllocation.entry_id == redemption.id)))
    far = FAR
    latest_drawn = max(
        (lot.expires_at or far for lot in session.scalars(select(PointsLot).where(PointsLot.id.in_(drawn)))),
        default=None,
    )
    for lot in ledger.lots(session, member):
        if lot.id not in drawn and lot.remaining > 0 and not lot.pending and latest_drawn is not None:
            assert (lot.expires_at or far) >= latest_drawn


# -------------------------------------------------------------------------------------------- rule 2
@PROPERTY
@given(
    cents=st.integers(1, 10_000_00),
    spent_share=st.integers(0, 100),
    refunds=st.lists(st.integers(0, 100), min_size=1, max_size=4),
    cancelled=st.booleans(),
)
def test_refunds_are_proportional_capped_and_never_drop_a_shortfall(sessions, cents, spent_share, refunds, cancelled):
    member = fresh()
    total = Decimal(cents) / 100
    points = ledger.points_for(total, 1)
    spent = points * spent_share // 100
    refunded = Decimal(0)
    with sessions() as session, session.begin():
        ledger.post(session, earning(member, points, f"order:{member}"), now=T0)
        if spent:
            ledger.redeem(session, member, spent, source="pos", document=f"r:{member}", at=T0)
        for i, share in enumerate(sorted(refunds)):
            refunded = max(refunded, (total * share / 100).quantize(Decimal("0.01")))
            status = "cancelled" if cancelled and i == len(refunds) - 1 else "partially_refunded"
            target = ledger.refund_target(points, total, refunded, status)
            ledger.refund(
                session,
                member,
                source="pos",
                order_document=f"order:{member}",
                target=target,
                document=f"order:{member}/refund:{refunded}:{status}",
                at=T0 + DAY,
            )
        taken = -sum(e["points"] + e["pending"] for e in ledger.history(session, member) if e["kind"] == "reverse")
        assert taken == target <= points
        assert ledger.balance(session, member) == points - spent - taken  # a shortfall is a negative balance
        assert ledger.statement(session, member)["debt"] == max(0, taken - (points - spent))
        assert_consistent(session, member)


# -------------------------------------------------------------------------------------------- rule 3
@PROPERTY
@given(lots=st.lists(lot_terms, min_size=1, max_size=6), share=st.integers(1, 100))
def test_cancelling_a_redemption_gives_every_lot_back_its_points(sessions, lots, share):
    member = fresh()
    with sessions() as session, session.begin():
        for i, (points, days, _pending, store) in enumerate(lots):
            ledger.post(
                session,
                earning(member, points, f"o:{member}:{i}", store=store, expires=T0 + days * DAY if days else None),
                now=T0,
            )
        before = lots_of(session, member)
        amount = max(1, before[1] * share // 100)
        ledger.redeem(session, member, amount, source="pos", document=f"r:{member}", at=T0)
        assert ledger.balance(session, member) == before[1] - amount
        ledger.cancel_redemption(session, source="pos", document=f"r:{member}", at=T0 + DAY)
        assert lots_of(session, member) == before
        assert_consistent(session, member)


# -------------------------------------------------------------------------------------------- rule 5
@PROPERTY
@given(
    earns=st.lists(st.tuples(st.sampled_from(STORES), st.integers(1, 200)), min_size=1, max_size=8),
    spends=st.lists(st.tuples(st.sampled_from(STORES), st.integers(1, 200)), max_size=6),
)
def test_points_spend_across_stores_and_store_liabilities_add_up(sessions, earns, spends):
    member = fresh()
    with sessions() as session, session.begin():
        before = ledger.liabilities(session)
        matrix_before = ledger.cross_store_redemptions(session)
        for i, (store, points) in enumerate(earns):
            ledger.post(session, earning(member, points, f"o:{member}:{i}", store=store), now=T0)
        spent = 0
        for i, (store, points) in enumerate(spends):
            if points <= ledger.balance(session, member):
                ledger.redeem(
                    session, member, points, source="pos", document=f"r:{member}:{i}", store_code=store, at=T0
                )
                spent += points
        after = ledger.liabilities(session)
        change = {s: after[s].total - (before[s].total if s in before else 0) for s in after}
        assert sum(change.values()) == ledger.balance(session, member) == sum(p for _s, p in earns) - spent
        for store in STORES:
            earned_here = sum(p for s, p in earns if s == store)
            assert 0 <= change.get(store, 0) <= earned_here
        matrix = ledger.cross_store_redemptions(session)
        assert sum(matrix.values()) - sum(matrix_before.values()) == spent
        assert_consistent(session, member)


# -------------------------------------------------------------------------------------------- rule 6
@PROPERTY
@given(a=st.lists(lot_terms, max_size=5), b=st.lists(lot_terms, min_size=1, max_size=5), debt=st.integers(0, 80))
def test_merge_moves_every_lot_and_a_split_restores_each_side_exactly(sessions, a, b, debt):
    left, right, minted = fresh("A"), fresh("B"), fresh("C")
    with sessions() as session, session.begin():
        for member, lots in ((left, a), (right, b)):
            for i, (points, days, pending, store) in enumerate(lots):
                ledger.post(
                    session,
                    earning(
                        member,
                        points,
                        f"o:{member}:{i}",
                        at=T0,
                        store=store,
                        expires=T0 + days * DAY if days else None,
                        available=T0 + 3 * DAY if pending else None,
                    ),
                    now=T0,
                )
        if debt:  # the absorbed member owes points: earned, spent, refunded
            ledger.post(session, earning(right, debt, f"d:{right}", store="GZ01"), now=T0)
            ledger.redeem(session, right, ledger.balance(session, right), source="pos", document=f"r:{right}", at=T0)
            ledger.refund(
                session,
                right,
                source="pos",
                order_document=f"d:{right}",
                target=debt,
                document=f"d:{right}/refund",
                at=T0,
            )
        before_a, before_b = lots_of(session, left), lots_of(session, right)
        moved = ledger.transfer_balance(session, right, left, actor="steward", at=T0 + DAY)
        assert moved == before_b[1]
        merged = lots_of(session, left)
        assert (merged[1], merged[2]) == (before_a[1] + before_b[1], before_a[2] + before_b[2])
        if not debt:
            assert merged[0] == sorted(before_a[0] + before_b[0], key=_terms)
        assert lots_of(session, right) == ([], 0, 0)
        ledger.split_balance(session, left, minted, absorbed=right, actor="steward", at=T0 + 2 * DAY)
        assert lots_of(session, left) == before_a
        assert lots_of(session, minted) == before_b
        assert_consistent(session, left, right, minted)
