"""segments: the derived tables' keys in byte order, and the rebuilt-every-run ones unlogged (PostgreSQL)

The member view, per-store RFM, segment memberships and history are rebuilt or diffed for every
member on each run; their keys are codes (MH00000001, SH01, dormant). Under a locale collation every
index insert and sort compares them through the C library; with COLLATE "C" they compare as bytes,
which is the same order for these codes (and SQLite's), several times faster.

``member_metrics`` and ``member_store_rfm`` are emptied and rebuilt from the orders on every run:
they are UNLOGGED, so a million rows are not written twice (table and WAL). After a database crash
PostgreSQL empties them, and the next segments run (the Dagster asset, ``memberhub segments
refresh``) fills them again; memberships and history, which are the record, stay logged.

Revision ID: 0011_9
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_9"
down_revision = "0001"
branch_labels = None
depends_on = ("0008",)

COLUMNS = {
    "member_metrics": {"member_id": 16},
    "member_store_rfm": {"store_code": 32, "member_id": 16},
    "segment_memberships": {"segment": 64, "member_id": 16},
    "segment_history": {"segment": 64, "member_id": 16, "change": 8},
}


def _collate(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":  # SQLite compares text as bytes already
        return
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                batch.alter_column(column, type_=sa.String(length, collation=collation), existing_nullable=False)


REBUILT = ("member_metrics", "member_store_rfm")


def upgrade() -> None:
    _collate("C")
    if op.get_bind().dialect.name == "postgresql":
        for table in REBUILT:
            op.execute(f"ALTER TABLE {table} SET UNLOGGED")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in REBUILT:
            op.execute(f"ALTER TABLE {table} SET LOGGED")
    _collate(None)
