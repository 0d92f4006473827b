"""encryption at rest: contact fields, raw payloads and audit values sealed with AES-GCM; blind
indexes for phone and email; privacy tombstones

Existing rows are sealed here, in batches, with the hub's current key (hub.privacy.crypto: the
environment, or the generated key file of the embedded default). On PostgreSQL the sealed columns
become TEXT; SQLite keeps its declared types (it stores the ciphertext as text whatever they say).

Revision ID: 0007
Revises: 0001
Depends on: 0003 (staged_members.flags), 0004 (golden_field_pins)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

import hub.tables
from hub.privacy.crypto import keyring

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = ("0003", "0004")

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BATCH = 1000
_SEALED = re.compile(r"v\d+:")

# table -> (primary key columns, sealed columns, original type of each sealed column)
SEALED: dict[str, tuple[tuple[str, ...], dict[str, sa.types.TypeEngine]]] = {
    "source_records": (("id",), {"payload": sa.JSON()}),
    "staged_members": (
        ("id",),
        {"phone_raw": sa.String(64), "phone": sa.String(20), "email": sa.String(254), "flags": sa.JSON()},
    ),
    "golden_members": (("seq",), {"phone": sa.String(20), "email": sa.String(254)}),
    "quarantine": (("id",), {"payload": sa.JSON(), "reason": sa.Text()}),
    "audit_log": (("id",), {"before": sa.JSON(), "after": sa.JSON()}),
    "golden_field_pins": (("member_id", "field"), {"value": sa.Text()}),
    "writeback_state": (("destination", "external_id"), {"last_error": sa.Text()}),
}
INDEXED = ("staged_members", "golden_members")


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for table, (_keys, columns) in SEALED.items():
        if postgres:
            for name, original in columns.items():
                using = f"{name}::text" if isinstance(original, sa.JSON) else None
                op.alter_column(table, name, type_=sa.Text(), existing_type=original, postgresql_using=using)
    with op.batch_alter_table("staged_members") as batch:
        batch.drop_index("ix_staged_members_phone")
        batch.drop_index("ix_staged_members_email")
    for table in INDEXED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("phone_bidx", sa.String(length=32), nullable=True))
            batch.add_column(sa.Column("email_bidx", sa.String(length=32), nullable=True))
            batch.create_index(f"ix_{table}_phone_bidx", ["phone_bidx"], unique=False)
            batch.create_index(f"ix_{table}_email_bidx", ["email_bidx"], unique=False)
    op.create_table(
        "privacy_tombstones",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", hub.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_tombstones")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_privacy_tombstones_kind_key")),
    )
    op.create_index(op.f("ix_privacy_tombstones_member_id"), "privacy_tombstones", ["member_id"], unique=False)

    ring = keyring()
    for table, (keys, columns) in SEALED.items():
        for name in columns:

            def seal(value: str, row: dict, name: str = name, table: str = table) -> dict:
                if _SEALED.match(value):
                    return {}
                extra = {}
                if table in INDEXED and name in ("phone", "email"):
                    extra[f"{name}_bidx"] = ring.blind_index(name, value)
                return {name: ring.encrypt(value), **extra}

            _rewrite(bind, table, keys, name, seal)


def downgrade() -> None:
    bind = op.get_bind()
    ring = keyring()
    for table, (keys, columns) in SEALED.items():
        for name in columns:
            _rewrite(bind, table, keys, name, lambda value, _row, name=name: {name: ring.decrypt(value)})
    op.drop_index(op.f("ix_privacy_tombstones_member_id"), table_name="privacy_tombstones")
    op.drop_table("privacy_tombstones")
    for table in INDEXED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_email_bidx")
            batch.drop_index(f"ix_{table}_phone_bidx")
            batch.drop_column("email_bidx")
            batch.drop_column("phone_bidx")
    with op.batch_alter_table("staged_members") as batch:
        batch.create_index("ix_staged_members_email", ["email"], unique=False)
        batch.create_index("ix_staged_members_phone", ["phone"], unique=False)
    if bind.dialect.name == "postgresql":
        for table, (_keys, columns) in SEALED.items():
            for name, original in columns.items():
                using = f"{name}::json" if isinstance(original, sa.JSON) else None
                op.alter_column(table, name, type_=original, existing_type=sa.Text(), postgresql_using=using)


def _rewrite(
    bind: sa.Connection, table: str, keys: tuple[str, ...], name: str, change: Callable[[str, dict], dict]
) -> None:
    """Apply ``change(value, row)`` to every non-null value of one column, a batch at a time, in key order."""
    extra = ("phone_bidx", "email_bidx") if table in INDEXED else ()
    t = sa.table(table, *(sa.column(k) for k in keys), sa.column(name, sa.Text()), *(sa.column(c) for c in extra))
    key_columns = [t.c[k] for k in keys]
    last: tuple | None = None
    while True:
        query = sa.select(*key_columns, t.c[name]).where(t.c[name].is_not(None)).order_by(*key_columns).limit(BATCH)
        if last is not None:
            query = query.where(sa.tuple_(*key_columns) > sa.tuple_(*last))
        rows = bind.execute(query).all()
        if not rows:
            return
        updates = []
        for row in rows:
            values = change(row[-1], dict(row._mapping))
            if values:
                keyed = {f"k_{k}": v for k, v in zip(keys, row[:-1], strict=True)}
                updates.append({**keyed, **{f"v_{c}": v for c, v in values.items()}})
        for columns in {tuple(sorted(u)) for u in updates}:  # one executemany per shape of change
            same = [u for u in updates if tuple(sorted(u)) == columns]
            targets = [c[2:] for c in columns if c.startswith("v_")]
            bind.execute(
                t.update()
                .where(*(t.c[k] == sa.bindparam(f"k_{k}") for k in keys))
                .values({c: sa.bindparam(f"v_{c}") for c in targets}),
                same,
            )
        last = tuple(rows[-1][: len(keys)])
