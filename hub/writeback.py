"""Write-back (回写): the points and tier each destination should show, diffed against what it last
acknowledged, so only changes are sent and a re-run with nothing changed sends nothing.

What is written
    points    the member's spendable balance, never below 0: a debt (a refund after the points were
              spent) stays in the hub's ledger, and every system shows 0 until later earnings pay it.
    tier      the tier's code name (the label travels too, for systems that show one).
    member id the hub's golden member id (systems that keep it: HubSpot's ``loyalty_member_id``).

How a change travels
    ``plan`` compares, for each of a destination's customers, that state with the destination's
    last acknowledgement (``writeback_state``) and names the fields that differ. ``push`` sends the
    plan in batches; each batch's acknowledgements are committed as soon as they arrive, so a crash
    loses at most the batch in flight, and that batch is planned again by the next run. Absolute
    targets (Shopify metafields, HubSpot properties, Odoo cards) are safe to resend. The delta target
    (Square's loyalty adjust) reads the account's balance just before it writes and sends
    ``target - balance`` under a key derived from the ledger entries the balance includes (the
    member's last ledger entry id) and the balance it moves from: a resend after a crash finds the
    balance already moved and sends nothing, and an HTTP retry of the same request is applied once.

Failures
    A row a destination refuses keeps its last acknowledgement and its reason (``last_error``) and is
    sent again next run; a part a destination cannot hold (a Square customer without a phone has no
    loyalty account) is acknowledged with the reason in ``skipped`` and not retried until what it
    lacked appears. A destination that is down fails its own run, recorded with the error; the
    others are not touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors import Connector, WritebackUpdate
from connectors.base import ALL_FIELDS, NEEDS_PHONE
from hub import tiers
from hub.tables import (
    GoldenMember,
    LedgerEntryRow,
    MemberLink,
    StagedMember,
    WritebackRun,
    WritebackState,
    utcnow,
)
from schemas import ProgrammeConfig

DISPLAY_FLOOR = 0
"""The lowest balance written anywhere: debts are the hub's business, not the till's."""
ERRORS_KEPT = 50
"""Row failures kept on a run (and returned) as a sample; every one is on its writeback_state row."""


@dataclass
class Plan:
    destination: str
    updates: list[WritebackUpdate] = field(default_factory=list)
    unchanged: int = 0

    def changed_fields(self) -> dict[str, int]:
        """How many updates change each field: {"points": 12, "tier": 3, "member_id": 0}."""
        return {name: sum(1 for u in self.updates if name in u.changed) for name in sorted(ALL_FIELDS)}


@dataclass
class PushCounts:
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # unchanged: nothing to send
    partial: int = 0  # sent, with a part the destination cannot hold (see writeback_state.skipped)
    errors: list[str] = field(default_factory=list)
    run_id: int | None = None


def idempotency_key(destination: str, external_id: str, member_id: str, ledger_mark: int | None, points: int) -> str:
    """The key of a change of balance, derived from the ledger entries it represents: the member's
    entries up to ``ledger_mark``. The same balance reached again later by other entries gets a new
    key, so the destination never mistakes a new change for a replay of an old one."""
    text = f"{destination}|{external_id}|{member_id}|{ledger_mark}|{points}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def shown_points(balance: int) -> int:
    return max(DISPLAY_FLOOR, balance)


def _ledger_positions(session: Session) -> dict[str, tuple[int, int]]:
    """member id -> (balance, last ledger entry id)."""
    rows = session.execute(
        select(LedgerEntryRow.member_id, func.sum(LedgerEntryRow.points), func.max(LedgerEntryRow.id)).group_by(
            LedgerEntryRow.member_id
        )
    )
    return {member_id: (int(total), int(last)) for member_id, total, last in rows}


def plan(session: Session, destination: str, programme: ProgrammeConfig) -> Plan:
    """What ``destination`` should be sent: one update per of its customers whose state differs."""
    result = Plan(destination)
    positions = _ledger_positions(session)
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
        balance, mark = positions.get(member_id, (0, None))
        points = shown_points(balance)
        tier = current.get(member_id, default_tier)
        known = state.get(external_id)
        changed = _changed(known, points, tier, member_id, phone)
        if not changed:
            result.unchanged += 1
            continue
        result.updates.append(
            WritebackUpdate(
                member_id=member_id,
                external_id=external_id,
                points=points,
                tier=tier,
                tier_label=labels[tier],
                acknowledged_points=known.points if known is not None else None,
                idempotency_key=idempotency_key(destination, external_id, member_id, mark, points),
                phone=phone,
                remote=dict(known.remote or {}) if known is not None else {},
                changed=changed,
                ledger_mark=mark,
            )
        )
    return result


def _changed(known: WritebackState | None, points: int, tier: str, member_id: str, phone: str | None) -> frozenset[str]:
    if known is None or known.acknowledged_at is None:
        return ALL_FIELDS
    changed = set()
    if known.points != points or (phone and (known.remote or {}).get(NEEDS_PHONE)):
        changed.add("points")
    if known.tier != tier:
        changed.add("tier")
    if known.member_id != member_id:
        changed.add("member_id")
    return frozenset(changed)


def push(
    connector: Connector,
    session_factory: Callable[[], Session],
    programme: ProgrammeConfig,
    *,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PushCounts:
    """Send the plan in batches (the connector's own ``writeback_batch``, else 100); each batch's
    acknowledgements are committed as soon as they arrive. The run is recorded whatever happens:
    finished, or failed with the error that stopped it (which is raised again)."""
    destination = connector.name
    counts = PushCounts()
    size = batch_size or getattr(connector, "writeback_batch", 100)
    with session_factory() as session, session.begin():
        work = plan(session, destination, programme)
        run = WritebackRun(destination=destination, skipped=work.unchanged, status="running")
        session.add(run)
        session.flush()
        counts.run_id = run.id
    counts.skipped = work.unchanged
    status, error = "failed", None
    try:
        for batch in _batches(work.updates, size):
            results = connector.push(batch)
            with session_factory() as session, session.begin():
                known = {
                    row.external_id: row
                    for row in session.scalars(
                        select(WritebackState).where(
                            WritebackState.destination == destination,
                            WritebackState.external_id.in_([u.external_id for u in batch]),
                        )
                    )
                }
                for update, result in zip(batch, results, strict=True):
                    _record(session, destination, update, result, known.get(update.external_id))
                    if not result.ok:
                        counts.failed += 1
                        if len(counts.errors) < ERRORS_KEPT:
                            counts.errors.append(f"{update.external_id}: {result.error}")
                        continue
                    counts.sent += 1
                    counts.partial += result.skipped is not None
            if on_batch:
                on_batch(len(batch))
        status = "finished"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:  # the run is recorded whether it finished or a fatal error stopped it
        with session_factory() as session, session.begin():
            run = session.get(WritebackRun, counts.run_id)
            run.sent, run.failed, run.finished_at, run.status = counts.sent, counts.failed, utcnow(), status
            run.error = error or ("; ".join(counts.errors[:5]) if counts.errors else None)
    return counts


def _batches(updates: list[WritebackUpdate], size: int) -> Iterator[list[WritebackUpdate]]:
    for start in range(0, len(updates), size):
        yield updates[start : start + size]


def _record(
    session: Session, destination: str, update: WritebackUpdate, result: Any, row: WritebackState | None
) -> None:
    if row is None:
        row = WritebackState(
            destination=destination, external_id=update.external_id, member_id=update.member_id, remote={}
        )
        session.add(row)
    if result.ok:
        row.member_id, row.points, row.tier = update.member_id, update.points, update.tier
        row.ledger_mark = update.ledger_mark
        remote = {**(row.remote or {}), **result.remote}
        if "points" in update.changed and result.skipped is None:
            remote.pop(NEEDS_PHONE, None)  # whatever was lacking is there now
        if "points" in update.changed or result.skipped is not None:
            row.skipped = result.skipped
        row.remote = remote
        row.acknowledged_at, row.last_error = utcnow(), None
    else:
        row.last_error = result.error
        if result.remote:  # ids learnt before the refusal (an account found, a metafield made)
            row.remote = {**(row.remote or {}), **result.remote}


def history(session: Session, destination: str | None = None, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs, newest first. A run still ``running`` with a newer run after it was
    interrupted (its process died); what it had committed stays acknowledged."""
    query = select(WritebackRun).order_by(WritebackRun.id.desc()).limit(limit)
    if destination:
        query = query.where(WritebackRun.destination == destination)
    runs = list(session.scalars(query))
    newest: dict[str, int] = {}
    for run in runs:
        newest.setdefault(run.destination, run.id)
    return [
        {
            "id": run.id,
            "destination": run.destination,
            "status": "interrupted"
            if run.status == "running" and newest[run.destination] != run.id
            else (run.status or "finished"),
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "sent": run.sent,
            "failed": run.failed,
            "skipped": run.skipped,
            "error": run.error,
        }
        for run in runs
    ]


def failures(session: Session, destination: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """Rows the destination refused last time, with the reason: sent again by the next run."""
    rows = session.scalars(
        select(WritebackState)
        .where(WritebackState.destination == destination, WritebackState.last_error.is_not(None))
        .order_by(WritebackState.external_id)
        .limit(limit)
    )
    return [{"external_id": r.external_id, "member_id": r.member_id, "error": r.last_error} for r in rows]
