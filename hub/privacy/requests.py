"""Privacy requests: export everything the hub holds about a person, and forget a person.

``export`` gathers, for one golden member and every id merged into it: the golden record, each
source record (staged values, the raw payload as the source sent it, the link and its evidence),
the person's orders, the points ledger, lots and balance, tier history, pins, review items, id
changes, write-back state and the audit trail. Reading all that is itself audited.

``forget`` erases the person's contact data and keeps what the books need:

- gone: the source members (staged rows, links, review items, steward constraints), their raw
  records' payloads (members and orders), quarantine entries, webhooks the sources sent about
  them, pins, write-back state; the golden record keeps its id and status ``forgotten`` with every
  field emptied;
- kept, pseudonymised: ledger entries, lots, balances and tier history stay (they are the
  programme's liabilities, and the ledger is append-only) under the golden id, an opaque number
  that nothing in the hub ties to the person any more; orders keep their amounts without the
  source's customer id; audit entries about the person keep who did what, with values redacted;
- a tombstone per key the person was known by (each source's id, e-mail, resident ID — as keyed
  hashes; not the phone, which families share), so a later sync does not bring them back
  (hub.privacy.guard).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from hub import ledger, tiers
from hub.privacy.crypto import PrivacyError, keyring
from hub.privacy.guard import erase_records, tombstone_keys
from hub.resolve import active_member_id
from hub.search import ContactRules
from hub.tables import (
    AuditLog,
    Base,
    GoldenFieldPin,
    GoldenMember,
    MatchConstraint,
    MemberIdChange,
    MemberLink,
    PrivacyTombstone,
    QuarantineRow,
    ReviewQueueItem,
    SourceRecordRow,
    StagedMember,
    StagedOrder,
    WritebackState,
    utcnow,
)

_MEMBER_ID = re.compile(r"MH\d{8}", re.IGNORECASE)
REDACTED = "[erased]"
PII_KEYS = frozenset({"phone", "phone_raw", "email", "full_name", "given_name", "family_name", "birthday", "value"})
"""Keys whose values an audit entry about a forgotten person loses (a pin's ``value`` included)."""


# ------------------------------------------------------------------------------------------ finding
def find_member(session: Session, ref: str, *, rules: ContactRules = ContactRules()) -> str:
    """The active golden id behind a member id, a phone or an e-mail (by blind index)."""
    text = ref.strip()
    if _MEMBER_ID.fullmatch(text):
        member_id = active_member_id(session, text.upper())
        if session.scalar(select(GoldenMember.member_id).where(GoldenMember.member_id == member_id)) is None:
            raise PrivacyError(f"no member {ref!r}; golden member ids look like MH00000001")
        return member_id
    ring = keyring()
    kind = "email" if "@" in text else "phone"
    value = rules.value(kind, text)
    if value is None:
        raise PrivacyError(f"{ref!r} is neither a member id (MH00000001), a valid phone number nor an e-mail address")
    key = ring.blind_index(kind, value)
    column = StagedMember.phone_bidx if kind == "phone" else StagedMember.email_bidx
    golden_column = GoldenMember.phone_bidx if kind == "phone" else GoldenMember.email_bidx
    found = set(
        session.scalars(
            select(MemberLink.member_id)
            .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
            .where(column == key)
        )
    )
    found |= set(session.scalars(select(GoldenMember.member_id).where(golden_column == key)))
    active = sorted({active_member_id(session, m) for m in found})
    if not active:
        raise PrivacyError(f"no member holds that {kind}")
    if len(active) > 1:
        raise PrivacyError(f"{len(active)} members hold that {kind} ({', '.join(active)}); name one by its id")
    return active[0]


def person_ids(session: Session, member_id: str) -> list[str]:
    """``member_id`` and every golden id merged into it, directly or through others."""
    ids, todo = {member_id}, [member_id]
    while todo:
        current = todo.pop()
        for old in session.scalars(
            select(MemberIdChange.old_member_id).where(
                MemberIdChange.new_member_id == current, MemberIdChange.kind == "merge"
            )
        ):
            if old not in ids:
                ids.add(old)
                todo.append(old)
    return sorted(ids)


def _staged(session: Session, ids: list[str]) -> list[StagedMember]:
    return list(
        session.scalars(
            select(StagedMember)
            .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
            .where(MemberLink.member_id.in_(ids))
            .order_by(StagedMember.id)
        )
    )


def _orders(session: Session, staged: list[StagedMember]) -> list[StagedOrder]:
    keys = sorted({(m.source, m.source_id) for m in staged})
    out: list[StagedOrder] = []
    for start in range(0, len(keys), 500):
        out += session.scalars(
            select(StagedOrder)
            .where(tuple_(StagedOrder.source, StagedOrder.member_source_id).in_(keys[start : start + 500]))
            .order_by(StagedOrder.id)
        )
    return out


def _row(obj: Any, *skip: str) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in skip}


