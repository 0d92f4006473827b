"""ledger lots: pending and spendable buckets, lots with expiry, allocations, account locks, tier
history details and reviews; the ledger made append-only in the database.

Existing entries are kept as they are and given lots (oldest debits draw on oldest credits, a
refund on its own order first; a shortfall becomes a debt lot), so the new code finds a ledger that
reconciles. Then triggers refuse UPDATE and DELETE of ledger_entries and points_allocations:
PL/pgSQL on PostgreSQL, RAISE(ABORT) on SQLite. (A later SQLite batch migration that recreates
either table must create its triggers again.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 20:38:10.607376
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

import hub.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = hub.tables.UTCDateTime(timezone=True)
APPEND_ONLY = ("ledger_entries", "points_allocations")


def upgrade() -> None:
    op.create_table(
        "points_accounts",
        sa.Column("member_id", sa.String(length=16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_points_accounts")),
    )
    op.create_table(
        "tier_reviews",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("reviewed_at", When, nullable=False),
        sa.Column("downgraded", sa.Integer(), nullable=False),
        sa.Column("retained", sa.Integer(), nullable=False),
        sa.Column("per_tier", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_reviews")),
        sa.UniqueConstraint("period", name=op.f("uq_tier_reviews_period")),
    )
    op.create_table(
        "points_lots",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("member_id", sa.String(length=16), nullable=False),
        sa.Column("entry_id", BigId, nullable=False),
        sa.Column("origin_entry_id", BigId, nullable=False),
        sa.Column("parent_id", BigId, nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("store_code", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", When, nullable=False),
        sa.Column("available_at", When, nullable=True),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("expires_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lots")),
    )
    with op.batch_alter_table("points_lots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_points_lots_available_at",
            ["available_at"],
            unique=False,
            postgresql_where=sa.text("pending"),
            sqlite_where=sa.text("pending"),
        )
        batch_op.create_index(
            "ix_points_lots_entry_id",
            ["entry_id"],
            unique=False,
            postgresql_where=sa.text("entry_id <> origin_entry_id"),
            sqlite_where=sa.text("entry_id <> origin_entry_id"),
        )
        batch_op.create_index(
            "ix_points_lots_expires_at",
            ["expires_at"],
            unique=False,
            postgresql_using="brin",
            sqlite_where=sa.text("expires_at IS NOT NULL"),
        )
        batch_op.create_index("ix_points_lots_member_spend_order", ["member_id", "pending", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_points_lots_origin_entry_id"), ["origin_entry_id"], unique=False)
        batch_op.create_index(
            "ix_points_lots_parent_id",
            ["parent_id"],
            unique=False,
            postgresql_where=sa.text("parent_id IS NOT NULL"),
            sqlite_where=sa.text("parent_id IS NOT NULL"),
        )

    op.create_table(
        "points_allocations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("entry_id", BigId, nullable=False),
        sa.Column("lot_id", BigId, nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_points_allocations_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["points_lots.id"], name=op.f("fk_points_allocations_lot_id_points_lots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_allocations")),
    )
    with op.batch_alter_table("points_allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_points_allocations_entry_id"), ["entry_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_points_allocations_lot_id"), ["lot_id"], unique=False)

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_points", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ref", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("available_at", When, nullable=True))
        batch_op.add_column(sa.Column("expires_at", When, nullable=True))
        batch_op.create_index(
            "ix_ledger_entries_source_ref",
            ["source", "ref"],
            unique=False,
            postgresql_where=sa.text("ref IS NOT NULL"),
            sqlite_where=sa.text("ref IS NOT NULL"),
        )

    with op.batch_alter_table("tier_assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_tier", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_at", When, nullable=True))
        batch_op.add_column(sa.Column("actor", sa.String(length=64), server_default="system", nullable=False))

    _backfill(op.get_bind())
    _create_triggers(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    _drop_triggers(bind)
    entries = sa.table("ledger_entries", sa.column("points", sa.BigInteger), sa.column("pending_points", sa.BigInteger))
    bind.execute(entries.update().values(points=entries.c.points + entries.c.pending_points))  # nothing vanishes
    with op.batch_alter_table("tier_assignments", schema=None) as batch_op:
        batch_op.drop_column("actor")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("previous_tier")

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_source_ref")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("available_at")
        batch_op.drop_column("ref")
        batch_op.drop_column("reason")
        batch_op.drop_column("pending_points")

    with op.batch_alter_table("points_allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_points_allocations_lot_id"))
        batch_op.drop_index(batch_op.f("ix_points_allocations_entry_id"))

    op.drop_table("points_allocations")
    with op.batch_alter_table("points_lots", schema=None) as batch_op:
        batch_op.drop_index("ix_points_lots_parent_id")
        batch_op.drop_index(batch_op.f("ix_points_lots_origin_entry_id"))
        batch_op.drop_index("ix_points_lots_member_spend_order")
        batch_op.drop_index("ix_points_lots_expires_at")
        batch_op.drop_index("ix_points_lots_entry_id")
        batch_op.drop_index("ix_points_lots_available_at")

    op.drop_table("points_lots")
    op.drop_table("tier_reviews")
    op.drop_table("points_accounts")


# -- triggers -----------------------------------------------------------------------------------------
def _create_triggers(bind: sa.Connection) -> None:
    if bind.dialect.name == "postgresql":
        bind.execute(
            sa.text(
                """
            CREATE OR REPLACE FUNCTION memberhub_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused; post a reversal or an adjustment instead',
                    TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
            END
            $$
            """
            )
        )
        for table in APPEND_ONLY:
            bind.exec_driver_sql(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION memberhub_append_only()"
            )
            bind.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION memberhub_append_only()"
            )
    elif bind.dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for operation in ("UPDATE", "DELETE"):
                bind.exec_driver_sql(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, '{table} is append-only: {operation} refused; "
                    "post a reversal or an adjustment instead'); END"
                )


def _drop_triggers(bind: sa.Connection) -> None:
    if bind.dialect.name == "postgresql":
        for table in APPEND_ONLY:
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS memberhub_append_only()")
    elif bind.dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for operation in ("update", "delete"):
                bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")


# -- backfill of existing entries ----------------------------------------------------------------------
# Frozen copies of what hub/ledger.py does at the time of this revision: a migration must not change
# meaning when the application code moves on.


def _hash(
    member_id: str, kind: str, points: int, store: str | None, channel: str | None, at: datetime, ref: str | None
) -> str:
    instant = str((at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    text = "|".join((member_id, kind, str(points), store or "", channel or "", instant, ref or "", "", "", ""))
    return hashlib.sha256(text.encode()).hexdigest()


def _ref(kind: str, document: str) -> str | None:
    if kind == "reverse" and "/refund:" in document:
        return document.split("/refund:", 1)[0]
    if kind == "transfer" and document.startswith("merge:"):
        return document.rsplit(":", 1)[0]
    return None


def _backfill(bind: sa.Connection) -> None:
    entries = sa.table(
        "ledger_entries",
        sa.column("id", BigId),
        sa.column("member_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("points", sa.BigInteger),
        sa.column("store_code", sa.String),
        sa.column("channel", sa.String),
        sa.column("source", sa.String),
        sa.column("document", sa.String),
        sa.column("occurred_at", When),
        sa.column("payload_hash", sa.String),
        sa.column("ref", sa.String),
    )
    rows = bind.execute(sa.select(entries).order_by(entries.c.member_id, entries.c.occurred_at, entries.c.id)).all()
    if not rows:
        return
    bind.execute(
        entries.update()
        .where(entries.c.id == sa.bindparam("eid"))
        .values(payload_hash=sa.bindparam("h"), ref=sa.bindparam("r")),
        [
            {
                "eid": r.id,
                "r": _ref(r.kind, r.document),
                "h": _hash(
                    r.member_id, r.kind, r.points, r.store_code, r.channel, r.occurred_at, _ref(r.kind, r.document)
                ),
            }
            for r in rows
        ],
    )
    lots_table = sa.table(
        "points_lots",
        *(
            sa.column(name, kind)
            for name, kind in (
                ("id", BigId),
                ("member_id", sa.String),
                ("entry_id", BigId),
                ("origin_entry_id", BigId),
                ("parent_id", BigId),
                ("kind", sa.String),
                ("store_code", sa.String),
                ("channel", sa.String),
                ("points", sa.BigInteger),
                ("remaining", sa.BigInteger),
                ("earned_at", When),
                ("available_at", When),
                ("pending", sa.Boolean),
                ("expires_at", When),
            )
        ),
    )
    allocations = sa.table(
        "points_allocations",
        sa.column("entry_id", BigId),
        sa.column("lot_id", BigId),
        sa.column("points", sa.BigInteger),
    )
    accounts = sa.table(
        "points_accounts",
        sa.column("member_id", sa.String),
        sa.column("balance", sa.BigInteger),
        sa.column("pending", sa.BigInteger),
        sa.column("version", sa.BigInteger),
        sa.column("updated_at", When),
    )
    earn_of = {(r.source, r.document): r.id for r in rows if r.kind == "earn"}
    balance: dict[str, int] = defaultdict(int)
    lots: dict[str, list[dict[str, Any]]] = defaultdict(list)  # open lots per member, oldest first
    for r in rows:
        balance[r.member_id] += r.points
        if r.points == 0:
            continue
        mine = lots[r.member_id]
        moves: list[tuple[dict[str, Any], int]] = []
        if r.points > 0:
            lot = _open(bind, lots_table, r, r.points, "transfer" if r.kind == "transfer" else r.kind)
            for debt in [lot_ for lot_ in mine if lot_["remaining"] < 0]:
                pay = min(lot["remaining"], -debt["remaining"])
                moves += [(lot, -pay), (debt, pay)]
                lot["remaining"] -= pay
                debt["remaining"] += pay
            mine.append(lot)
        else:
            need = -r.points
            own = earn_of.get((r.source, _ref(r.kind, r.document) or ""))
            ordered = sorted(
                (lot_ for lot_ in mine if lot_["remaining"] > 0), key=lambda lot_: (lot_["entry_id"] != own, lot_["id"])
            )
            for lot in ordered:
                take = min(lot["remaining"], need)
                if take:
                    moves.append((lot, -take))
                    lot["remaining"] -= take
                    need -= take
            if need:
                mine.append(_open(bind, lots_table, r, -need, "debt"))
        if moves:
            bind.execute(
                allocations.insert(), [{"entry_id": r.id, "lot_id": lot["id"], "points": pts} for lot, pts in moves]
            )
    remaining = [{"lid": lot["id"], "rem": lot["remaining"]} for mine in lots.values() for lot in mine]
    bind.execute(
        lots_table.update().where(lots_table.c.id == sa.bindparam("lid")).values(remaining=sa.bindparam("rem")),
        remaining,
    )
    now = datetime.now(UTC)
    bind.execute(
        accounts.insert(),
        [
            {"member_id": m, "balance": b, "pending": 0, "version": 0, "updated_at": now}
            for m, b in sorted(balance.items())
        ],
    )


def _open(bind: sa.Connection, table: Any, entry: Any, points: int, kind: str) -> dict[str, Any]:
    values = {
        "member_id": entry.member_id,
        "entry_id": entry.id,
        "origin_entry_id": entry.id,
        "parent_id": None,
        "kind": kind,
        "store_code": entry.store_code,
        "channel": entry.channel,
        "points": points,
        "remaining": points,
        "earned_at": entry.occurred_at,
        "available_at": None,
        "pending": False,
        "expires_at": None,
    }
    lot_id = bind.execute(table.insert().returning(table.c.id), [values]).scalar_one()
    return {**values, "id": lot_id}
