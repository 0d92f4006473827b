"""Tiers (会员等级), skeleton edition: lifetime qualifying spend on a configurable ladder.
A row is added to the tier history whenever a member's tier changes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.tables import GoldenMember, MemberLink, StagedMember, StagedOrder, TierAssignmentRow
from schemas import ProgrammeConfig, TierLevel

QUALIFYING_STATUSES = ("paid", "partially_refunded", "refunded")


@dataclass
class TierCounts:
    changed: int = 0
    per_tier: dict[str, int] = field(default_factory=dict)


def tier_for(amount: Decimal, ladder: list[TierLevel]) -> TierLevel:
    """The highest tier whose threshold ``amount`` reaches (the ladder is validated sorted)."""
    reached = ladder[0]
    for level in ladder:
        if amount >= level.min_spend:
            reached = level
    return reached


def qualifying_spend(session: Session) -> dict[str, Decimal]:
    """Net spend (total less refunds) per golden member, across every source."""
    owner = {
        (source, source_id): member_id
        for source, source_id, member_id in session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id).join(
                MemberLink, MemberLink.staged_member_id == StagedMember.id
            )
        )
    }
    spend: dict[str, Decimal] = defaultdict(Decimal)
    rows = session.execute(
        select(
            StagedOrder.source, StagedOrder.member_source_id, StagedOrder.total_amount, StagedOrder.refunded_amount
        ).where(StagedOrder.status.in_(QUALIFYING_STATUSES))
    )
    for source, member_source_id, total, refunded in rows:
        member_id = owner.get((source, member_source_id or ""))
        if member_id is not None:
            spend[member_id] += total - refunded
    return spend


def current_tiers(session: Session) -> dict[str, str]:
    latest: dict[str, str] = {}
    rows = session.execute(select(TierAssignmentRow.member_id, TierAssignmentRow.tier).order_by(TierAssignmentRow.id))
    for member_id, tier in rows:
        latest[member_id] = tier
    return latest


def evaluate(session: Session, programme: ProgrammeConfig) -> TierCounts:
    counts = TierCounts()
    spend = qualifying_spend(session)
    current = current_tiers(session)
    rank = {level.name: i for i, level in enumerate(programme.tiers)}
    for member_id in session.scalars(select(GoldenMember.member_id).where(GoldenMember.status == "active")):
        amount = spend.get(member_id, Decimal(0))
        level = tier_for(amount, programme.tiers)
        counts.per_tier[level.name] = counts.per_tier.get(level.name, 0) + 1
        before = current.get(member_id)
        if before != level.name:
            reason = (
                "initial" if before is None else ("upgrade" if rank[level.name] > rank.get(before, -1) else "downgrade")
            )
            session.add(
                TierAssignmentRow(member_id=member_id, tier=level.name, qualifying_amount=amount, reason=reason)
            )
            counts.changed += 1
    return counts
