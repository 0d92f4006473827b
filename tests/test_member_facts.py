"""The member facts kept between segment runs (``member_store_rfm``, ``member_order_totals``,
``member_source_facts``): whatever changes — orders added, refunded, moved or deleted, links made,
moved or removed, golden members leaving and coming back, consent and enrolment changing in a source
system, tiers assigned, customers enrolling — the triggers queue exactly the members it touched, and a
run recomputes only those (the other members' kept rows are not written again) and gives the same
kept facts and member view as recomputing everyone (``metrics.rebuild``). A sequence of random changes per example (hypothesis), SQLite and PostgreSQL.
A hub upgraded to migration 0014_9 with members already in it computes all of them on its first run."""

from __future__ import annotations

import itertools
import os
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update
from test_segments_world import AS_OF, build, expected_view

from hub import segments
from hub.analytics import metrics
from hub.db import alembic_config, engine_for, session_scope, upgrade
from hub.tables import (
    GoldenMember,
    MemberLink,
    MemberMetrics,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
)

PROPERTY = settings(
    max_examples=int(os.environ.get("MEMBERHUB_PROPERTY_EXAMPLES", "40")) // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
NEW = itertools.count()
KEPT = {
    "member_store_rfm": ("member_id", "store_code"),
    "member_order_totals": ("member_id",),
    "member_source_facts": ("member_id",),
    "member_metrics": ("member_id",),
}


def _owner(session, source: str, source_id: str | None) -> set[str]:
    """The golden member a customer is linked to now (none when unlinked)."""
    found = session.scalar(
        select(MemberLink.member_id)
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .where(StagedMember.source == source, StagedMember.source_id == source_id)
    )
    return {found} if found else set()


def new_order(session, rng: random.Random) -> set[str]:
    customer = rng.choice(session.execute(select(StagedMember.source, StagedMember.source_id)).all())
    external = f"new-{next(NEW)}"
    record = SourceRecordRow(
        source=customer.source, stream="orders", external_id=external, payload={}, content_hash="x"
    )
    session.add(record)
    session.flush()
    session.add(StagedOrder(source_record_id=record.id, source=customer.source, source_id=external,
                            member_source_id=customer.source_id, store_code=rng.choice(["SH01", "GZ01", "ONLINE"]),
                            channel="pos", status="paid", currency="CNY", total_amount=Decimal(rng.randint(100, 9000)),
                            refunded_amount=Decimal(0), ordered_at=AS_OF - timedelta(hours=rng.randint(1, 900))))  # fmt: skip
    return _owner(session, customer.source, customer.source_id)


def _an_order(session, rng: random.Random, *, status: str | None = None) -> StagedOrder:
    query = select(StagedOrder).order_by(StagedOrder.id)
    return rng.choice(list(session.scalars(query if status is None else query.where(StagedOrder.status == status))))


def refund(session, rng: random.Random) -> set[str]:
    order = _an_order(session, rng, status="paid")
    order.status, order.refunded_amount = "refunded", order.total_amount
    session.flush()
    return _owner(session, order.source, order.member_source_id)


def delete_order(session, rng: random.Random) -> set[str]:
    order = _an_order(session, rng)
    session.delete(order)
    session.flush()
    return _owner(session, order.source, order.member_source_id)


def move_order(session, rng: random.Random) -> set[str]:
    order = _an_order(session, rng)
    others = list(
        session.scalars(
            select(StagedMember.source_id).where(
                StagedMember.source == order.source, StagedMember.source_id != order.member_source_id
            )
        )
    )
    before = _owner(session, order.source, order.member_source_id)
    order.member_source_id = rng.choice(others)
    session.flush()
    return before | _owner(session, order.source, order.member_source_id)


def _active(session) -> list[str]:
    return list(session.scalars(select(GoldenMember.member_id).where(GoldenMember.status == "active").order_by(GoldenMember.seq)))  # fmt: skip


def relink(session, rng: random.Random) -> set[str]:
    link = rng.choice(list(session.scalars(select(MemberLink).order_by(MemberLink.staged_member_id))))
    before = link.member_id
    link.member_id = rng.choice([m for m in _active(session) if m != before])
    session.flush()
    return {before, link.member_id}


def unlink(session, rng: random.Random) -> set[str]:
    link = rng.choice(list(session.scalars(select(MemberLink).order_by(MemberLink.staged_member_id))))
    session.execute(delete(MemberLink).where(MemberLink.staged_member_id == link.staged_member_id))
    return {link.member_id}


def link_late(session, rng: random.Random) -> set[str]:
    """A staged member (with its orders) linked only now; else a new customer with an order first."""
    linked = select(MemberLink.staged_member_id)
    waiting = list(
        session.scalars(select(StagedMember.id).where(StagedMember.id.not_in(linked)).order_by(StagedMember.id))
    )
    if not waiting:
        return new_order(session, rng)
    member_id = rng.choice(_active(session))
    session.add(MemberLink(staged_member_id=rng.choice(waiting), member_id=member_id, rule="test"))
    session.flush()
    return {member_id}


def set_status(session, rng: random.Random) -> set[str]:
    """A golden member merged away (its links stay, as the resolver leaves them for a moment), or back."""
    golden = rng.choice(list(session.scalars(select(GoldenMember).order_by(GoldenMember.seq))))
    status = "active" if golden.status != "active" else rng.choice(["merged", "forgotten"])
    session.execute(update(GoldenMember).where(GoldenMember.seq == golden.seq).values(status=status))
    return {golden.member_id}


def rename_only(session, rng: random.Random) -> set[str]:
    """What the resolver writes most: golden fields other than the status. Nobody's orders change."""
    golden = rng.choice(list(session.scalars(select(GoldenMember).order_by(GoldenMember.seq))))
    session.execute(update(GoldenMember).where(GoldenMember.seq == golden.seq).values(city="杭州市"))
    return set()


def change_consent(session, rng: random.Random) -> set[str]:
    """A source system's consent or enrolment store changes (a staged member updated by staging)."""
    staged = rng.choice(list(session.scalars(select(StagedMember).order_by(StagedMember.id))))
    consent = rng.choice([v for v in (True, False, None) if v is not staged.marketing_consent])
    store = rng.choice([None, "SH01", "GZ01"])
    session.execute(
        update(StagedMember).where(StagedMember.id == staged.id).values(marketing_consent=consent, store_code=store)
    )
    return _owner(session, staged.source, staged.source_id)


def new_tier(session, rng: random.Random) -> set[str]:
    member_id = rng.choice(_active(session))
    tier = rng.choice(["regular", "silver", "gold"])
    session.add(TierAssignmentRow(member_id=member_id, tier=tier, qualifying_amount=Decimal(0), reason="upgrade"))
    session.flush()
    return {member_id}


def enrol(session, rng: random.Random) -> set[str]:
    """A new customer record in a source system, linked to an existing member as the resolver would."""
    number = next(NEW)
    record = SourceRecordRow(
        source="sheet", stream="members", external_id=f"enrol-{number}", payload={}, content_hash="x"
    )
    session.add(record)
    session.flush()
    staged = StagedMember(source_record_id=record.id, source="sheet", source_id=f"enrol-{number}", channel="pos",
                          marketing_consent=rng.choice([True, False, None]), store_code=rng.choice([None, "BJ01"]),
                          created_at=AS_OF - timedelta(days=rng.randint(1, 2000)))  # fmt: skip
    session.add(staged)
    session.flush()
    member_id = rng.choice(_active(session))
    session.add(MemberLink(staged_member_id=staged.id, member_id=member_id, rule="test"))
    session.flush()
    return {member_id}


CHANGES = [
    new_order, refund, delete_order, move_order, relink, unlink, link_late, set_status, rename_only, change_consent,
    new_tier, enrol,
]  # fmt: skip


def queued(session) -> set[str]:
    """The members the queue names, resolved as a run resolves them."""
    query = metrics._QUEUED_MEMBERS.format(queue="member_facts_queue")
    return set(session.scalars(text(query)))


def snapshot(session) -> dict[str, dict]:
    out = {}
    for table, key in KEPT.items():
        rows = session.execute(text(f"SELECT * FROM {table}")).mappings()
        out[table] = {
            tuple(row[k] for k in key): {c: round(v, 6) if isinstance(v, float) else v for c, v in row.items()}
            for row in rows
        }
    return out


def row_versions(session) -> dict[tuple[str, str], str]:
    """(table, member) -> the stored row's version (PostgreSQL's xmin, SQLite's rowid): it changes when
    the row is written again, even with the same values."""
    version = "xmin::text" if session.get_bind().dialect.name == "postgresql" else "CAST(rowid AS TEXT)"
    return {
        (table, member_id): found
        for table in ("member_order_totals", "member_source_facts")
        for member_id, found in session.execute(text(f"SELECT member_id, {version} FROM {table}"))
    }


def recompute(url: str) -> None:
    with session_scope(url) as session:
        segments.recompute(session, segments.load_segments(), default_tier="regular", as_of=AS_OF)


@pytest.fixture
def built(database_url):
    with session_scope(database_url) as session:
        build(session, members=30, seed=11)
    recompute(database_url)
    return database_url


def test_the_first_run_computes_everyone_and_empties_the_queue(built):
    with session_scope(built) as session:
        assert queued(session) == set()
        totals = session.scalar(text("SELECT COUNT(*) FROM member_order_totals"))
        buyers = session.scalar(text("SELECT COUNT(*) FROM member_metrics WHERE orders > 0"))
        assert totals == buyers > 0
        assert session.scalar(text("SELECT COUNT(*) FROM member_store_rfm WHERE r_score IS NULL")) == 0


@PROPERTY
@given(plan=st.lists(st.tuples(st.sampled_from(CHANGES), st.integers(0, 2**32)), min_size=1, max_size=6))
def test_recomputing_only_the_queued_members_equals_recomputing_everyone(built, plan):
    touched = set()
    with session_scope(built) as session:
        for change, seed in plan:
            touched |= change(session, random.Random(seed))
        assert queued(session) == touched
        before = row_versions(session)
    recompute(built)
    with session_scope(built) as session:
        assert queued(session) == set()
        after = row_versions(session)
        untouched = {key for key in before if key[1] not in touched}
        assert {key: after.get(key) for key in untouched} == {key: before[key] for key in untouched}
        kept = snapshot(session)
        metrics.rebuild(session)
    recompute(built)
    with session_scope(built) as session:
        assert snapshot(session) == kept


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def before_0014(request: pytest.FixtureRequest, tmp_path) -> str:
    """A hub database migrated up to every head but 0014_9: what an upgrade finds."""
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    config = alembic_config(url)
    with engine_for(url).begin() as connection:
        config.attributes["connection"] = connection
        for head in ScriptDirectory.from_config(config).get_heads():
            if head != "0014_9":
                command.upgrade(config, head)
    return url


def test_an_upgraded_hub_computes_every_members_facts_on_its_first_run(before_0014):
    with session_scope(before_0014) as session:
        world = build(session, members=30, seed=7)
    upgrade(before_0014)
    recompute(before_0014)
    want = expected_view(world)
    with session_scope(before_0014) as session:
        assert queued(session) == set()
        view = {row.member_id: row for row in session.scalars(select(MemberMetrics))}
        assert set(view) == set(want)
        for member_id, expected in want.items():
            for column in ("tier", "marketing_consent", "home_store", "orders", "stores", "f_score", "m_score"):
                assert getattr(view[member_id], column) == expected[column], f"{member_id}.{column}"
        kept = snapshot(session)
        metrics.rebuild(session)
    recompute(before_0014)
    with session_scope(before_0014) as session:
        assert snapshot(session) == kept
