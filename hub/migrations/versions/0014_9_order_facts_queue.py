"""segments: order facts kept between runs, recomputed only for the members whose orders changed

Until now every segments run read all orders again into per-store facts and rewrote all of
``member_store_rfm``. Now ``member_store_rfm`` keeps each member's orders per store between runs,
and ``member_order_totals`` the same summed per member; a run recomputes both only for the members
``order_facts_queue`` names, then re-scores the per-store rows against the stores' new cut points.

Triggers fill the queue in the same transaction as the change, as ``resolution_queue``'s do
(0010_5): an order inserted, updated or deleted queues its customer (``source`` and
``member_source_id``; the run looks up whom that customer belongs to then, so a link made later is
never missed); a link inserted, moved or deleted queues the golden member it names, the old and
the new; a golden member whose status changes, or that is deleted, queues itself. On PostgreSQL the
triggers run once per statement (transition tables).

Both tables hold facts that exist nowhere else between runs, so they are logged (``member_store_rfm``
was unlogged while every run rebuilt it). Its scores may be NULL for the moment between a member's
new facts and the run's scoring, inside the run's transaction only. It is rebuilt from scratch:
every active golden member is queued, so the first run after this revision computes everything.

Revision ID: 0014_9
Revises: 0001
Depends on: 0013_9
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0014_9"
down_revision = "0001"
branch_labels = None
depends_on = ("0013_9",)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.tables.UTCDateTime(timezone=True)
Money = sa.Numeric(18, 2, asdecimal=False)

CUSTOMER = "source, member_source_id"
_CUSTOMERS = "SELECT source, member_source_id FROM {rows} WHERE member_source_id IS NOT NULL"
_MEMBERS = "SELECT member_id FROM {rows}"
# (table, event) -> the queue's columns, and the rows to queue: over PostgreSQL's transition tables
# (old_rows, new_rows), and over SQLite's one row (OLD, NEW), one INSERT per entry
TRIGGERS = {
    ("staged_orders", "INSERT"): (CUSTOMER, [_CUSTOMERS.format(rows="new_rows")], ["NEW"]),
    ("staged_orders", "UPDATE"): (CUSTOMER, [_CUSTOMERS.format(rows=r) for r in ("old_rows", "new_rows")], ["OLD", "NEW"]),
    ("staged_orders", "DELETE"): (CUSTOMER, [_CUSTOMERS.format(rows="old_rows")], ["OLD"]),
    ("member_links", "INSERT"): ("member_id", [_MEMBERS.format(rows="new_rows")], ["NEW"]),
    ("member_links", "UPDATE"): ("member_id", [_MEMBERS.format(rows=r) for r in ("old_rows", "new_rows")], ["OLD", "NEW"]),
    ("member_links", "DELETE"): ("member_id", [_MEMBERS.format(rows="old_rows")], ["OLD"]),
    ("golden_members", "UPDATE"): (
        "member_id",
        ["SELECT n.member_id FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE o.status IS DISTINCT FROM n.status"],
        ["NEW"],
    ),
    ("golden_members", "DELETE"): ("member_id", [_MEMBERS.format(rows="old_rows")], ["OLD"]),
}  # fmt: skip


def _name(table: str, event: str) -> str:
    return f"{table}_order_facts_{event.lower()}"


def _store_rfm(*, nullable_scores: bool) -> None:
    op.create_table(
        "member_store_rfm",
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("store_code", sa.String(32), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("pos_orders", sa.Integer(), nullable=False),
        sa.Column("spend", Money, nullable=False),
        sa.Column("first_order_at", When, nullable=False),
        sa.Column("last_order_at", When, nullable=False),
        *(sa.Column(score, sa.Integer(), nullable=nullable_scores) for score in ("r_score", "f_score", "m_score")),
        sa.PrimaryKeyConstraint("member_id", "store_code", name=op.f("pk_member_store_rfm")),
    )


def upgrade() -> None:
    op.drop_table("member_store_rfm")
    _store_rfm(nullable_scores=True)
    op.create_table(
        "member_order_totals",
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("store_orders", sa.BigInteger(), nullable=False),
        sa.Column("spend", Money, nullable=False),
        sa.Column("first_order_at", When, nullable=False),
        sa.Column("last_order_at", When, nullable=False),
        sa.Column("stores", sa.Integer(), nullable=False),
        sa.Column("favourite_store", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_order_totals")),
    )
    op.create_table(
        "order_facts_queue",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("member_id", sa.String(16)),
        sa.Column("source", sa.String(64)),
        sa.Column("member_source_id", sa.String(128)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_facts_queue")),
    )
    bind = op.get_bind()
    bind.exec_driver_sql(
        "INSERT INTO order_facts_queue (member_id) SELECT member_id FROM golden_members WHERE status = 'active'"
    )
    _create_triggers(bind)


def downgrade() -> None:
    bind = op.get_bind()
    _drop_triggers(bind)
    op.drop_table("order_facts_queue")
    op.drop_table("member_order_totals")
    op.drop_table("member_store_rfm")
    _store_rfm(nullable_scores=False)
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE member_store_rfm SET UNLOGGED")


def _create_triggers(bind: sa.Connection) -> None:
    for (table, event), (columns, selects, rows) in TRIGGERS.items():
        name = _name(table, event)
        if bind.dialect.name == "postgresql":
            transitions = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows"}
            referencing = transitions.get(event, "OLD TABLE AS old_rows NEW TABLE AS new_rows")
            bind.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"INSERT INTO order_facts_queue ({columns}) {' UNION '.join(selects)}; RETURN NULL; END $$"
            )
            bind.exec_driver_sql(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        elif bind.dialect.name == "sqlite":
            listed = ", ".join(f"{{row}}.{c.strip()}" for c in columns.split(","))
            only = " WHERE {row}.member_source_id IS NOT NULL" if columns == CUSTOMER else ""
            body = " ".join(
                f"INSERT INTO order_facts_queue ({columns}) SELECT {listed.format(row=row)}{only.format(row=row)};"
                for row in rows
            )
            when = " OF status" if table == "golden_members" and event == "UPDATE" else ""
            condition = " WHEN OLD.status IS NOT NEW.status" if when else ""
            bind.exec_driver_sql(f"CREATE TRIGGER {name} AFTER {event}{when} ON {table}{condition} BEGIN {body} END")


def _drop_triggers(bind: sa.Connection) -> None:
    for table, event in TRIGGERS:
        name = _name(table, event)
        if bind.dialect.name == "postgresql":
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
        elif bind.dialect.name == "sqlite":
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
