"""The hub store on SQLite and PostgreSQL: migrations, idempotent ingest, staging with quarantine,
exact-match resolution with stable ids, the ledger, tiers and the write-back diff."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import sessionmaker

from connectors import Page, WritebackResult
from hub import ledger, resolve, staging, tiers, writeback
from hub.db import engine_for, upgrade
from hub.ingest import read_cursor, store_page
from hub.tables import (
    AuditLog,
    GoldenMember,
    LedgerEntryRow,
    MemberIdChange,
    QuarantineRow,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
    WritebackState,
)
from mappings import load_mapping
from schemas import EntryKind, LedgerEntry, ProgrammeConfig
from schemas.errors import LedgerError

MEMBERS_MAPPING = """\
source: testpos
stream: members
target: member
fields:
  source_id: id
  channel: "'pos'"
  family_name: surname
  given_name: name
  phone: mobile
  email: mail
  updated_at: utc(changed)
"""
ORDERS_MAPPING = """\
source: testpos
stream: orders
target: order
fields:
  source_id: id
  member_source_id: member
  store_code: store(shop)
  channel: "'pos'"
  status: status
  total.amount: cast(total as decimal)
  total.currency: "'CNY'"
  refunded.amount: cast(refunded as decimal)
  refunded.currency: "'CNY'"
  ordered_at: utc(at)
