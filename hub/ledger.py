"""The points ledger (积分流水): append-only entries, balances derived from them.

Every entry has a natural key (source, document, kind); posting the same key again with the same
content changes nothing, and with different content is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.tables import LedgerEntryRow, MemberLink, StagedMember, StagedOrder, utcnow
from schemas import EntryKind, LedgerEntry
from schemas.errors import LedgerError

EARNING_STATUSES = ("paid", "partially_refunded", "refunded", "cancelled")


@dataclass
class PostCounts:
    entries: int = 0
    points: int = 0
    unattributed_orders: int = 0  # orders with no known member (guests)


def _payload_hash(entry: LedgerEntry) -> str:
    text = "|".join(
        str(v) for v in (entry.kind.value, entry.points, entry.store_code, entry.channel, entry.occurred_at.isoformat())
    )
    return hashlib.sha256(text.encode()).hexdigest()


def post(session: Session, entry: LedgerEntry) -> bool:
    """Append ``entry`` unless its natural key is already there. True when it was appended."""
    existing = session.scalar(
        select(LedgerEntryRow).where(
            LedgerEntryRow.source == entry.source,
            LedgerEntryRow.document == entry.document,
            LedgerEntryRow.kind == entry.kind.value,
        )
    )
    digest = _payload_hash(entry)
    if existing is not None:
        if existing.payload_hash != digest:
            raise LedgerError(
                f"ledger entry {entry.source}/{entry.document}/{entry.kind.value} was already posted with "
                f"different content ({existing.points} points); refusing to change it — post an adjustment"
            )
        return False
    session.add(
        LedgerEntryRow(
            member_id=entry.member_id,
            kind=entry.kind.value,
            points=entry.points,
            store_code=entry.store_code,
            channel=entry.channel.value if entry.channel else None,
            source=entry.source,
            document=entry.document,
            payload_hash=digest,
            actor=entry.actor,
            occurred_at=entry.occurred_at,
        )
    )
    return True


def balance(session: Session, member_id: str) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(LedgerEntryRow.points), 0)).where(LedgerEntryRow.member_id == member_id)
        )
    )


def balances(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(LedgerEntryRow.member_id, func.sum(LedgerEntryRow.points)).group_by(LedgerEntryRow.member_id)
    )
    return {member_id: int(total) for member_id, total in rows}


def points_for(amount: Decimal, points_per_unit: int) -> int:
    """Whole points for an amount: 1 point per whole currency unit by default, never rounded up."""
    return int((amount * points_per_unit).to_integral_value(rounding=ROUND_FLOOR))


def post_orders(session: Session, points_per_unit: int) -> PostCounts:
    """Earn points for every attributed order, and reverse what refunds and cancellations took back.

    An order earns once (document ``order:ID``); each later refund state posts one reversal
    (``order:ID/refund:AMOUNT:STATUS``) for the part not yet reversed, so replays change nothing.
    """
    counts = PostCounts()
    owner = {
        (source, source_id): member_id
        for source, source_id, member_id in session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id).join(
                MemberLink, MemberLink.staged_member_id == StagedMember.id
            )
        )
    }
    earned: dict[tuple[str, str], int] = {}
    reversed_: dict[tuple[str, str], int] = {}
    for source, document, kind, points in session.execute(
        select(LedgerEntryRow.source, LedgerEntryRow.document, LedgerEntryRow.kind, LedgerEntryRow.points).where(
            LedgerEntryRow.kind.in_([EntryKind.earn.value, EntryKind.reverse.value])
        )
    ):
        order_document = document.split("/refund:", 1)[0]
        if kind == EntryKind.earn.value:
            earned[(source, order_document)] = points
        else:
            reversed_[(source, order_document)] = reversed_.get((source, order_document), 0) - points
    orders = select(StagedOrder).where(StagedOrder.status.in_(EARNING_STATUSES)).order_by(StagedOrder.id)
    for order in session.scalars(orders):
        member_id = owner.get((order.source, order.member_source_id or ""))
        if member_id is None:
            counts.unattributed_orders += 1
            continue
        document = f"order:{order.source_id}"
        key = (order.source, document)
        points = earned.get(key)
        if points is None:
            if order.status == "cancelled":
                continue  # never earned, nothing to take back
            points = points_for(order.total_amount, points_per_unit)
            _append(session, counts, member_id, EntryKind.earn, points, order, document)
        net = Decimal(0) if order.status == "cancelled" else order.total_amount - order.refunded_amount
        shortfall = points - points_for(net, points_per_unit) - reversed_.get(key, 0)
        if shortfall > 0:
            _append(
                session,
                counts,
                member_id,
                EntryKind.reverse,
                -shortfall,
                order,
                f"{document}/refund:{order.refunded_amount}:{order.status}",
            )
    return counts


def _append(
    session: Session,
    counts: PostCounts,
    member_id: str,
    kind: EntryKind,
    points: int,
    order: StagedOrder,
    document: str,
) -> None:
    entry = LedgerEntry(
        member_id=member_id,
        kind=kind,
        points=points,
        store_code=order.store_code,
        channel=order.channel,
        source=order.source,
        document=document,
        occurred_at=order.updated_at or order.ordered_at,
    )
    if post(session, entry):
        counts.entries += 1
        counts.points += points


def transfer_balance(
    session: Session, from_member: str, to_member: str, *, actor: str = "system", at: datetime | None = None
) -> int:
    """Move a merged member's whole balance to the surviving member, as two audited entries."""
    moved = balance(session, from_member)
    if moved == 0:
        return 0
    when = at or utcnow()
    document = f"merge:{from_member}->{to_member}"
    for member_id, points, suffix in ((from_member, -moved, "out"), (to_member, moved, "in")):
        post(
            session,
            LedgerEntry(
                member_id=member_id,
                kind=EntryKind.transfer,
                points=points,
                source="hub",
                document=f"{document}:{suffix}",
                actor=actor,
                occurred_at=when,
            ),
        )
    session.flush()
    return moved
