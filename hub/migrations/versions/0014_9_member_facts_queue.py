"""segments: member facts kept between runs, recomputed only for the members whose facts changed

Until now every segments run read all orders again into per-store facts, rewrote all of
``member_store_rfm``, and gathered every member's tier, consent and enrolment again. Now they are
kept between runs: ``member_store_rfm`` each member's orders per store, ``member_order_totals`` the
same summed per member (with the average order value and the buyer's own gap between orders), and
``member_source_facts`` what the source systems and the tier history say of them. A run recomputes them only for the members ``member_facts_queue`` names, then re-scores
the per-store rows against the stores' new cut points.

Triggers fill the queue in the same transaction as the change, as ``resolution_queue``'s do
(0010_5): an order or a staged member inserted, updated or deleted queues its customer (``source``
and ``member_source_id``; the run looks up whom that customer belongs to then, so a link made later
is never missed); a link inserted, moved or deleted queues the golden member it names, the old and
the new; a tier assignment queues its member; a golden member whose status changes, or that is
deleted, queues itself. On PostgreSQL the triggers run once per statement (transition tables).

The kept tables hold facts that exist nowhere else between runs, so they are logged
(``member_store_rfm`` was unlogged while every run rebuilt it). Its scores may be NULL for the
moment between a member's new facts and the run's scoring, inside the run's transaction only. It is
rebuilt from scratch: every active golden member is queued, so the first run after this revision
computes everything.

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
# table -> the queue's columns, and the changed row's columns that fill them
KEYS = {
    "staged_orders": (CUSTOMER, ("source", "member_source_id")),
    "staged_members": (CUSTOMER, ("source", "source_id")),
    "member_links": ("member_id", ("member_id",)),
    "tier_assignments": ("member_id", ("member_id",)),
    "golden_members": ("member_id", ("member_id",)),
}
COUNTS = {"staged_orders": "{row}.member_source_id IS NOT NULL"}
"""Rows that name nobody: an order without a customer."""
EVENTS = {"INSERT": ("NEW",), "UPDATE": ("OLD", "NEW"), "DELETE": ("OLD",)}
FIXED_KEYS = ("staged_members", "tier_assignments")
"""Tables whose key columns an update never changes (a staged member stays its source's customer, an
assignment its member's): an update queues the new rows only, and PostgreSQL keeps no copy of the old."""
STATUS_CHANGED = (
    "SELECT n.member_id FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE o.status IS DISTINCT FROM n.status"
)
"""An updated golden member is queued only when its status changed: the resolver's other updates
change none of its facts."""


def _name(table: str, event: str) -> str:
    return f"{table}_member_facts_{event.lower()}"


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
        sa.Column("avg_order_value", sa.Numeric(), nullable=False),
        sa.Column("own_interval", sa.Float()),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_order_totals")),
    )
    op.create_table(
        "member_source_facts",
        sa.Column("member_id", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(32)),
        sa.Column("marketing_consent", sa.Boolean()),
        sa.Column("enrolled_store", sa.String(32)),
        sa.Column("enrolled_at", When),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_source_facts")),
    )
    op.create_table(
        "member_facts_queue",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("member_id", sa.String(16)),
        sa.Column("source", sa.String(64)),
        sa.Column("member_source_id", sa.String(128)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_facts_queue")),
    )
    bind = op.get_bind()
    bind.exec_driver_sql(
        "INSERT INTO member_facts_queue (member_id) SELECT member_id FROM golden_members WHERE status = 'active'"
    )
    _create_triggers(bind)


def downgrade() -> None:
    bind = op.get_bind()
    _drop_triggers(bind)
    op.drop_table("member_facts_queue")
    op.drop_table("member_source_facts")
    op.drop_table("member_order_totals")
    op.drop_table("member_store_rfm")
    _store_rfm(nullable_scores=False)
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE member_store_rfm SET UNLOGGED")


def _create_triggers(bind: sa.Connection) -> None:
    for table, (columns, keys) in KEYS.items():
        only = COUNTS.get(table)
        for event, rows in EVENTS.items():
            name = _name(table, event)
            status = table == "golden_members" and event == "UPDATE"
            if event == "UPDATE" and table in FIXED_KEYS:
                rows = ("NEW",)
            if bind.dialect.name == "postgresql":
                selects = [
                    f"SELECT {', '.join(keys)} FROM {row.lower()}_rows"
                    + (f" WHERE {only.format(row=row.lower() + '_rows')}" if only else "")
                    for row in rows
                ]
                bind.exec_driver_sql(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"INSERT INTO member_facts_queue ({columns}) {STATUS_CHANGED if status else ' UNION '.join(selects)}; "
                    "RETURN NULL; END $$"
                )
                referencing = " ".join(f"{row} TABLE AS {row.lower()}_rows" for row in rows)
                bind.exec_driver_sql(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
                )
            elif bind.dialect.name == "sqlite":
                body = " ".join(
                    f"INSERT INTO member_facts_queue ({columns}) SELECT {', '.join(f'{row}.{k}' for k in keys)}"
                    + (f" WHERE {only.format(row=row)}" if only else "")
                    + ";"
                    for row in rows
                )
                event_of = "UPDATE OF status" if status else event
                when = " WHEN OLD.status IS NOT NEW.status" if status else ""
                bind.exec_driver_sql(f"CREATE TRIGGER {name} AFTER {event_of} ON {table}{when} BEGIN {body} END")


def _drop_triggers(bind: sa.Connection) -> None:
    for table in KEYS:
        for event in EVENTS:
            name = _name(table, event)
            if bind.dialect.name == "postgresql":
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
                bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
            elif bind.dialect.name == "sqlite":
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
