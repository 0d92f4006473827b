"""Links and golden members as plain rows for hub.resolve, written in bulk.

A run changes many rows the same way (10,000 new members: 10,000 new links and golden members), so
it keeps them as plain objects that remember which columns changed, then writes each kind of change
with one statement: new rows handed to the driver at once (``hub.db.insert_many``: COPY on
PostgreSQL), changed columns as one executemany UPDATE per set of columns. A value that did not
change is not written: phone and e-mail are compared by blind index, so an unchanged one is neither
decrypted nor sealed again; hub.resolve explains a link again only when its pair or values changed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from hub.db import insert_many, update_many
from hub.privacy.crypto import blind_index
from hub.tables import GoldenMember, MemberLink

UNREAD: Any = object()
"""A stored value this run has not read (a link's evidence, until it is compared before writing)."""
SEALED = ("phone", "email")
GOLDEN_KEYS = ("seq", "member_id", "status", "merged_into")
"""What a run reads of every golden member it may change."""
GOLDEN_VALUES = ("full_name", "birthday", "city", "phone_bidx", "email_bidx", "lineage")
"""What it reads of those whose values it chooses again: everything but the sealed values, which it
compares by blind index."""


@dataclass(slots=True, eq=False)
class LinkRow:
    staged_member_id: int
    member_id: str
    linked_at: datetime
    rule: str | None = None
    linked_to: Any = UNREAD  # the record its stored evidence names, when read
    evidence: Any = UNREAD  # only once this run explains it
    new: bool = False
    changed: set[str] = field(default_factory=set)

    def move(self, member_id: str, at: datetime | None = None) -> None:
        self.member_id = member_id
        self.changed.add("member_id")
        if at is not None:
            self.linked_at = at
            self.changed.add("linked_at")

    def explain(self, rule: str, evidence: dict[str, Any]) -> None:
        self.rule, self.evidence = rule, evidence
        self.changed.update(("rule", "evidence"))


@dataclass(slots=True, eq=False)
class GoldenRow:
    seq: int
    member_id: str
    status: str = "active"
    merged_into: str | None = None
    full_name: str | None = None
    birthday: date | None = None
    city: str | None = None
    phone_bidx: str | None = None
    email_bidx: str | None = None
    lineage: dict[str, Any] | None = None
    phone: str | None = None  # only once set by this run
    email: str | None = None
    new: bool = False
    changed: set[str] = field(default_factory=set)

    def set(self, name: str, value: Any) -> bool:
        """Give a column a value; True when it differs from the stored one."""
        if name in SEALED:
            index = blind_index(name, value)
            if index == getattr(self, f"{name}_bidx") and value != "":  # "" and None have no index
                return False
            setattr(self, name, value)
            setattr(self, f"{name}_bidx", index)
            self.changed.update((name, f"{name}_bidx"))
            return True
        if getattr(self, name) == value:
            return False
        setattr(self, name, value)
        self.changed.add(name)
        return True


def write_golden(session: Session, rows: list[GoldenRow], now: datetime) -> None:
    """The new golden members (inserted) and the changed columns of the others."""
    table = GoldenMember.__table__
    names = (*GOLDEN_KEYS, *GOLDEN_VALUES, *SEALED)
    fresh = [{**{n: getattr(r, n) for n in names}, "created_at": now, "updated_at": now} for r in rows if r.new]
    for row in fresh:
        row["lineage"] = row["lineage"] or {}
    insert_many(session, table, fresh)
    _update(session, table, "member_id", [r for r in rows if not r.new and r.changed], now)


def write_links(session: Session, rows: list[LinkRow]) -> None:
    """The new links (inserted) and the changed columns of the others."""
    table = MemberLink.__table__
    fresh = [
        {"staged_member_id": r.staged_member_id, "member_id": r.member_id, "rule": r.rule or "new",
         "evidence": {} if r.evidence is UNREAD else r.evidence, "linked_at": r.linked_at}
        for r in rows if r.new
    ]  # fmt: skip
    insert_many(session, table, fresh)
    _update(session, table, "staged_member_id", [r for r in rows if not r.new and r.changed], None)


def _update(session: Session, table: Any, key: str, rows: list[Any], now: datetime | None) -> None:
    """One bulk UPDATE for each set of changed columns (rows that changed the same columns)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        columns = tuple(sorted(row.changed))
        values = {key: getattr(row, key), **{c: getattr(row, c) for c in columns}}
        if now is not None:
            values["updated_at"] = now
        groups[columns].append(values)
    for values in groups.values():
        update_many(session, table, key, values)
