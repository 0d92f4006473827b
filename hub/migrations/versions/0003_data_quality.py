"""data quality: normalised name, ID-hash, address and flag columns on staged members; quarantine
bookkeeping; discovered stream fields

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("staged_members") as batch:
        batch.add_column(sa.Column("name_pinyin", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("name_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("resident_id_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("province", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("district", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("flags", sa.JSON(), nullable=True))
        batch.create_index(op.f("ix_staged_members_resident_id_hash"), ["resident_id_hash"], unique=False)
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("payload_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("mapping_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("last_attempt_at", hub.tables.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "stream_fields",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("json_type", sa.String(length=8), nullable=False),
        sa.Column("first_seen_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_seq", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_fields")),
        sa.UniqueConstraint(
            "connector", "stream", "path", "json_type", name=op.f("uq_stream_fields_connector_stream_path_json_type")
        ),
    )


def downgrade() -> None:
    op.drop_table("stream_fields")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("last_attempt_at")
        batch.drop_column("attempts")
        batch.drop_column("mapping_hash")
        batch.drop_column("payload_hash")
    with op.batch_alter_table("staged_members") as batch:
        batch.drop_index(op.f("ix_staged_members_resident_id_hash"))
        batch.drop_column("flags")
        batch.drop_column("district")
        batch.drop_column("province")
        batch.drop_column("resident_id_hash")
        batch.drop_column("name_key")
        batch.drop_column("name_pinyin")
