"""``memberhub report`` and the dashboard: the hub's figures as named tables, each computed from the
database (aggregates in SQL; days and months bucketed in the programme's time zone)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hub import ledger, tiers
from hub import programme as calendar
from hub.tables import (
    GoldenMember,
    LedgerEntryRow,
    MemberLink,
    MemberMetrics,
    ReviewQueueItem,
    SegmentMembership,
    StagedMember,
    TierAssignmentRow,
)
from schemas import ProgrammeConfig


@dataclass
class ReportTable:
    name: str
    title: str  # Chinese / English, as the CLI prints it
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    chart: str = "bar"  # bar | line | stacked | none

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _month(programme: ProgrammeConfig, at: datetime) -> str:
    return f"{calendar.local_date(programme, at):%Y-%m}"


def _day(programme: ProgrammeConfig, at: datetime) -> str:
    return calendar.local_date(programme, at).isoformat()


def members_per_source(session: Session, programme: ProgrammeConfig) -> ReportTable:
    rows = session.execute(
        select(StagedMember.source, func.count(), func.count(func.distinct(MemberLink.member_id)))
        .join(MemberLink, MemberLink.staged_member_id == StagedMember.id, isouter=True)
        .group_by(StagedMember.source)
        .order_by(StagedMember.source)
    )
    columns = ["source", "records", "golden_members"]
    table = ReportTable("members_per_source", "各系统会员 / members per source", columns)
    table.rows = [[s, int(n), int(g)] for s, n, g in rows]
    return table


def overlap(session: Session, programme: ProgrammeConfig) -> ReportTable:
    """How many golden members appear in 1, 2, 3, 4… systems: the overlap the hub resolved."""
    per_member = (
        select(MemberLink.member_id, func.count(func.distinct(StagedMember.source)).label("systems"))
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
        .where(GoldenMember.status == "active")
        .group_by(MemberLink.member_id)
        .subquery()
    )
    rows = session.execute(
        select(per_member.c.systems, func.count()).group_by(per_member.c.systems).order_by(per_member.c.systems)
    )
    table = ReportTable("overlap", "出现在几个系统 / members found in N systems", ["systems", "golden_members"])
    table.rows = [[int(s), int(n)] for s, n in rows]
    return table


def golden_over_time(session: Session, programme: ProgrammeConfig) -> ReportTable:
    per_day = Counter(_day(programme, at) for (at,) in session.execute(select(GoldenMember.created_at)))
    table = ReportTable(
        "golden_over_time", "会员主记录数 / golden members over time", ["day", "created", "total"], chart="line"
    )
    total = 0
    for day in sorted(per_day):
        total += per_day[day]
        table.rows.append([day, per_day[day], total])
    return table


def merges_and_reviews(session: Session, programme: ProgrammeConfig) -> ReportTable:
    """Per day: source records joined to another record's golden member (auto or by a steward),
    review pairs opened, and review pairs decided."""
    merged = Counter(
        _day(programme, at) for (at,) in session.execute(select(MemberLink.linked_at).where(MemberLink.rule != "new"))
    )
    opened = Counter(_day(programme, at) for (at,) in session.execute(select(ReviewQueueItem.created_at)))
    decided = Counter(
        _day(programme, at)
        for (at,) in session.execute(select(ReviewQueueItem.decided_at).where(ReviewQueueItem.decided_at.is_not(None)))
    )
    table = ReportTable(
        "merges_reviews", "合并与审核 / merges and reviews per day", ["day", "merged", "reviews_opened",
                                                                        "reviews_decided"], chart="stacked"
    )  # fmt: skip
    for day in sorted(set(merged) | set(opened) | set(decided)):
        table.rows.append([day, merged[day], opened[day], decided[day]])
    return table


POINT_FLOWS = {"earn": "issued", "redeem": "redeemed", "expire": "expired"}


def points_flow(session: Session, programme: ProgrammeConfig) -> ReportTable:
    """Per store and month: points issued (earnings, pending included), redeemed and expired."""
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(POINT_FLOWS.values(), 0))
    rows = session.execute(
        select(
            LedgerEntryRow.store_code,
            LedgerEntryRow.kind,
            LedgerEntryRow.occurred_at,
            LedgerEntryRow.points + LedgerEntryRow.pending_points,
        ).where(LedgerEntryRow.kind.in_(list(POINT_FLOWS)))
    )
    for store, kind, at, points in rows:
        key = (store or "-", _month(programme, at))
        sums[key][POINT_FLOWS[kind]] += abs(int(points))
    table = ReportTable(
        "points_flow", "积分发放/兑换/过期 / points per store and month",
        ["store", "month", "issued", "redeemed", "expired"], chart="stacked",
    )  # fmt: skip
    for (store, month), figures in sorted(sums.items()):
        table.rows.append([store, month, figures["issued"], figures["redeemed"], figures["expired"]])
    return table


def liability(session: Session, programme: ProgrammeConfig) -> ReportTable:
    table = ReportTable(
        "liability", "积分负债 / outstanding points per earning store", ["store", "available", "pending", "total"],
        chart="stacked",
    )  # fmt: skip
    for store, owed in sorted(ledger.liabilities(session).items(), key=lambda item: item[0] or ""):
        table.rows.append([store or "-", owed.available, owed.pending, owed.available + owed.pending])
    return table


def tier_distribution(session: Session, programme: ProgrammeConfig) -> ReportTable:
    current = tiers.current_tiers(session)
    active = session.scalars(select(GoldenMember.member_id).where(GoldenMember.status == "active"))
    counts = Counter(current.get(m, programme.tiers[0].name) for m in active)
    table = ReportTable("tier_distribution", "等级分布 / members per tier", ["tier", "label", "members"])
    table.rows = [[t.name, t.label, counts.get(t.name, 0)] for t in programme.tiers]
    return table


def tier_movement(session: Session, programme: ProgrammeConfig) -> ReportTable:
    moves: dict[str, Counter[str]] = defaultdict(Counter)
    for reason, at in session.execute(select(TierAssignmentRow.reason, TierAssignmentRow.assigned_at)):
        moves[_month(programme, at)][reason] += 1
    table = ReportTable(
        "tier_movement", "等级变动 / tier movement per month", ["month", "initial", "upgrade", "downgrade", "override"],
        chart="stacked",
    )  # fmt: skip
    for month in sorted(moves):
        m = moves[month]
        table.rows.append([month, m["initial"], m["upgrade"], m["downgrade"], m["override"] + m["override_expired"]])
    return table


def segment_sizes(session: Session, programme: ProgrammeConfig, labels: dict[str, str] | None = None) -> ReportTable:
    labels = labels or {}
    sizes = dict(
        session.execute(select(SegmentMembership.segment, func.count()).group_by(SegmentMembership.segment)).all()
    )
    table = ReportTable("segment_sizes", "会员分类规模 / segment sizes", ["segment", "label", "members"])
    for name in list(labels) + sorted(set(sizes) - set(labels)):
        table.rows.append([name, labels.get(name, name), int(sizes.get(name, 0))])
    return table


def purchases_per_tier(session: Session, programme: ProgrammeConfig) -> ReportTable:
    """Per tier, from the member view: buyers, repeat buyers (2+ orders), repeat-purchase rate
    (repeat buyers / buyers) and average order value (spend / orders)."""
    rows = session.execute(
        select(
            MemberMetrics.tier,
            func.count(),
            func.sum(case((MemberMetrics.orders > 0, 1), else_=0)),
            func.sum(case((MemberMetrics.orders > 1, 1), else_=0)),
            func.sum(MemberMetrics.orders),
            func.sum(MemberMetrics.spend),
        ).group_by(MemberMetrics.tier)
    )
    found = {tier: (int(n), int(b or 0), int(r or 0), int(o or 0), float(s or 0)) for tier, n, b, r, o, s in rows}
    table = ReportTable(
        "purchases_per_tier", "各等级复购率与客单价 / repeat rate and average order value per tier",
        ["tier", "members", "buyers", "repeat_buyers", "repeat_rate", "orders", "avg_order_value"],
    )  # fmt: skip
    for tier in [t.name for t in programme.tiers] + sorted(set(found) - {t.name for t in programme.tiers}):
        n, buyers, repeat, orders, spend = found.get(tier, (0, 0, 0, 0, 0.0))
        rate = round(repeat / buyers, 4) if buyers else None
        aov = round(spend / orders, 2) if orders else None
        table.rows.append([tier, n, buyers, repeat, rate, orders, aov])
    return table


def cross_store_flows(session: Session, programme: ProgrammeConfig) -> ReportTable:
    table = ReportTable(
        "cross_store_flows", "跨店积分通兑 / points earned at X, redeemed at Y", ["earned_at", "redeemed_at", "points"]
    )
    flows = ledger.cross_store_redemptions(session)
    for (earned, spent), points in sorted(flows.items(), key=lambda item: (item[0][0] or "", item[0][1] or "")):
        table.rows.append([earned or "-", spent or "-", points])
    return table


BUILDERS: dict[str, Callable[..., ReportTable]] = {
    "members_per_source": members_per_source,
    "overlap": overlap,
    "golden_over_time": golden_over_time,
    "merges_reviews": merges_and_reviews,
    "points_flow": points_flow,
    "liability": liability,
    "tier_distribution": tier_distribution,
    "tier_movement": tier_movement,
    "segment_sizes": segment_sizes,
    "purchases_per_tier": purchases_per_tier,
    "cross_store_flows": cross_store_flows,
}
"""Every table of the report, by the name the CLI, the CSV export and the dashboard use."""


def build(
    session: Session, programme: ProgrammeConfig, *, segment_labels: dict[str, str] | None = None,
    only: str | None = None,
) -> dict[str, ReportTable]:  # fmt: skip
    names = [only] if only else list(BUILDERS)
    tables = {}
    for name in names:
        builder = BUILDERS[name]
        tables[name] = (
            builder(session, programme, segment_labels) if name == "segment_sizes" else builder(session, programme)
        )
    return tables
