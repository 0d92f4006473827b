"""destination_events.payload sealed at rest (AES-GCM), like the other payloads that carry contact data

A destination's event (a redemption at a till, a CRM change) is kept as the hub took it in; its
payload can name the customer's phone or e-mail. Existing rows are sealed here with the hub's current
key, a batch at a time; on PostgreSQL the column becomes TEXT (the ciphertext), as in 0007.

Revision ID: 0011_9_events
Revises: 0001
Depends on: 0005 (destination_events), 0007 (encryption)
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

from hub.privacy.crypto import keyring

revision = "0011_9_events"
down_revision = "0001"
branch_labels = None
depends_on = ("0005", "0007")

BATCH = 1000
_SEALED = re.compile(r"v\d+:")
EVENTS = sa.table(
    "destination_events", sa.column("destination"), sa.column("event_id"), sa.column("payload", sa.Text())
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.alter_column(
            "destination_events", "payload", type_=sa.Text(), existing_type=sa.JSON(), postgresql_using="payload::text"
        )
    ring = keyring()
    _rewrite(bind, lambda value: None if _SEALED.match(value) else ring.encrypt(value))


def downgrade() -> None:
    bind = op.get_bind()
    ring = keyring()
    _rewrite(bind, lambda value: ring.decrypt(value) if _SEALED.match(value) else None)
    if bind.dialect.name == "postgresql":
        op.alter_column(
            "destination_events", "payload", type_=sa.JSON(), existing_type=sa.Text(), postgresql_using="payload::json"
        )


def _rewrite(bind: sa.Connection, change) -> None:  # type: ignore[no-untyped-def]
    """``change(value)`` on every payload, in key order a batch at a time; None leaves a row as it is."""
    keys = (EVENTS.c.destination, EVENTS.c.event_id)
    last: tuple | None = None
    while True:
        query = sa.select(*keys, EVENTS.c.payload).where(EVENTS.c.payload.is_not(None)).order_by(*keys).limit(BATCH)
        if last is not None:
            query = query.where(sa.tuple_(*keys) > sa.tuple_(*last))
        rows = bind.execute(query).all()
        if not rows:
            return
        updates = [
            {"k_destination": destination, "k_event_id": event_id, "v_payload": changed}
            for destination, event_id, value in rows
            if (changed := change(value)) is not None
        ]
        if updates:  # one executemany a batch
            bind.execute(
                EVENTS.update()
                .where(EVENTS.c.destination == sa.bindparam("k_destination"))
                .where(EVENTS.c.event_id == sa.bindparam("k_event_id"))
                .values(payload=sa.bindparam("v_payload")),
                updates,
            )
        last = (rows[-1][0], rows[-1][1])
