"""Write-back (回写): the points and tier each destination should show, diffed against what it last
acknowledged, so only changes are sent and a re-run with nothing changed sends nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors import Connector, WritebackUpdate
from hub import ledger, tiers
from hub.tables import GoldenMember, MemberLink, StagedMember, WritebackRun, WritebackState, utcnow
from schemas import ProgrammeConfig


@dataclass
class Plan:
    destination: str
    updates: list[WritebackUpdate] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class PushCounts:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def idempotency_key(destination: str, external_id: str, acknowledged: int | None, points: int) -> str:
    """The same change (from what was acknowledged to the new value) always gets the same key, so
    a retry after a crash can never apply a delta twice."""
    text = f"{destination}|{external_id}|{acknowledged}|{points}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def plan(session: Session, destination: str, programme: ProgrammeConfig) -> Plan:
    """What ``destination`` should be sent: one update per of its customers whose state differs."""
    result = Plan(destination)
    balances = ledger.balances(session)
    current = tiers.current_tiers(session)
    labels = {level.name: level.label for level in programme.tiers}
    default_tier = programme.tiers[0].name
    state = {
        row.external_id: row
        for row in session.scalars(select(WritebackState).where(WritebackState.destination == destination))
    }
    rows = session.execute(
        select(StagedMember.source_id, StagedMember.phone, MemberLink.member_id)
        .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
        .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
        .where(StagedMember.source == destination, GoldenMember.status == "active")
        .order_by(StagedMember.id)
    )
    for external_id, phone, member_id in rows:
        points = balances.get(member_id, 0)
        tier = current.get(member_id, default_tier)
        known = state.get(external_id)
        if known is not None and known.points == points and known.tier == tier and known.member_id == member_id:
            result.unchanged += 1
            continue
        acknowledged = known.points if known is not None else None
        result.updates.append(
            WritebackUpdate(
                member_id=member_id,
                external_id=external_id,
                points=points,
                tier=tier,
                tier_label=labels[tier],
                acknowledged_points=acknowledged,
                idempotency_key=idempotency_key(destination, external_id, acknowledged, points),
                phone=phone,
                remote=dict(known.remote) if known is not None else {},
            )
        )
    return result


def push(
    connector: Connector,
    session_factory: Callable[[], Session],
    programme: ProgrammeConfig,
    *,
    batch_size: int = 100,
    on_batch: Callable[[int], None] | None = None,
) -> PushCounts:
    """Send the plan in batches; each batch's acknowledgements are stored as soon as they arrive."""
    destination = connector.name
    counts = PushCounts()
    with session_factory() as session, session.begin():
        work = plan(session, destination, programme)
        run = WritebackRun(destination=destination, skipped=work.unchanged)
        session.add(run)
        session.flush()
        run_id = run.id
    counts.skipped = work.unchanged
    try:
        for start in range(0, len(work.updates), batch_size):
            batch = work.updates[start : start + batch_size]
            results = connector.push(batch)
            with session_factory() as session, session.begin():
                for update, result in zip(batch, results, strict=True):
                    _record(session, destination, update, result.ok, result.error, result.remote)
                    if result.ok:
                        counts.sent += 1
                    else:
                        counts.failed += 1
                        counts.errors.append(f"{update.external_id}: {result.error}")
            if on_batch:
                on_batch(len(batch))
    finally:  # the run is recorded whether it finished or a fatal error stopped it
        with session_factory() as session, session.begin():
            run = session.get(WritebackRun, run_id)
            run.sent, run.failed, run.finished_at = counts.sent, counts.failed, utcnow()
    return counts


def _record(
    session: Session, destination: str, update: WritebackUpdate, ok: bool, error: str | None, remote: dict
) -> None:
    row = session.get(WritebackState, (destination, update.external_id))
    if row is None:
        row = WritebackState(
            destination=destination, external_id=update.external_id, member_id=update.member_id, remote={}
        )
        session.add(row)
    if ok:
        row.member_id, row.points, row.tier = update.member_id, update.points, update.tier
        row.remote = {**(row.remote or {}), **remote}
        row.acknowledged_at, row.last_error = utcnow(), None
    else:
        row.last_error = error
