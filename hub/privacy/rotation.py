"""Which key seals what, and re-sealing everything with the newest key (``memberhub keys rotate``).

Rotation is restartable: each batch commits on its own, and a value already sealed with the current
version is never touched again, so a run that stops half-way is simply run again. Only when it has
finished may an old key leave the keyring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hub.privacy.crypto import keyring
from hub.privacy.types import EncryptedJSON, EncryptedText
from hub.tables import Base

BATCH = 1000


def sealed_columns() -> list[tuple[str, tuple[str, ...], str]]:
    """(table, primary key columns, column) for every sealed column of the hub's tables."""
    out = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedText | EncryptedJSON):
                out.append((table.name, tuple(c.name for c in table.primary_key.columns), column.name))
    return out


def _raw(table: str, keys: tuple[str, ...], name: str) -> Any:
    """The table as plain text columns: values read and written without sealing."""
    return sa.table(table, *(sa.column(k) for k in keys), sa.column(name, sa.Text()))


def _stale(t: Any, name: str, current: int) -> Any:
    return sa.and_(t.c[name].is_not(None), ~t.c[name].startswith(f"v{current}:", autoescape=True))


def status(session: Session) -> dict[str, Any]:
    """The current key version, where the keys come from, and per column how many values are
    sealed and how many still use an older key."""
    ring = keyring()
    columns = {}
    for table, keys, name in sealed_columns():
        t = _raw(table, keys, name)
        sealed = session.scalar(sa.select(sa.func.count()).select_from(t).where(t.c[name].is_not(None)))
        older = session.scalar(sa.select(sa.func.count()).select_from(t).where(_stale(t, name, ring.current)))
        columns[f"{table}.{name}"] = {"sealed": int(sealed or 0), "older_key": int(older or 0)}
    return {"current_version": ring.current, "versions": sorted(ring.keys), "origin": ring.origin, "columns": columns}


def rotate(
    sessions: Callable[[], Session], *, on_batch: Callable[[str, int, int], None] | None = None
) -> dict[str, int]:
    """Re-seal every value whose key is not the current one. ``on_batch(column, done, total)``."""
    ring = keyring()
    done: dict[str, int] = {}
    for table, keys, name in sealed_columns():
        t = _raw(table, keys, name)
        label = f"{table}.{name}"
        with sessions() as session:
            total = int(session.scalar(sa.select(sa.func.count()).select_from(t).where(_stale(t, name, ring.current))))
        done[label] = 0
        if on_batch:
            on_batch(label, 0, total)
        pk = [t.c[k] for k in keys]
        change = (
            t.update().where(*(t.c[k] == sa.bindparam(f"k_{k}") for k in keys)).values({name: sa.bindparam("v_sealed")})
        )
        while True:
            with sessions() as session, session.begin():
                rows = session.execute(
                    sa.select(*pk, t.c[name]).where(_stale(t, name, ring.current)).order_by(*pk).limit(BATCH)
                ).all()
                if not rows:
                    break
                session.execute(
                    change,
                    [
                        {
                            **{f"k_{k}": v for k, v in zip(keys, row[:-1], strict=True)},
                            "v_sealed": ring.encrypt(ring.decrypt(row[-1])),
                        }
                        for row in rows
                    ],
                )
            done[label] += len(rows)
            if on_batch:
                on_batch(label, done[label], total)
    return done


__all__ = ["rotate", "sealed_columns", "status"]
