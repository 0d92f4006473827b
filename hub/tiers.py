"""Tiers (会员等级): a ladder reached by a qualifying amount (成长值) in a rolling window.

Rules, all deterministic from the orders, the ledger, the tier history and the evaluation time:

* **Qualifying amount** at time ``at`` over ``tier_policy.window_days`` (unset: lifetime):
  ``spend`` is the net amount (total less refunds) of orders placed in the window — a refund lowers
  it, a cancelled order counts nothing; ``points`` is the points orders earned in the window once
  released from pending, less what refunds took back. Redeeming or losing points never lowers it.
* **Upgrades** apply at every evaluation: a member whose amount reaches a higher tier moves up to
  it at once, skipping levels if the amount says so.
* **Downgrades** happen only at a review (``review``, once per ``tier_policy.review_every`` period,
  re-running it in the same period changes nothing), by at most one level, and not while the amount
  stays at or above the current tier's retention floor (保级: ``retain_spend`` / ``retain_points``,
  by default the tier's own threshold).
* **Overrides** (``set_override``) put a member on a tier until a date: evaluation never lowers them
  before then but still raises them; once lapsed the member takes the tier the rules give.
* **History**: a row per change — initial, upgrade, downgrade, override, override_expired — with
  the previous tier, the qualifying amount and the evaluation time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import programme as calendar
from hub.tables import (
    AuditLog,
    GoldenMember,
    LedgerEntryRow,
    MemberLink,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
    TierReview,
    utcnow,
)
from schemas import ProgrammeConfig, TierLevel
from schemas.errors import HubError

QUALIFYING_STATUSES = ("paid", "partially_refunded", "refunded")


@dataclass
class TierCounts:
    changed: int = 0
    per_tier: dict[str, int] = field(default_factory=dict)
    upgraded: int = 0
    downgraded: int = 0
    retained: int = 0  # kept their tier at a review thanks to the retention floor
    overrides_expired: int = 0
    period: str | None = None  # the review period, when this evaluation was a review


def _threshold(level: TierLevel, basis: str) -> Decimal:
    if basis == "points":
        return Decimal(level.min_points or 0)
    return level.min_spend


def _floor(level: TierLevel, basis: str) -> Decimal:
    if basis == "points":
        return Decimal(level.retain_points if level.retain_points is not None else (level.min_points or 0))
    return level.retain_spend if level.retain_spend is not None else level.min_spend


def tier_for(amount: Decimal, ladder: list[TierLevel], basis: str = "spend") -> TierLevel:
    """The highest tier whose threshold ``amount`` reaches (the ladder is validated sorted)."""
    reached = ladder[0]
    for level in ladder:
        if amount >= _threshold(level, basis):
            reached = level
    return reached


def _owners(session: Session) -> dict[tuple[str, str], str]:
    return {
        (source, source_id): member_id
        for source, source_id, member_id in session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id).join(
                MemberLink, MemberLink.staged_member_id == StagedMember.id
            )
        )
    }


def qualifying_spend(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Decimal]:
    """Net spend (total less refunds) per golden member, across every source, of orders placed in
    (since, until] — everything when unset."""
    owner = _owners(session)
    spend: dict[str, Decimal] = defaultdict(Decimal)
    query = select(
        StagedOrder.source, StagedOrder.member_source_id, StagedOrder.total_amount, StagedOrder.refunded_amount
    ).where(StagedOrder.status.in_(QUALIFYING_STATUSES))
    if since is not None:
        query = query.where(StagedOrder.ordered_at > since)
    if until is not None:
        query = query.where(StagedOrder.ordered_at <= until)
    for source, member_source_id, total, refunded in session.execute(query):
        member_id = owner.get((source, member_source_id or ""))
        if member_id is not None:
            spend[member_id] += total - refunded
    return spend


def _redirects(session: Session) -> dict[str, str]:
    merged = dict(
        session.execute(
            select(GoldenMember.member_id, GoldenMember.merged_into).where(GoldenMember.merged_into.is_not(None))
        ).all()
    )

    def follow(member_id: str) -> str:
        seen = set()
        while member_id in merged and member_id not in seen:
            seen.add(member_id)
            member_id = merged[member_id]
        return member_id

    return {member_id: follow(member_id) for member_id in merged}


def qualifying_points(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Decimal]:
    """Points orders earned in (since, until] and released by ``until``, less what refunds took back,
    per active member (a merged member's earnings count for the member they were merged into)."""
    entry = LedgerEntryRow
    query = select(
        entry.source, entry.document, entry.member_id, entry.points + entry.pending_points, entry.available_at
    ).where(entry.kind == "earn", entry.document.like("order:%"))
    if since is not None:
        query = query.where(entry.occurred_at > since)
    if until is not None:
        query = query.where(entry.occurred_at <= until)
    earned: dict[tuple[str, str], tuple[str, int]] = {}
    for source, document, member_id, points, available_at in session.execute(query):
        if available_at is None or until is None or available_at <= until:
            earned[(source, document)] = (member_id, int(points))
    reversals = select(entry.source, entry.ref, entry.points + entry.pending_points).where(
        entry.kind == "reverse", entry.ref.like("order:%")
    )
    if until is not None:
        reversals = reversals.where(entry.occurred_at <= until)
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for source, ref, points in session.execute(reversals):
        taken[(source, ref)] -= int(points)
    redirect = _redirects(session)
    result: dict[str, Decimal] = defaultdict(Decimal)
    for key, (member_id, points) in earned.items():
        result[redirect.get(member_id, member_id)] += points - taken.get(key, 0)
    return result


def qualifying_amounts(session: Session, programme: ProgrammeConfig, at: datetime) -> dict[str, Decimal]:
    policy = programme.tier_policy
    since = at - timedelta(days=policy.window_days) if policy.window_days else None
    if policy.basis == "points":
        return qualifying_points(session, since=since, until=at)
    return qualifying_spend(session, since=since, until=at)


def current_tiers(session: Session) -> dict[str, str]:
    latest: dict[str, str] = {}
    rows = session.execute(select(TierAssignmentRow.member_id, TierAssignmentRow.tier).order_by(TierAssignmentRow.id))
    for member_id, tier in rows:
        latest[member_id] = tier
    return latest


def _latest_rows(session: Session) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for row in session.execute(
        select(
            TierAssignmentRow.member_id, TierAssignmentRow.tier, TierAssignmentRow.reason, TierAssignmentRow.expires_at
        ).order_by(TierAssignmentRow.id)
    ):
        latest[row.member_id] = row
    return latest


def evaluate(
    session: Session,
    programme: ProgrammeConfig,
    *,
    at: datetime | None = None,
    review: bool = False,
    actor: str = "system",
) -> TierCounts:
    """Give every active member the tier the rules say at ``at`` (default: now). Without ``review``
    only upgrades, first tiers and lapsed overrides apply; use ``review_tiers`` for downgrades."""
    at = at or utcnow()
    basis = programme.tier_policy.basis
    ladder = programme.tiers
    rank = {level.name: i for i, level in enumerate(ladder)}
    counts = TierCounts()
    amounts = qualifying_amounts(session, programme, at)
    latest = _latest_rows(session)
    members = session.scalars(
        select(GoldenMember.member_id).where(GoldenMember.status == "active").order_by(GoldenMember.seq)
    )
    for member_id in members:
        amount = amounts.get(member_id, Decimal(0))
        reached = tier_for(amount, ladder, basis)
        row = latest.get(member_id)
        new, reason = reached.name, "initial"
        if row is not None:
            current = rank.get(row.tier, -1)
            new, reason = row.tier, ""
            if row.reason == "override" and row.expires_at is not None and row.expires_at <= at:
                new, reason = reached.name, "override_expired"
                counts.overrides_expired += 1
            elif rank[reached.name] > current:
                new, reason = reached.name, "upgrade"
            elif review and rank[reached.name] < current and row.reason != "override":
                if amount >= _floor(ladder[current], basis):
                    counts.retained += 1
                else:
                    new, reason = ladder[current - 1].name, "downgrade"
        counts.per_tier[new] = counts.per_tier.get(new, 0) + 1
        if reason:
            session.add(
                TierAssignmentRow(
                    member_id=member_id,
                    tier=new,
                    previous_tier=row.tier if row is not None else None,
                    qualifying_amount=amount,
                    reason=reason,
                    assigned_at=at,
                    actor=actor,
                )
            )
            counts.changed += int(row is None or row.tier != new)
            counts.upgraded += int(reason == "upgrade")
            counts.downgraded += int(reason == "downgrade")
    session.flush()
    return counts


def review_tiers(session: Session, programme: ProgrammeConfig, *, at: datetime | None = None) -> TierCounts:
    """The periodic downgrade review: once per ``tier_policy.review_every`` period (in the programme's
    time zone). Run again in the same period, it only applies upgrades."""
    at = at or utcnow()
    period, _start = calendar.period_of(programme, at, programme.tier_policy.review_every)
    done = session.scalar(select(TierReview.id).where(TierReview.period == period))
    counts = evaluate(session, programme, at=at, review=done is None)
    if done is None:
        session.add(
            TierReview(
                period=period,
                reviewed_at=at,
                downgraded=counts.downgraded,
                retained=counts.retained,
                per_tier=counts.per_tier,
            )
        )
        session.flush()
        counts.period = period
    return counts


def set_override(
    session: Session,
    programme: ProgrammeConfig,
    member_id: str,
    tier: str,
    *,
    until: datetime,
    reason: str,
    actor: str,
    at: datetime | None = None,
) -> None:
    """Put a member on ``tier`` until ``until`` (a steward's decision, audited)."""
    at = at or utcnow()
    names = [level.name for level in programme.tiers]
    if tier not in names:
        raise HubError(f"no tier {tier!r}; the ladder is {', '.join(names)}")
    if until <= at:
        raise HubError("a tier override must end after it starts")
    if not reason.strip():
        raise HubError("a tier override needs a reason")
    previous = current_tiers(session).get(member_id)
    amounts = qualifying_amounts(session, programme, at)
    session.add(
        TierAssignmentRow(
            member_id=member_id,
            tier=tier,
            previous_tier=previous,
            qualifying_amount=amounts.get(member_id, Decimal(0)),
            reason="override",
            assigned_at=at,
            expires_at=until,
            actor=actor,
        )
    )
    session.add(
        AuditLog(
            actor=actor,
            action="tier.override",
            entity="member",
            entity_id=member_id,
            before={"tier": previous},
            after={"tier": tier, "until": until.isoformat(), "reason": reason},
        )
    )
    session.flush()


def history(session: Session, member_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(TierAssignmentRow).where(TierAssignmentRow.member_id == member_id).order_by(TierAssignmentRow.id)
    )
    return [
        {
            "at": r.assigned_at,
            "tier": r.tier,
            "previous": r.previous_tier,
            "reason": r.reason,
            "qualifying_amount": r.qualifying_amount,
            "expires_at": r.expires_at,
            "actor": r.actor,
        }
        for r in rows
    ]
