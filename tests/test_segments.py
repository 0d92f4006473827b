"""Segments, RFM and churn risk: the member view computed in the database equals the same figures
computed in Python, on SQLite and PostgreSQL; segment membership follows the rules, with history;
rule mistakes are reported at file:line:col with the closest column."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from test_segments_world import AS_OF, build, expected_view, store_rfm

from hub import segments
from hub.db import session_scope
from hub.segments import SegmentFileError, check_segments, load_segments
from hub.tables import MemberMetrics, MemberStoreRfm, SegmentChange, SegmentMembership, SourceRecordRow, StagedOrder

COLUMNS = (
    "tier", "city", "home_store", "home_store_city", "marketing_consent", "orders", "spend", "avg_order_value",
    "store_orders", "online_orders", "stores", "points", "days_since_first_order", "days_since_last_order",
    "tenure_days", "r_score", "f_score", "m_score", "aov_score",
)  # fmt: skip


@pytest.fixture
def world(database_url):
    with session_scope(database_url) as session:
        built = build(session)
    return built


def recompute(database_url, as_of=AS_OF):
    with session_scope(database_url) as session:
        return segments.recompute(session, load_segments(), default_tier="regular", as_of=as_of)


def test_member_view_equals_a_direct_computation(database_url, world):
    counts = recompute(database_url)
    assert counts.members == len(world.members)
    expected = expected_view(world)
    with session_scope(database_url) as session:
        rows = {row.member_id: row for row in session.scalars(select(MemberMetrics))}
        assert set(rows) == set(expected)
        for member_id, want in expected.items():
            row = rows[member_id]
            for column in COLUMNS:
                assert getattr(row, column) == pytest.approx(want[column]), f"{member_id}.{column}"
            for column in ("first_order_at", "last_order_at"):
                assert getattr(row, column) == want[column], f"{member_id}.{column}"
            assert row.typical_interval_days == pytest.approx(want["typical_interval_days"], abs=1e-6)
            assert row.churn_risk == pytest.approx(want["churn_risk"], abs=1e-6), member_id
        per_store = {(r.store_code, r.member_id): (r.orders, r.r_score, r.f_score, r.m_score)
                     for r in session.scalars(select(MemberStoreRfm))}  # fmt: skip
        assert per_store == store_rfm(world)
        buyers = [r for r in rows.values() if r.orders]
        assert {r.r_score for r in buyers} == {1, 2, 3, 4, 5}
        assert all(r.r_score is None and r.churn_risk is None for r in rows.values() if not r.orders)


def _matches(rule_name, row):
    """The shipped rules, written again in Python."""
    r = row
    return {
        "frequent_low_spend": (r["f_score"] or 0) >= 4 and r["aov_score"] is not None and r["aov_score"] <= 2,
        "infrequent_high_spend": r["f_score"] is not None and r["f_score"] <= 2 and (r["aov_score"] or 0) >= 4,
        "new_customer": r["days_since_first_order"] is not None and r["days_since_first_order"] <= 30,
        "dormant": (r["days_since_last_order"] if r["days_since_last_order"] is not None else r["tenure_days"]) > 180,
        "local": r["city"] is not None and r["home_store_city"] is not None and r["city"] == r["home_store_city"],
        "non_local": r["city"] is not None and r["home_store_city"] is not None and r["city"] != r["home_store_city"],
        "cross_channel": r["online_orders"] > 0 and r["store_orders"] > 0,
        "champions": all((r[k] or 0) >= 4 for k in ("r_score", "f_score", "m_score")),
        "churn_risk_high": r["churn_risk"] is not None and r["churn_risk"] >= 0.67 and r["orders"] > 0,
    }[rule_name]


def test_segment_members_follow_the_rules_and_history_records_moves(database_url, world):
    first = recompute(database_url)
    expected = expected_view(world)
    definitions = load_segments()
    with session_scope(database_url) as session:
        held = {(m.segment, m.member_id) for m in session.scalars(select(SegmentMembership))}
    want = {(s.name, m) for s in definitions for m, row in expected.items() if _matches(s.name, row)}
    assert held == want
    assert all(first.sizes[s.name] > 0 for s in definitions if s.name not in ("new_customer",)), first.sizes
    assert first.entered == len(want) and first.left == 0

    again = recompute(database_url)  # nothing changed: nobody enters or leaves
    assert again.entered == 0 and again.left == 0 and again.sizes == first.sizes

    later = AS_OF + timedelta(days=200)  # everyone ages: new customers leave, dormant grows
    moved = recompute(database_url, as_of=later)
    expected_later = expected_view(world, later)
    want_later = {(s.name, m) for s in definitions for m, row in expected_later.items() if _matches(s.name, row)}
    with session_scope(database_url) as session:
        held_later = {(m.segment, m.member_id) for m in session.scalars(select(SegmentMembership))}
        changes = session.scalars(select(SegmentChange).where(SegmentChange.run_id == moved.run_id)).all()
    assert held_later == want_later
    assert {(c.segment, c.member_id) for c in changes if c.change == "left"} == want - want_later
    assert {(c.segment, c.member_id) for c in changes if c.change == "entered"} == want_later - want
    assert moved.left > 0 and moved.entered > 0
    assert all(c.at == later.replace(microsecond=0) for c in changes)


def test_a_new_order_moves_a_dormant_member_out(database_url, world):
    recompute(database_url)
    with session_scope(database_url) as session:
        dormant = session.scalars(select(SegmentMembership.member_id).where(SegmentMembership.segment == "dormant"))
        member_id = sorted(dormant)[0]
        source, source_id = ((s["source"], s["source_id"]) for s in world.staged[member_id]).__next__()
        record = SourceRecordRow(source=source, stream="orders", external_id="new-1", payload={}, content_hash="x")
        session.add(record)
        session.flush()
        session.add(StagedOrder(source_record_id=record.id, source=source, source_id="new-1",
                                member_source_id=source_id, store_code="SH01", channel="pos", status="paid",
                                currency="CNY", total_amount=Decimal("88.00"), refunded_amount=Decimal(0),
                                ordered_at=AS_OF - timedelta(hours=2)))  # fmt: skip
    run = recompute(database_url)
    with session_scope(database_url) as session:
        moves = segments.history(session, member_id=member_id)
        assert {"segment": "dormant", "change": "left"}.items() <= moves[-1].items() or any(
            m["segment"] == "dormant" and m["change"] == "left" and m["run_id"] == run.run_id for m in moves
        )
        explained = segments.explain(session, member_id)
    assert "dormant" not in explained["segments"]
    assert explained["days_since_last_order"] == 0
    assert "last order 0 days ago" in explained["churn_evidence"]


@pytest.mark.parametrize(
    ("rule", "line", "column", "message"),
    [
        ("orderz >= 3", 4, 11, "unknown column 'orderz'; did you mean 'orders'?"),
        ("orders >= 3 and cty = '上海市'", 4, 27, "did you mean 'city'?"),
        ("city > 3", 4, 18, "type mismatch"),
        ("orders + 1", 4, 11, "must be true or false"),
        ("now() > last_order_at", 4, 11, "not allowed"),
        ("orders >= (select 1)", 4, 21, "not allowed"),
    ],
)
def test_rule_problems_name_file_line_column_and_closest_column(tmp_path, rule, line, column, message):
    path = tmp_path / "segments.yaml"
    path.write_text(f"segments:\n  busy:\n    label: 忙\n    rule: {rule}\n", encoding="utf-8")
    found, problems = check_segments(path)
    assert found is None and len(problems) == 1
    problem = problems[0]
    assert (problem.where.line, problem.where.column) == (line, column), str(problem)
    assert message in problem.message
    assert str(problem).startswith(f"{path}:{line}:{column}: busy:")


def test_unknown_keys_and_bad_files_are_reported(tmp_path):
    path = tmp_path / "segments.yaml"
    path.write_text("segment:\n  a: {label: x, rule: orders > 1}\n", encoding="utf-8")
    with pytest.raises(SegmentFileError, match="unknown key 'segment'; did you mean 'segments'"):
        load_segments(path)
    path.write_text("segments:\n  a: {label: x, rul: orders > 1}\n", encoding="utf-8")
    with pytest.raises(SegmentFileError, match=r"unknown key 'rul'; did you mean 'rule'\?"):
        load_segments(path)


def test_the_shipped_file_is_valid():
    definitions = load_segments()
    assert {"dormant", "new_customer", "cross_channel", "local", "non_local"} <= set(definitions.segments)
    assert definitions.get("dormant").tag == "MH-沉睡会员"
    with pytest.raises(Exception, match="did you mean 'dormant'"):
        definitions.get("dormnt")


@pytest.mark.postgres
def test_a_steps_planner_settings_end_with_the_step(postgres_url):
    """The store facts are grouped with hashing switched off; later statements of the same
    transaction (the segment diff, the triggers) plan with the server's settings again."""
    from hub.analytics import metrics
    from hub.db import upgrade

    upgrade(postgres_url)
    with session_scope(postgres_url) as session:
        before = {name: session.scalar(text(f"SHOW {name}")) for name in ("enable_hashagg", "parallel_tuple_cost")}
        steps = metrics.statements(session, as_of=AS_OF, default_tier="regular", store_cities={})
        upto = next(n for n, s in enumerate(steps) if s.name == "store facts")
        assert "enable_hashagg = off" in steps[upto].postgres_settings
        for step in steps[: upto + 1]:
            metrics.run(session, step)
        after = {name: session.scalar(text(f"SHOW {name}")) for name in before}
        assert after == before
        session.rollback()