"""
T0 = "2025-03-01 08:00:00"


@pytest.fixture
def sessions(database_url):
    return sessionmaker(engine_for(database_url), expire_on_commit=False)


@pytest.fixture
def mappings(tmp_path):
    (tmp_path / "members.yaml").write_text(MEMBERS_MAPPING)
    (tmp_path / "orders.yaml").write_text(ORDERS_MAPPING)
    return {("testpos", s): load_mapping(tmp_path / f"{s}.yaml") for s in ("members", "orders")}


def member(i, *, phone=None, mail=None, surname="王", name="芳", changed=T0):
    return {"id": str(i), "surname": surname, "name": name, "mobile": phone, "mail": mail, "changed": changed}


def order(i, member_id, total, *, status="paid", refunded=None, shop="SH01"):
    return {
        "id": str(i),
        "member": member_id,
        "shop": shop,
        "status": status,
        "total": total,
        "refunded": refunded,
        "at": T0,
    }


def ingest(sessions, source, stream, records, cursor=None):
    with sessions() as session, session.begin():
        return store_page(session, source, stream, "id", Page(records, cursor))


def run_hub(sessions, mappings, programme=ProgrammeConfig()):
    with sessions() as session, session.begin():
        staged = staging.stage(session, mappings, {"pos": "testpos", "web": "testpos"})
        resolved = resolve.resolve(session)
        posted = ledger.post_orders(session, programme.points_per_unit)
        tiered = tiers.evaluate(session, programme)
    return staged, resolved, posted, tiered


def golden_of(session, source, source_id):
    from hub.tables import MemberLink

    return session.scalar(
        select(MemberLink.member_id)
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .where(StagedMember.source == source, StagedMember.source_id == source_id)
    )


def test_migrations_create_every_table_and_rerun_cleanly(database_url):
    upgrade(database_url)  # second time: nothing to do
    names = set(inspect(engine_for(database_url)).get_table_names())
    assert {
        "source_records",
        "staged_members",
        "staged_orders",
        "golden_members",
        "member_links",
        "member_id_changes",
        "ledger_entries",
        "tier_assignments",
        "connector_state",
        "quarantine",
        "writeback_state",
        "writeback_runs",
        "audit_log",
        "alembic_version",
    } <= names


def test_ingest_upserts_by_external_id_and_moves_cursor_with_records(sessions):
    first = ingest(sessions, "pos", "members", [member(1), member(2)], cursor="2025-03-01T08:00:00+00:00")
    assert (first.new, first.changed, first.unchanged) == (2, 0, 0)
    again = ingest(sessions, "pos", "members", [member(1), member(2, name="芳芳")], cursor="2025-02-01T00:00:00+00:00")
    assert (again.new, again.changed, again.unchanged) == (0, 1, 1)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SourceRecordRow)) == 2
        assert read_cursor(session, "pos", "members") == "2025-03-01T08:00:00+00:00"  # never moves back
        row = session.scalar(select(SourceRecordRow).where(SourceRecordRow.external_id == "2"))
        assert row.payload["name"] == "芳芳"
        assert row.first_seen_at.tzinfo is not None


def test_staging_quarantines_bad_rows_with_reasons_and_releases_them_when_fixed(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="138 1234 5678"), member(2, mail="not an email")])
    ingest(
        sessions, "pos", "orders", [order(10, "1", "99.90"), order(11, "1", "abc"), order(12, "1", "10", shop="MARS")]
    )
    staged, *_ = run_hub(sessions, mappings)
    assert (staged.members, staged.orders, staged.quarantined) == (1, 1, 3)
    with sessions() as session:
        reasons = {q.external_id: (q.field, q.reason) for q in session.scalars(select(QuarantineRow))}
    assert reasons["2"][0] == "email" and "email" in reasons["2"][1]
    assert reasons["11"] == ("total.amount", reasons["11"][1]) and "cannot cast 'abc' to decimal" in reasons["11"][1]
    assert "store code 'MARS'" in reasons["12"][1]
    ingest(sessions, "pos", "orders", [order(11, "1", "12.00")])  # the source fixed it
    staged, *_ = run_hub(sessions, mappings)
    assert (staged.orders, staged.released) == (1, 1)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(QuarantineRow)) == 2
        assert session.scalar(select(func.count()).select_from(StagedOrder)) == 2


def test_resolution_merges_on_phone_or_email_and_keeps_ids_stable(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="13812345678"), member(2, phone="+86 139 0000 1111")])
    ingest(sessions, "web", "members", [member(7, phone="0086 138 1234 5678", mail="A@x.com")])
    _, resolved, *_ = run_hub(sessions, mappings)
    assert (resolved.golden, resolved.created) == (2, 2)
    with sessions() as session:
        first = golden_of(session, "pos", "1")
        assert golden_of(session, "web", "7") == first
        assert golden_of(session, "pos", "2") != first
    _, again, *_ = run_hub(sessions, mappings)
    assert (again.created, again.linked, again.merged_golden) == (0, 0, 0)
    with sessions() as session:
        assert golden_of(session, "pos", "1") == first


def test_a_bridging_record_merges_two_golden_members_keeping_the_older_id_and_points(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="13812345678")])
    ingest(sessions, "web", "members", [member(2, mail="jane@x.com")])
    ingest(sessions, "pos", "orders", [order(1, "1", "100")])
    ingest(sessions, "web", "orders", [order(2, "2", "50", shop="ONLINE")])
    run_hub(sessions, mappings)
    with sessions() as session:
        older, younger = golden_of(session, "pos", "1"), golden_of(session, "web", "2")
        assert older < younger
        assert (ledger.balance(session, older), ledger.balance(session, younger)) == (100, 50)
    ingest(sessions, "web", "members", [member(3, phone="138-1234-5678", mail="JANE@x.com")])
    _, resolved, *_ = run_hub(sessions, mappings)
    assert resolved.merged_golden == 1
    with sessions() as session:
        assert {golden_of(session, s, i) for s, i in (("pos", "1"), ("web", "2"), ("web", "3"))} == {older}
        assert ledger.balance(session, older) == 150 and ledger.balance(session, younger) == 0
        merged = session.scalar(select(GoldenMember).where(GoldenMember.member_id == younger))
        assert (merged.status, merged.merged_into) == ("merged", older)
        change = session.scalar(select(MemberIdChange))
        assert (change.old_member_id, change.new_member_id, change.kind) == (younger, older, "merge")
        assert session.scalar(select(AuditLog).where(AuditLog.action == "merge")).after["points_moved"] == 50
        assert resolve.active_member_id(session, younger) == older


def test_ledger_posting_is_idempotent_and_refuses_changed_replays(sessions):
    entry = LedgerEntry(
        member_id="MH00000001",
        kind=EntryKind.earn,
        points=10,
        source="pos",
        document="order:1",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    with sessions() as session, session.begin():
        assert ledger.post(session, entry) is True
        assert ledger.post(session, entry) is False
    with sessions() as session, session.begin(), pytest.raises(LedgerError, match="different content"):
        ledger.post(session, entry.model_copy(update={"points": 11}))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(LedgerEntryRow)) == 1


def test_orders_earn_floor_points_and_refunds_reverse_exactly(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="13812345678")])
    ingest(
        sessions,
        "pos",
        "orders",
        [order(1, "1", "99.99"), order(2, "1", "200", status="cancelled"), order(3, "ghost", "10")],
    )
    _, _, posted, _ = run_hub(sessions, mappings)
    assert (posted.points, posted.unattributed_orders) == (99, 1)
    ingest(sessions, "pos", "orders", [order(1, "1", "99.99", status="partially_refunded", refunded="40.50")])
    _, _, posted, _ = run_hub(sessions, mappings)
    assert posted.points == -40  # 99 earned, floor(59.49) = 59 kept
    _, _, posted, _ = run_hub(sessions, mappings)
    assert posted.entries == 0
    ingest(sessions, "pos", "orders", [order(1, "1", "99.99", status="refunded", refunded="99.99")])
    run_hub(sessions, mappings)
    with sessions() as session:
        assert ledger.balance(session, golden_of(session, "pos", "1")) == 0


def test_tiers_follow_net_spend_with_history(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="13812345678")])
    ingest(sessions, "pos", "orders", [order(1, "1", "999.99")])
    _, _, _, tiered = run_hub(sessions, mappings)
    assert tiered.per_tier == {"regular": 1}
    ingest(sessions, "pos", "orders", [order(2, "1", "4000.01")])
    _, _, _, tiered = run_hub(sessions, mappings)
    assert tiered.per_tier == {"gold": 1} and tiered.changed == 1
    with sessions() as session:
        history = [
            (r.tier, r.reason, r.qualifying_amount)
            for r in session.scalars(select(TierAssignmentRow).order_by(TierAssignmentRow.id))
        ]
    assert history == [("regular", "initial", Decimal("999.99")), ("gold", "upgrade", Decimal("5000.00"))]


def test_writeback_sends_only_differences(sessions, mappings):
    ingest(sessions, "pos", "members", [member(1, phone="13812345678"), member(2, phone="13900001111")])
    ingest(sessions, "pos", "orders", [order(1, "1", "120")])
    run_hub(sessions, mappings)
    sent = []

    class Destination:
        name = "pos"

        def push(self, updates):
            sent.append(updates)
            return [
                WritebackResult(u.external_id, ok=u.external_id != "2", error="boom", remote={"ref": "r"})
                for u in updates
            ]

    counts = writeback.push(Destination(), sessions, ProgrammeConfig())
    assert (counts.sent, counts.failed, counts.skipped) == (1, 1, 0)
    assert {(u.external_id, u.points, u.tier) for u in sent[0]} == {("1", 120, "regular"), ("2", 0, "regular")}
    counts = writeback.push(Destination(), sessions, ProgrammeConfig())
    assert (counts.sent, counts.failed, counts.skipped) == (0, 1, 1)  # only the failed row is retried
    retried = sent[-1][0]
    assert retried.external_id == "2" and retried.acknowledged_points is None
    with sessions() as session:
        state = session.get(WritebackState, ("pos", "1"))
        assert (state.points, state.remote) == (120, {"ref": "r"})
    ingest(sessions, "pos", "orders", [order(2, "1", "30")])
    run_hub(sessions, mappings)
    with sessions() as session:
        plan = writeback.plan(session, "pos", ProgrammeConfig())
    change = next(u for u in plan.updates if u.external_id == "1")
    assert (change.points, change.acknowledged_points) == (150, 120)
    assert change.idempotency_key == writeback.idempotency_key("pos", "1", change.member_id, change.ledger_mark, 150)
