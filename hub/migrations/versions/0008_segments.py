"""segments, member metrics (RFM, churn risk), tag write-back, marketing events and webhook deliveries

Revision ID: 0008
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.tables.UTCDateTime(timezone=True)
Money = sa.Numeric(18, 2, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "member_metrics",
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(32)),
        sa.Column("city", sa.String(64)),
        sa.Column("home_store", sa.String(32)),
        sa.Column("home_store_city", sa.String(64)),
        sa.Column("birthday", sa.Date()),
        sa.Column("marketing_consent", sa.Boolean()),
        sa.Column("enrolled_at", When),
        sa.Column("first_order_at", When),
        sa.Column("last_order_at", When),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("spend", Money, nullable=False),
        sa.Column("avg_order_value", Money),
        sa.Column("store_orders", sa.Integer(), nullable=False),
        sa.Column("online_orders", sa.Integer(), nullable=False),
        sa.Column("stores", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("days_since_first_order", sa.Integer()),
        sa.Column("days_since_last_order", sa.Integer()),
        sa.Column("tenure_days", sa.Integer()),
        sa.Column("typical_interval_days", sa.Float()),
        sa.Column("interval_basis", sa.String(8)),
        sa.Column("churn_risk", sa.Float()),
        sa.Column("r_score", sa.Integer()),
        sa.Column("f_score", sa.Integer()),
        sa.Column("m_score", sa.Integer()),
        sa.Column("aov_score", sa.Integer()),
        sa.Column("computed_at", When, nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_metrics")),
    )
    op.create_table(
        "member_store_rfm",
        sa.Column("store_code", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("pos_orders", sa.Integer(), nullable=False),
        sa.Column("spend", Money, nullable=False),
        sa.Column("first_order_at", When, nullable=False),
        sa.Column("last_order_at", When, nullable=False),
        sa.Column("r_score", sa.Integer(), nullable=False),
        sa.Column("f_score", sa.Integer(), nullable=False),
        sa.Column("m_score", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_code", "member_id", name=op.f("pk_member_store_rfm")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Derived tables, rebuilt whole by every recompute: no write-ahead log for them (a crash
        # empties them, and the next recompute fills them again before any segment is diffed).
        op.execute("ALTER TABLE member_metrics SET UNLOGGED")
        op.execute("ALTER TABLE member_store_rfm SET UNLOGGED")
    op.create_table(
        "segment_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("finished_at", When),
        sa.Column("as_of", When, nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("definitions_hash", sa.String(64), nullable=False),
        sa.Column("sizes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_runs")),
    )
    op.create_table(
        "segment_memberships",
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("entered_at", When, nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("segment", "member_id", name=op.f("pk_segment_memberships")),
    )
    op.create_index(op.f("ix_segment_memberships_member_id"), "segment_memberships", ["member_id"])
    op.create_table(
        "segment_history",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_history")),
    )
    op.create_index("ix_segment_history_run", "segment_history", ["run_id", "segment", "change"])
    op.create_index(op.f("ix_segment_history_member_id"), "segment_history", ["member_id"])
    op.create_table(
        "tag_writeback_state",
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("acknowledged", sa.JSON(), nullable=False),
        sa.Column("remote", sa.JSON(), nullable=False),
        sa.Column("acknowledged_at", When),
        sa.Column("last_error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("destination", "external_id", name=op.f("pk_tag_writeback_state")),
    )
    op.create_index(op.f("ix_tag_writeback_state_member_id"), "tag_writeback_state", ["member_id"])
    op.create_table(
        "marketing_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("tag_until", When),
        sa.Column("delivered_at", When),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketing_events")),
        sa.UniqueConstraint("kind", "member_id", "period", name=op.f("uq_marketing_events_kind_member_id_period")),
    )
    op.create_index(op.f("ix_marketing_events_member_id"), "marketing_events", ["member_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.ForeignKeyConstraint(
            ["event_id"], ["marketing_events.id"], name=op.f("fk_webhook_deliveries_event_id_marketing_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(op.f("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    for table in (
        "webhook_deliveries",
        "marketing_events",
        "tag_writeback_state",
        "segment_history",
        "segment_memberships",
        "segment_runs",
        "member_store_rfm",
        "member_metrics",
    ):
        op.drop_table(table)
