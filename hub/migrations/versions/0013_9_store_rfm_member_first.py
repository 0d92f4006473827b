"""segments: per-store RFM keyed by member first, then store

``member_store_rfm`` is rebuilt on every segments run (2.4 million rows for a million members).
Its rows are now written in member order, the order the per-store facts come out of their
aggregation in, so every key lands at the right edge of the primary key's index instead of at a
random page; and a member's stores are read with one index range. The data is derived: emptied and
refilled by the next run, so the key is simply rebuilt.

Revision ID: 0013_9
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0013_9"
down_revision = "0001"
branch_labels = None
depends_on = ("0011_9",)


def _key(*columns: str) -> None:
    with op.batch_alter_table("member_store_rfm", recreate="auto") as batch:
        batch.drop_constraint("pk_member_store_rfm", type_="primary")
        batch.create_primary_key("pk_member_store_rfm", list(columns))


def upgrade() -> None:
    _key("member_id", "store_code")


def downgrade() -> None:
    _key("store_code", "member_id")
