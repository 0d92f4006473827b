"""identity resolution: a queue of staged members to look at again, and the resolution state

Triggers fill ``resolution_queue`` in the same transaction as the change, so an incremental resolve
reads exactly what changed since it last ran — also what a transaction that started earlier but
committed later wrote, which a watermark on ``staged_at`` would miss. On PostgreSQL the triggers run
once per statement (transition tables), so a bulk load pays one INSERT … SELECT per statement.

Revision ID: 0010_5
Revises: 0001
Depends on: 0004 (match_constraints, golden_field_pins)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0010_5"
down_revision = "0001"
branch_labels = None
depends_on = ("0004",)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.tables.UTCDateTime(timezone=True)

EVENTS = ("INSERT", "UPDATE", "DELETE")
# table -> the staged member ids a changed row names: over PostgreSQL's transition table ``{rows}``,
# and over SQLite's one row ``{row}`` (NEW or OLD)
QUEUED = {
    "staged_members": ("SELECT r.id FROM {rows} r", "VALUES ({row}.id)"),
    "match_constraints": (
        "SELECT r.staged_member_a FROM {rows} r UNION ALL SELECT r.staged_member_b FROM {rows} r",
        "VALUES ({row}.staged_member_a), ({row}.staged_member_b)",
    ),
    "golden_field_pins": (
        "SELECT l.staged_member_id FROM member_links l JOIN {rows} r ON l.member_id = r.member_id",
        "SELECT staged_member_id FROM member_links WHERE member_id = {row}.member_id",
    ),
}


def _name(table: str, event: str) -> str:
    return f"{table}_resolution_{event.lower()}"


def upgrade() -> None:
    op.create_table(
        "resolution_queue",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("staged_member_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resolution_queue")),
    )
    op.create_table(
        "resolution_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resolution_state")),
    )
    bind = op.get_bind()
    bind.execute(
        sa.text("INSERT INTO resolution_state (id, generation, model_id, updated_at) VALUES (1, 0, NULL, :now)"),
        {"now": hub.tables.utcnow()},
    )
    # Staged members never resolved before this revision are waiting too.
    bind.exec_driver_sql(
        "INSERT INTO resolution_queue (staged_member_id) SELECT s.id FROM staged_members s "
        "WHERE NOT EXISTS (SELECT 1 FROM member_links l WHERE l.staged_member_id = s.id)"
    )
    _create_triggers(bind)


def downgrade() -> None:
    _drop_triggers(op.get_bind())
    op.drop_table("resolution_state")
    op.drop_table("resolution_queue")


def _create_triggers(bind: sa.Connection) -> None:
    for table, (for_rows, for_row) in QUEUED.items():
        for event in EVENTS:
            name = _name(table, event)
            if bind.dialect.name == "postgresql":
                rows = "old_rows" if event == "DELETE" else "new_rows"
                bind.exec_driver_sql(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"INSERT INTO resolution_queue (staged_member_id) {for_rows.format(rows=rows)}; "
                    "RETURN NULL; END $$"
                )
                bind.exec_driver_sql(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                    f"REFERENCING {'OLD' if event == 'DELETE' else 'NEW'} TABLE AS {rows} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
                )
            elif bind.dialect.name == "sqlite":
                row = "OLD" if event == "DELETE" else "NEW"
                bind.exec_driver_sql(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN "
                    f"INSERT INTO resolution_queue (staged_member_id) {for_row.format(row=row)}; END"
                )


def _drop_triggers(bind: sa.Connection) -> None:
    for table in QUEUED:
        for event in EVENTS:
            name = _name(table, event)
            if bind.dialect.name == "postgresql":
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
                bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
            elif bind.dialect.name == "sqlite":
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
