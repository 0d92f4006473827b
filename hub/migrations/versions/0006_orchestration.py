"""orchestration: webhooks taken in from the source systems (stored once per event id), and how each
Dagster run ended (for ``memberhub status``)

The webhook payload is sealed (hub.privacy) like every raw record: on every backend the column is
TEXT holding ``v<version>:…`` ciphertext.

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-25 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("processed_at", hub.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("system", "event_id", name=op.f("uq_webhook_events_system_event_id")),
    )
    op.create_index("ix_webhook_events_pending", "webhook_events", ["processed_at", "id"], unique=False)
    op.create_table(
        "pipeline_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("job_name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=True),
        sa.Column("started_at", hub.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pipeline_runs")),
    )
    op.create_index(op.f("ix_pipeline_runs_finished_at"), "pipeline_runs", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pipeline_runs_finished_at"), table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
    op.drop_index("ix_webhook_events_pending", table_name="webhook_events")
    op.drop_table("webhook_events")
