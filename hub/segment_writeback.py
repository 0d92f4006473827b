"""Segment and event tags written back (标签回写): the tags each destination's customer should carry,
diffed against what the destination last acknowledged (``tag_writeback_state``), so only changes are
sent and a re-run with nothing changed sends nothing. Tags are absolute sets: a resend after a crash
is harmless, and each connector's ``push_tags`` touches the hub's own tags only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors import WritebackResult
from connectors.tags import TagUpdate
from hub import triggers
from hub.segments import Segments
from hub.tables import GoldenMember, MemberLink, SegmentMembership, StagedMember, TagWritebackState


class TagDestination(Protocol):
    name: str

    def push_tags(self, updates: list[TagUpdate]) -> list[WritebackResult]: ...


@dataclass
class TagPlan:
    destination: str
    updates: list[TagUpdate] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class TagCounts:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def desired_tags(session: Session, definitions: Segments, now: datetime) -> dict[str, set[str]]:
    """member -> every tag it should carry: its segments' tags and its current events' tags."""
    wanted: dict[str, set[str]] = defaultdict(set)
    tag_of = {s.name: s.tag for s in definitions if s.tag}
    for member_id, segment in session.execute(select(SegmentMembership.member_id, SegmentMembership.segment)):
        if segment in tag_of:
            wanted[member_id].add(tag_of[segment])
    for member_id, tags in triggers.active_tags(session, definitions.tag_prefix, now).items():
        wanted[member_id] |= tags
    return wanted


def plan(session: Session, destination: str, definitions: Segments, *, now: datetime | None = None) -> TagPlan:
    now = now or datetime.now(UTC)
    result = TagPlan(destination)
    wanted = desired_tags(session, definitions, now)
    state = {
        row.external_id: row
        for row in session.scalars(select(TagWritebackState).where(TagWritebackState.destination == destination))
    }
    rows = session.execute(
        select(StagedMember.source_id, MemberLink.member_id)
        .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
        .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
        .where(StagedMember.source == destination, GoldenMember.status == "active")
        .order_by(StagedMember.id)
    )
    for external_id, member_id in rows:
        tags = tuple(sorted(wanted.get(member_id, ())))
        known = state.get(external_id)
        acknowledged = tuple(sorted(known.acknowledged or ())) if known is not None else ()
        if acknowledged == tags and (known is not None or not tags):
            result.unchanged += 1
            continue
        result.updates.append(
            TagUpdate(
                member_id=member_id,
                external_id=external_id,
                tags=tags,
                previous=acknowledged,
                prefix=definitions.tag_prefix,
                remote=dict(known.remote) if known is not None else {},
            )
        )
    return result


def push(
    connector: TagDestination,
    session_factory: Callable[[], Session],
    definitions: Segments,
    *,
    now: datetime | None = None,
    batch_size: int = 100,
) -> TagCounts:
    """Send the plan in batches; each batch's acknowledgements are stored as soon as they arrive."""
    counts = TagCounts()
    with session_factory() as session:
        work = plan(session, connector.name, definitions, now=now)
    counts.skipped = work.unchanged
    for start in range(0, len(work.updates), batch_size):
        batch = work.updates[start : start + batch_size]
        results = connector.push_tags(batch)
        with session_factory() as session, session.begin():
            for update, result in zip(batch, results, strict=True):
                _record(session, connector.name, update, result)
                if result.ok:
                    counts.sent += 1
                else:
                    counts.failed += 1
                    counts.errors.append(f"{update.external_id}: {result.error}")
    return counts


def _record(session: Session, destination: str, update: TagUpdate, result: WritebackResult) -> None:
    row = session.get(TagWritebackState, (destination, update.external_id))
    if row is None:
        row = TagWritebackState(
            destination=destination, external_id=update.external_id, member_id=update.member_id,
            acknowledged=[], remote={}, attempts=0,
        )  # fmt: skip
        session.add(row)
    if result.ok:
        row.member_id, row.acknowledged = update.member_id, list(update.tags)
        row.remote = {**(row.remote or {}), **result.remote}
        row.acknowledged_at, row.last_error, row.attempts = datetime.now(UTC), None, 0
    else:
        row.last_error, row.attempts = result.error, (row.attempts or 0) + 1


def state(session: Session, destination: str) -> dict[str, list[str]]:
    """external id -> the tags ``destination`` acknowledged (for tests and ``memberhub segments``)."""
    rows = session.scalars(select(TagWritebackState).where(TagWritebackState.destination == destination))
    return {row.external_id: list(row.acknowledged or []) for row in rows}


def summary(session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in session.scalars(select(TagWritebackState)):
        entry = out.setdefault(row.destination, {"customers": 0, "tagged": 0, "failing": 0})
        entry["customers"] += 1
        entry["tagged"] += int(bool(row.acknowledged))
        entry["failing"] += int(row.last_error is not None)
    return out


def push_destination(hub: Any, name: str, definitions: Segments, *, now: datetime | None = None) -> dict[str, Any]:
    """Tags to one configured connector (``hub``: a ``hub.service.Hub``)."""
    with hub.connector(name) as connector:
        if not hasattr(connector, "push_tags"):
            return {"sent": 0, "failed": 0, "skipped": 0, "errors": [f"{name}: takes no tags"]}
        counts = push(connector, hub.session, definitions, now=now)
    return {"sent": counts.sent, "failed": counts.failed, "skipped": counts.skipped, "errors": counts.errors}
