"""identity resolution: review queue, steward constraints, field pins, trained models

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_queue",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("staged_member_a", BigId, nullable=False),
        sa.Column("staged_member_b", BigId, nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", When, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["staged_member_a"], ["staged_members.id"], name=op.f("fk_review_queue_staged_member_a_staged_members")
        ),
        sa.ForeignKeyConstraint(
            ["staged_member_b"], ["staged_members.id"], name=op.f("fk_review_queue_staged_member_b_staged_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_queue")),
        sa.UniqueConstraint(
            "staged_member_a", "staged_member_b", name=op.f("uq_review_queue_staged_member_a_staged_member_b")
        ),
    )
    op.create_index("ix_review_queue_status", "review_queue", ["status", "probability"], unique=False)
    op.create_table(
        "match_constraints",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("staged_member_a", BigId, nullable=False),
        sa.Column("staged_member_b", BigId, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["staged_member_a"], ["staged_members.id"], name=op.f("fk_match_constraints_staged_member_a_staged_members")
        ),
        sa.ForeignKeyConstraint(
            ["staged_member_b"], ["staged_members.id"], name=op.f("fk_match_constraints_staged_member_b_staged_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_constraints")),
        sa.UniqueConstraint(
            "staged_member_a", "staged_member_b", name=op.f("uq_match_constraints_staged_member_a_staged_member_b")
        ),
    )
    op.create_index(
        op.f("ix_match_constraints_staged_member_a"), "match_constraints", ["staged_member_a"], unique=False
    )
    op.create_index(
        op.f("ix_match_constraints_staged_member_b"), "match_constraints", ["staged_member_b"], unique=False
    )
    op.create_table(
        "golden_field_pins",
        sa.Column("member_id", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("pinned_by", sa.String(length=64), nullable=False),
        sa.Column("pinned_at", When, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("member_id", "field", name=op.f("pk_golden_field_pins")),
    )
    op.create_table(
        "match_models",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("pairs", sa.BigInteger(), nullable=False),
        sa.Column("labelled_pairs", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_models")),
    )


def downgrade() -> None:
    op.drop_table("match_models")
    op.drop_table("golden_field_pins")
    op.drop_index(op.f("ix_match_constraints_staged_member_b"), table_name="match_constraints")
    op.drop_index(op.f("ix_match_constraints_staged_member_a"), table_name="match_constraints")
    op.drop_table("match_constraints")
    op.drop_index("ix_review_queue_status", table_name="review_queue")
    op.drop_table("review_queue")
