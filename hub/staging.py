"""Turning stored source records into canonical members and orders through their mappings.

A record that fails its mapping or validation goes to quarantine with the failing field and a
readable reason, and never blocks the rest of the batch. Only records whose content changed since
they were last staged are mapped again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hub.normalise import email_key, full_name, name_text, phone_e164
from hub.tables import QuarantineRow, SourceRecordRow, StagedMember, StagedOrder
from mappings import Mapping
from schemas import Member, Order
from schemas.errors import MappingError

BATCH = 2000


@dataclass
class StageCounts:
    members: int = 0
    orders: int = 0
    quarantined: int = 0
    released: int = 0  # records that left quarantine because they now map cleanly


def stage(
    session: Session,
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    *,
    region: str = "CN",
    on_batch: Callable[[int], None] | None = None,
) -> StageCounts:
    """Stage every new or changed source record. ``kinds`` maps connector name -> system kind."""
    counts = StageCounts()
    pending = (
        select(SourceRecordRow)
        .where(or_(SourceRecordRow.staged_hash.is_(None), SourceRecordRow.staged_hash != SourceRecordRow.content_hash))
        .order_by(SourceRecordRow.id)
    )
    last_id = 0
    while True:
        rows = list(session.scalars(pending.where(SourceRecordRow.id > last_id).limit(BATCH)))
        if not rows:
            break
        batch = _Batch.load(session, [row.id for row in rows])
        for row in rows:
            mapping = mappings.get((kinds.get(row.source, row.source), row.stream))
            if mapping is None:
                _quarantine(session, batch, row, None, f"no mapping for {row.source}.{row.stream}", counts)
                continue
            _stage_one(session, batch, row, mapping, region, counts)
        last_id = rows[-1].id
        session.flush()
        if on_batch:
            on_batch(len(rows))
    return counts


@dataclass
class _Batch:
    """What already exists for a batch of source records, fetched in three queries, not 3 per record."""

    members: dict[int, StagedMember]
    orders: dict[int, StagedOrder]
    quarantined: dict[int, QuarantineRow]

    @classmethod
    def load(cls, session: Session, ids: list[int]) -> _Batch:
        def by_record(model: Any) -> dict[int, Any]:
            return {
                r.source_record_id: r for r in session.scalars(select(model).where(model.source_record_id.in_(ids)))
            }

        return cls(by_record(StagedMember), by_record(StagedOrder), by_record(QuarantineRow))


def _stage_one(
    session: Session, batch: _Batch, row: SourceRecordRow, mapping: Mapping, region: str, counts: StageCounts
) -> None:
    try:
        values = mapping.apply(row.payload)
        values["source"] = row.source
        model = Member.model_validate(values) if mapping.target == "member" else Order.model_validate(values)
    except MappingError as exc:
        field = str(exc).split(":", 1)[0]
        _quarantine(session, batch, row, field, str(exc), counts)
        return
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _quarantine(session, batch, row, field, reasons, counts)
        return
    if isinstance(model, Member):
        _upsert(session, batch.members, StagedMember, row, _member_values(model, region))
        counts.members += 1
    else:
        _upsert(session, batch.orders, StagedOrder, row, _order_values(model))
        counts.orders += 1
    row.staged_hash = row.content_hash
    released = batch.quarantined.pop(row.id, None)
    if released is not None:
        session.delete(released)
        counts.released += 1


def _quarantine(
    session: Session, batch: _Batch, row: SourceRecordRow, field: str | None, reason: str, counts: StageCounts
) -> None:
    entry = batch.quarantined.get(row.id)
    if entry is None:
        entry = batch.quarantined[row.id] = QuarantineRow(source_record_id=row.id, source=row.source, stream=row.stream)
        session.add(entry)
    entry.external_id, entry.payload, entry.field, entry.reason = row.external_id, row.payload, field, reason
    row.staged_hash = row.content_hash  # quarantined is handled; `quarantine retry` stages it again
    counts.quarantined += 1


def _upsert(
    session: Session, existing_rows: dict[int, Any], model: type, row: SourceRecordRow, values: dict[str, Any]
) -> None:
    existing = existing_rows.get(row.id)
    if existing is None:
        session.add(model(source_record_id=row.id, **values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)


def _member_values(member: Member, region: str) -> dict[str, Any]:
    return {
        "source": member.source,
        "source_id": member.source_id,
        "channel": member.channel.value,
        "full_name": full_name(member.family_name, member.given_name, member.full_name),
        "given_name": name_text(member.given_name),
        "family_name": name_text(member.family_name),
        "phone_raw": member.phone,
        "phone": phone_e164(member.phone, region),
        "email": email_key(member.email),
        "birthday": member.birthday,
        "gender": member.gender,
        "city": name_text(member.city),
        "store_code": member.store_code,
        "marketing_consent": member.marketing_consent,
        "created_at": member.created_at,
        "updated_at": member.updated_at,
    }


def _order_values(order: Order) -> dict[str, Any]:
    return {
        "source": order.source,
        "source_id": order.source_id,
        "member_source_id": order.member_source_id,
        "store_code": order.store_code,
        "channel": order.channel.value,
        "status": order.status.value,
        "currency": order.total.currency,
        "total_amount": order.total.amount,
        "refunded_amount": order.refunded.amount if order.refunded else Decimal(0),
        "ordered_at": order.ordered_at,
        "updated_at": order.updated_at,
        "lines": {"items": [line.model_dump(mode="json") for line in order.lines]},
    }