def _audit_about(session: Session, ids: list[str], quarantine_ids: Iterable[int]) -> list[AuditLog]:
    conditions = [AuditLog.entity_id.in_(ids)]
    quarantined = [str(i) for i in quarantine_ids]
    if quarantined:
        conditions.append((AuditLog.entity == "quarantine") & AuditLog.entity_id.in_(quarantined))
    return list(session.scalars(select(AuditLog).where(or_(*conditions)).order_by(AuditLog.id)))


# ------------------------------------------------------------------------------------------ export
def export(session: Session, ref: str, *, actor: str, rules: ContactRules = ContactRules()) -> dict[str, Any]:
    """Everything the hub holds about the person behind ``ref``; the read is written to the audit log."""
    member_id = find_member(session, ref, rules=rules)
    ids = person_ids(session, member_id)
    golden = {g.member_id: g for g in session.scalars(select(GoldenMember).where(GoldenMember.member_id.in_(ids)))}
    staged = _staged(session, ids)
    links = {
        link.staged_member_id: link
        for link in session.scalars(select(MemberLink).where(MemberLink.staged_member_id.in_([m.id for m in staged])))
    }
    raw = {
        r.id: r
        for r in session.scalars(
            select(SourceRecordRow).where(SourceRecordRow.id.in_([m.source_record_id for m in staged]))
        )
    }
    orders = _orders(session, staged)
    order_raw = {
        r.id: r.payload
        for r in session.scalars(
            select(SourceRecordRow).where(SourceRecordRow.id.in_([o.source_record_id for o in orders]))
        )
    }
    staged_ids = [m.id for m in staged]
    record_ids = [m.source_record_id for m in staged] + [o.source_record_id for o in orders]
    quarantine = list(session.scalars(select(QuarantineRow).where(QuarantineRow.source_record_id.in_(record_ids))))
    review = list(
        session.scalars(
            select(ReviewQueueItem).where(
                or_(ReviewQueueItem.staged_member_a.in_(staged_ids), ReviewQueueItem.staged_member_b.in_(staged_ids))
            )
        )
    )
    data: dict[str, Any] = {
        "member_id": member_id,
        "merged_ids": [i for i in ids if i != member_id],
        "exported_at": utcnow(),
        "golden": [_row(golden[i], "phone_bidx", "email_bidx") for i in ids if i in golden],
        "source_records": [
            {
                "source": m.source,
                "source_id": m.source_id,
                "staged": _row(m, "phone_bidx", "email_bidx"),
                "raw": raw[m.source_record_id].payload if m.source_record_id in raw else None,
                "first_seen_at": raw[m.source_record_id].first_seen_at if m.source_record_id in raw else None,
                "link": _row(links[m.id], "staged_member_id") if m.id in links else None,
            }
            for m in staged
        ],
        "orders": [{**_row(o), "raw": order_raw.get(o.source_record_id)} for o in orders],
        "points": {i: ledger.statement(session, i) for i in ids},
        "lots": {i: [asdict(lot) for lot in ledger.lots(session, i, open_only=False)] for i in ids},
        "tiers": {i: tiers.history(session, i) for i in ids},
        "id_changes": [
            _row(c)
            for c in session.scalars(
                select(MemberIdChange)
                .where(or_(MemberIdChange.old_member_id.in_(ids), MemberIdChange.new_member_id.in_(ids)))
                .order_by(MemberIdChange.id)
            )
        ],
        "pins": [_row(p) for p in session.scalars(select(GoldenFieldPin).where(GoldenFieldPin.member_id.in_(ids)))],
        "review_queue": [_row(item) for item in review],
        "writeback": [
            _row(w) for w in session.scalars(select(WritebackState).where(WritebackState.member_id.in_(ids)))
        ],
        "quarantine": [_row(q) for q in quarantine],
        "tombstones": [
            _row(t, "key") for t in session.scalars(select(PrivacyTombstone).where(PrivacyTombstone.member_id.in_(ids)))
        ],
        "audit": [_row(a) for a in _audit_about(session, ids, [q.id for q in quarantine])],
        "other": _other_tables(session, ids),
    }
    webhooks = _webhook_events(staged)
    if webhooks is not None:
        data["webhook_events"] = [dict(r) for r in session.execute(select(webhooks[0]).where(webhooks[1])).mappings()]
    sections = {k: len(v) for k, v in data.items() if isinstance(v, list | dict) and k != "points"}
    session.add(
        AuditLog(
            actor=actor,
            action="privacy.export",
            entity="golden_member",
            entity_id=member_id,
            before=None,
            after={"member_ids": ids, "sections": sections},
        )
    )
    session.flush()
    return data


_COVERED = {
    "golden_members",
    "member_links",
    "member_id_changes",
    "ledger_entries",
    "points_lots",
    "tier_assignments",
    "golden_field_pins",
    "writeback_state",
    "privacy_tombstones",
}


