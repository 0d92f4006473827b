"""Automation triggers (营销自动化): events the hub produces for the chain's messaging tools.

Kinds, each emitted at most once per member and period (the unique key kind + member + period):

    birthday_month              the member's birthday falls in this local month         period 2025-06
    tier_upgraded               an upgrade in the last ``tag_days`` days                 period: the tier change
    retention_at_risk (保级)    below the tier's retention floor, review within N days   period: review period
    points_expiring             points lapsing within ``points_expiring_days``           period: first expiry day
    entered_dormant             entered the ``dormant_segment`` in the last tag_days     period: entry day
    first_cross_store_purchase  bought at a second store, last order within tag_days    period: once

Members who opted out of marketing (``member_metrics.marketing_consent`` not true) get none, and an
event whose member opted out before delivery is never sent. Events reach the CRMs as tags (through
``hub.segment_writeback``, while ``tag_until`` is ahead) and the configured URL as signed webhooks:
``X-MemberHub-Signature`` (``connectors.webhooks.memberhub_signature``), ``X-MemberHub-Event-Id``
for the receiver's de-duplication, retried with backoff; every attempt goes in ``webhook_deliveries``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import and_, select
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from connectors.webhooks import memberhub_signature
from hub import programme as calendar
from hub import tiers
from hub.tables import (
    MarketingEvent,
    MemberMetrics,
    PointsLot,
    SegmentChange,
    TierAssignmentRow,
    WebhookDelivery,
)
from schemas import ProgrammeConfig

EVENT_LABELS = {
    "birthday_month": "生日月",
    "tier_upgraded": "会员升级",
    "retention_at_risk": "保级预警",
    "points_expiring": "积分即将到期",
    "entered_dormant": "进入沉睡",
    "first_cross_store_purchase": "首次跨店消费",
}
DEFAULTS: dict[str, Any] = {
    "webhook_url": "",
    "webhook_secret": "",
    "points_expiring_days": 30,
    "retention_warning_days": 30,
    "tag_days": 30,
    "dormant_segment": "dormant",
    "attempts_per_run": 3,
    "max_attempts": 10,
}


def settings(triggers: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **{k: v for k, v in triggers.items() if v not in (None, "")}}


def tag_of(kind: str, prefix: str) -> str:
    return f"{prefix}{EVENT_LABELS[kind]}"


@dataclass
class Candidate:
    kind: str
    member_id: str
    period: str
    payload: dict[str, Any]
    tag_until: datetime | None


def _consenting(session: Session) -> dict[str, MemberMetrics]:
    return {m.member_id: m for m in session.scalars(select(MemberMetrics).where(MemberMetrics.marketing_consent))}


def candidates(session: Session, programme: ProgrammeConfig, config: dict[str, Any], now: datetime) -> list[Candidate]:
    """Every event the data calls for at ``now``, for members who consented (not yet de-duplicated)."""
    cfg = settings(config)
    members = _consenting(session)
    tag_days = timedelta(days=int(cfg["tag_days"]))
    found: list[Candidate] = []
    today = calendar.local_date(programme, now)
    month_end = _month_start(programme, today, 1)
    for m in members.values():
        if m.birthday is not None and m.birthday.month == today.month:
            payload = {"birthday": m.birthday.isoformat()}
            found.append(Candidate("birthday_month", m.member_id, f"{today:%Y-%m}", payload, month_end))
    upgrades = session.scalars(
        select(TierAssignmentRow).where(
            TierAssignmentRow.reason == "upgrade", TierAssignmentRow.assigned_at > now - tag_days
        )
    )
    for row in upgrades:
        if row.member_id in members and row.assigned_at <= now:
            payload = {"from": row.previous_tier, "to": row.tier, "at": row.assigned_at.isoformat()}
            found.append(
                Candidate("tier_upgraded", row.member_id, f"tier:{row.id}", payload, row.assigned_at + tag_days)
            )
    found += _retention(session, programme, cfg, members, now)
    found += _expiring(session, programme, cfg, members, now)
    entries = session.scalars(
        select(SegmentChange).where(
            SegmentChange.segment == cfg["dormant_segment"],
            SegmentChange.change == "entered",
            SegmentChange.at > now - tag_days,
        )
    )
    for change in entries:
        if change.member_id in members and change.at <= now:
            day = calendar.local_date(programme, change.at).isoformat()
            found.append(Candidate("entered_dormant", change.member_id, day, {"since": day}, change.at + tag_days))
    for m in members.values():
        if m.stores >= 2 and m.last_order_at is not None and now - tag_days < m.last_order_at <= now:
            found.append(Candidate("first_cross_store_purchase", m.member_id, "once", {"stores": m.stores},
                                   m.last_order_at + tag_days))  # fmt: skip
    return found


def _month_start(programme: ProgrammeConfig, day: date, months: int) -> datetime:
    index = day.year * 12 + day.month - 1 + months
    return calendar.start_of(programme, date(index // 12, index % 12 + 1, 1))


def _retention(
    session: Session, programme: ProgrammeConfig, cfg: dict[str, Any], members: dict[str, MemberMetrics], now: datetime
) -> list[Candidate]:
    """保级 at risk: above the first tier, the amount so far below the tier's retention floor, and the
    next review (the start of the next review period) within ``retention_warning_days``."""
    period, start = calendar.period_of(programme, now, programme.tier_policy.review_every)
    step = {"month": 1, "quarter": 3, "year": 12}[programme.tier_policy.review_every]
    review_at = _month_start(programme, calendar.local_date(programme, start), step)
    if review_at - now > timedelta(days=int(cfg["retention_warning_days"])):
        return []
    ladder = {level.name: level for level in programme.tiers}
    basis = programme.tier_policy.basis
    amounts = tiers.qualifying_amounts(session, programme, now)
    found = []
    for member_id, tier in tiers.current_tiers(session).items():
        level = ladder.get(tier)
        if member_id not in members or level is None or level.name == programme.tiers[0].name:
            continue
        if basis == "points":
            floor = Decimal(level.retain_points if level.retain_points is not None else (level.min_points or 0))
        else:
            floor = level.retain_spend if level.retain_spend is not None else level.min_spend
        amount = amounts.get(member_id, Decimal(0))
        if amount < floor:
            payload = {"tier": tier, "amount": str(amount), "floor": str(floor), "review_at": review_at.isoformat()}
            found.append(Candidate("retention_at_risk", member_id, period, payload, review_at))
    return found


def _expiring(
    session: Session, programme: ProgrammeConfig, cfg: dict[str, Any], members: dict[str, MemberMetrics], now: datetime
) -> list[Candidate]:
    horizon = now + timedelta(days=int(cfg["points_expiring_days"]))
    lots = session.execute(
        select(PointsLot.member_id, PointsLot.remaining, PointsLot.expires_at).where(
            PointsLot.remaining > 0, PointsLot.pending.is_(False), PointsLot.expires_at > now,
            PointsLot.expires_at <= horizon,
        )
    )  # fmt: skip
    per: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
    for member_id, remaining, expires_at in lots:
        if member_id in members:
            per[member_id].append((int(remaining), expires_at))
    found = []
    for member_id, items in per.items():
        first = min(at for _, at in items)
        day = calendar.local_date(programme, first).isoformat()
        payload = {"points": sum(p for p, _ in items), "first_expiry": first.isoformat()}
        found.append(Candidate("points_expiring", member_id, day, payload, first))
    return found


@dataclass
class EmitCounts:
    emitted: dict[str, int] = field(default_factory=dict)
    already: int = 0


def emit(
    session: Session, programme: ProgrammeConfig, config: dict[str, Any], *, now: datetime | None = None
) -> EmitCounts:
    """Record the events due at ``now``; one already recorded for its member and period is skipped."""
    now = now or datetime.now(UTC)
    counts = EmitCounts()
    found = candidates(session, programme, config, now)
    known = {
        (k, m, p)
        for k, m, p in session.execute(
            select(MarketingEvent.kind, MarketingEvent.member_id, MarketingEvent.period).where(
                MarketingEvent.member_id.in_({c.member_id for c in found})
            )
        )
    } if found else set()  # fmt: skip
    for c in found:
        key = (c.kind, c.member_id, c.period)
        if key in known:
            counts.already += 1
            continue
        known.add(key)
        session.add(MarketingEvent(kind=c.kind, member_id=c.member_id, period=c.period, payload=c.payload,
                                   created_at=now, tag_until=c.tag_until, attempts=0))  # fmt: skip
        counts.emitted[c.kind] = counts.emitted.get(c.kind, 0) + 1
    session.flush()
    return counts


def active_tags(session: Session, prefix: str, now: datetime) -> dict[str, set[str]]:
    """member -> the event tags it should carry now (events whose tag_until is ahead)."""
    out: dict[str, set[str]] = defaultdict(set)
    for member_id, kind in session.execute(
        select(MarketingEvent.member_id, MarketingEvent.kind).where(MarketingEvent.tag_until > now)
    ):
        if kind in EVENT_LABELS:
            out[member_id].add(tag_of(kind, prefix))
    return out


# ------------------------------------------------------------------------------ webhooks
class _Retry(Exception):
    """An attempt a later one may fix: the receiver was unreachable, slow, busy (429) or failing (5xx)."""


@dataclass
class DeliveryCounts:
    delivered: int = 0
    failed: int = 0
    suppressed: int = 0  # the member opted out after the event was recorded: never sent
    attempts: int = 0


def body_of(event: MarketingEvent) -> bytes:
    data = {
        "id": event_id(event),
        "type": event.kind,
        "label": EVENT_LABELS.get(event.kind, event.kind),
        "member_id": event.member_id,
        "period": event.period,
        "data": event.payload,
        "created_at": event.created_at.isoformat(),
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def event_id(event: MarketingEvent) -> str:
    return f"{event.kind}:{event.member_id}:{event.period}"


def deliver(
    session_factory: Callable[[], Session],
    config: dict[str, Any],
    *,
    client: httpx.Client | None = None,
    wait: Callable[[int], float] | None = None,
) -> DeliveryCounts:
    """Post every undelivered event to ``webhook_url``: up to ``attempts_per_run`` tries each now, with
    exponential backoff; what still fails is tried again next run, up to ``max_attempts`` in all."""
    cfg = settings(config)
    counts = DeliveryCounts()
    url, secret = cfg["webhook_url"], str(cfg["webhook_secret"])
    if not url:
        return counts
    with session_factory() as session:
        pending = session.scalars(
            select(MarketingEvent)
            .where(MarketingEvent.delivered_at.is_(None), MarketingEvent.attempts < int(cfg["max_attempts"]))
            .order_by(MarketingEvent.id)
        ).all()
        consent = dict(session.execute(select(MemberMetrics.member_id, MemberMetrics.marketing_consent)).all())
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    try:
        for event in pending:
            if consent.get(event.member_id) is not True:
                counts.suppressed += 1
                continue
            if _deliver_one(session_factory, http, url, secret, event, cfg, wait, counts):
                counts.delivered += 1
            else:
                counts.failed += 1
    finally:
        if own:
            http.close()
    return counts


def _deliver_one(
    session_factory: Callable[[], Session],
    http: httpx.Client,
    url: str,
    secret: str,
    event: MarketingEvent,
    cfg: dict[str, Any],
    wait: Callable[[int], float] | None,
    counts: DeliveryCounts,
) -> bool:
    body = body_of(event)
    attempt = event.attempts

    def send() -> None:
        nonlocal attempt
        attempt += 1
        counts.attempts += 1
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-MemberHub-Event-Id": event_id(event),
            "X-MemberHub-Event-Type": event.kind,
            "X-MemberHub-Timestamp": stamp,
            "X-MemberHub-Signature": memberhub_signature(secret, stamp, body),
        }
        status, error = None, None
        try:
            response = http.post(url, content=body, headers=headers)
            status = response.status_code
            if status >= 300:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        _log(session_factory, event.id, url, attempt, status, error)
        if error is None:
            return
        if status is None or status == 429 or status >= 500:
            raise _Retry(error)
        raise _Refused(error)

    waiting = wait_exponential(multiplier=0.5, max=8) if wait is None else (lambda state: wait(state.attempt_number))
    try:
        for tried in Retrying(
            retry=retry_if_exception_type(_Retry),
            stop=stop_after_attempt(int(cfg["attempts_per_run"])),
            wait=waiting,
            reraise=True,
        ):
            with tried:
                send()
    except (_Retry, _Refused):
        return False
    with session_factory() as session, session.begin():
        session.get(MarketingEvent, event.id).delivered_at = datetime.now(UTC)
    return True


class _Refused(Exception):
    """The receiver refused the event (4xx other than 429): retrying now would not help."""


def _log(
    session_factory: Callable[[], Session], event: int, url: str, attempt: int, status: int | None, error: str | None
) -> None:
    with session_factory() as session, session.begin():
        session.add(WebhookDelivery(event_id=event, url=url, attempt=attempt, at=datetime.now(UTC),
                                    status_code=status, ok=error is None, error=error))  # fmt: skip
        row = session.get(MarketingEvent, event)
        row.attempts = attempt


def deliveries(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = session.execute(
        select(WebhookDelivery, MarketingEvent)
        .join(MarketingEvent, and_(MarketingEvent.id == WebhookDelivery.event_id))
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return [
        {"event": event_id(e), "attempt": d.attempt, "at": d.at, "status": d.status_code, "ok": d.ok, "error": d.error}
        for d, e in rows
    ]
