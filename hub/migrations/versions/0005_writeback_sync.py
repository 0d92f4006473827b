"""write-back sync: the ledger mark and skipped parts of each acknowledgement, each run's status and
error, and the points changes imported from destinations (two-way sync)

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("writeback_state") as batch:
        batch.add_column(sa.Column("ledger_mark", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("skipped", sa.Text(), nullable=True))
    with op.batch_alter_table("writeback_runs") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), server_default="finished", nullable=False))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "destination_events",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("member_id", sa.String(length=16), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("recorded_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("destination", "event_id", name=op.f("pk_destination_events")),
    )
    with op.batch_alter_table("destination_events") as batch:
        batch.create_index(batch.f("ix_destination_events_occurred_at"), ["occurred_at"], unique=False)
        batch.create_index(batch.f("ix_destination_events_member_id"), ["member_id"], unique=False)


def downgrade() -> None:
    op.drop_table("destination_events")
    with op.batch_alter_table("writeback_runs") as batch:
        batch.drop_column("error")
        batch.drop_column("status")
    with op.batch_alter_table("writeback_state") as batch:
        batch.drop_column("skipped")
        batch.drop_column("ledger_mark")