def _other_tables(session: Session, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Rows about the person in every other table keyed by ``member_id`` (segments, metrics, events…)."""
    out = {}
    for table in Base.metadata.sorted_tables:
        if table.name in _COVERED or "member_id" not in table.c:
            continue
        rows = session.execute(select(table).where(table.c.member_id.in_(ids))).mappings().all()
        if rows:
            out[table.name] = [dict(r) for r in rows]
    return out


def _webhook_events(staged: list[StagedMember]) -> Any:
    """The query for webhooks the sources sent about the person's records (when the hub keeps them)."""
    table = Base.metadata.tables.get("webhook_events")
    if table is None or not {"system", "object_id"} <= set(table.c.keys()) or not staged:
        return None
    keys = sorted({(m.source, m.source_id) for m in staged})
    return table, tuple_(table.c.system, table.c.object_id).in_(keys)


# ------------------------------------------------------------------------------------------ forget
def forget(
    session: Session, ref: str, *, actor: str, reason: str | None = None, rules: ContactRules = ContactRules()
) -> dict[str, Any]:
    """Erase the person behind ``ref`` (see the module's docstring for what stays). Idempotent."""
    member_id = find_member(session, ref, rules=rules)
    ids = person_ids(session, member_id)
    ring = keyring()
    staged = _staged(session, ids)
    golden = list(session.scalars(select(GoldenMember).where(GoldenMember.member_id.in_(ids))))
    keys: set[tuple[str, str]] = set()
    for m in staged:
        keys |= tombstone_keys(ring, _row(m))
    keys |= {("email", g.email_bidx) for g in golden if g.email_bidx}
    orders = _orders(session, staged)
    staged_ids = [m.id for m in staged]
    member_records = [m.source_record_id for m in staged]
    order_records = [o.source_record_id for o in orders]

    quarantine_ids = list(
        session.scalars(
            select(QuarantineRow.id).where(QuarantineRow.source_record_id.in_(member_records + order_records))
        )
    )
    for item in _audit_about(session, ids, quarantine_ids):
        item.before, item.after = _redact(item.before), _redact(item.after)
    erase_records(session, member_records + order_records)
    webhooks = _webhook_events(staged)
    if webhooks is not None:
        session.execute(delete(webhooks[0]).where(webhooks[1]))
    for start in range(0, len(staged_ids), 500):
        chunk = staged_ids[start : start + 500]
        for model in (ReviewQueueItem, MatchConstraint):
            session.execute(
                delete(model).where(or_(model.staged_member_a.in_(chunk), model.staged_member_b.in_(chunk)))
            )
        session.execute(delete(MemberLink).where(MemberLink.staged_member_id.in_(chunk)))
        session.execute(delete(StagedMember).where(StagedMember.id.in_(chunk)))
    if orders:
        session.execute(
            update(StagedOrder)
            .where(StagedOrder.id.in_([o.id for o in orders]))
            .values(member_source_id=None)
            .execution_options(synchronize_session=False)
        )
    session.execute(delete(GoldenFieldPin).where(GoldenFieldPin.member_id.in_(ids)))
    session.execute(delete(WritebackState).where(WritebackState.member_id.in_(ids)))
    now = utcnow()
    for g in golden:
        g.full_name = g.phone = g.email = g.birthday = g.city = None
        g.lineage = {}
        if g.status == "active":
            g.status = "forgotten"
        g.updated_at = now
    known = set(
        session.execute(
            select(PrivacyTombstone.kind, PrivacyTombstone.key).where(PrivacyTombstone.key.in_([k for _, k in keys]))
        ).all()
    )
    new = sorted(keys - {tuple(k) for k in known})
    session.add_all(
        PrivacyTombstone(kind=kind, key=key, member_id=member_id, created_at=now, created_by=actor) for kind, key in new
    )
    counts = {
        "member_id": member_id,
        "member_ids": ids,
        "source_members_erased": len(staged),
        "raw_records_erased": len(member_records) + len(order_records),
        "orders_pseudonymised": len(orders),
        "ledger_entries_kept": sum(len(ledger.history(session, i)) for i in ids),
        "tombstones": len(new),
    }
    session.add(
        AuditLog(
            actor=actor,
            action="privacy.forget",
            entity="golden_member",
            entity_id=member_id,
            before=None,
            after={**{k: v for k, v in counts.items() if k != "member_id"}, "reason": reason},
        )
    )
    session.flush()
    _drop_from_index(session)
    return counts


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if k in PII_KEYS and v is not None else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _drop_from_index(session: Session) -> None:
    """Every process's resolver index still holds the erased values and counts the member as active:
    each rebuilds it on its next run."""
    from hub.resolve import invalidate_indexes

    invalidate_indexes(session)


__all__ = ["PII_KEYS", "export", "find_member", "forget", "person_ids"]
