"""What a data steward (数据管理员) can decide, for the console and the CLI to call.

Every decision is stored as a constraint between source members (``match_constraints``) or a pin
(``golden_field_pins``), written to the audit log, and applied at once by a resolve run; because
every later run, incremental or full, reads the constraints, a decision outlives any new data
(ARCHITECTURE.md, principle 4). A newer decision about the same two records replaces the older one.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.resolution.settings import SURVIVING_FIELDS, closest
from hub.tables import AuditLog, GoldenFieldPin, GoldenMember, MatchConstraint, MemberLink, ReviewQueueItem, utcnow
from schemas.errors import ResolutionError


def _constrain(session: Session, a: int, b: int, kind: str, actor: str, reason: str | None) -> None:
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        raise ResolutionError(f"a record cannot be paired with itself (staged member {a})")
    row = session.scalar(
        select(MatchConstraint).where(MatchConstraint.staged_member_a == lo, MatchConstraint.staged_member_b == hi)
    )
    if row is None:
        session.add(MatchConstraint(kind=kind, staged_member_a=lo, staged_member_b=hi, created_by=actor, reason=reason))
    else:
        row.kind, row.created_by, row.created_at, row.reason = kind, actor, utcnow(), reason


def _decide_review(session: Session, a: int, b: int, status: str, actor: str, note: str | None) -> None:
    lo, hi = min(a, b), max(a, b)
    item = session.scalar(
        select(ReviewQueueItem).where(ReviewQueueItem.staged_member_a == lo, ReviewQueueItem.staged_member_b == hi)
    )
    if item is not None:
        item.status, item.decided_by, item.decided_at, item.note = status, actor, utcnow(), note
        item.updated_at = utcnow()


def _audit(session: Session, actor: str, action: str, entity_id: str, after: dict[str, Any]) -> None:
    session.add(
        AuditLog(actor=actor, action=action, entity="staged_member", entity_id=entity_id, before=None, after=after)
    )


def _resolve(session: Session, actor: str) -> Any:
    from hub.resolve import resolve

    session.flush()
    return resolve(session, actor=actor)


def merge_pair(session: Session, a: int, b: int, *, actor: str, reason: str | None = None) -> Any:
    """The two source members are one person: they are merged now and stay merged."""
    _constrain(session, a, b, "must_link", actor, reason)
    _decide_review(session, a, b, "merged", actor, reason)
    _audit(session, actor, "steward_merge", f"{min(a, b)}+{max(a, b)}", {"reason": reason})
    return _resolve(session, actor)


def reject_pair(session: Session, a: int, b: int, *, actor: str, reason: str | None = None) -> Any:
    """The two source members are different people: they never merge, whatever links them."""
    _constrain(session, a, b, "cannot_link", actor, reason)
    _decide_review(session, a, b, "rejected", actor, reason)
    _audit(session, actor, "steward_reject", f"{min(a, b)}+{max(a, b)}", {"reason": reason})
    return _resolve(session, actor)


def defer_pair(session: Session, a: int, b: int, *, actor: str, note: str | None = None) -> None:
    """Leave a review item for later (it stays out of the open queue until the evidence changes)."""
    _decide_review(session, a, b, "deferred", actor, note)


def split(
    session: Session, member_id: str, staged_member_ids: list[int], *, actor: str, reason: str | None = None
) -> Any:
    """Take source members out of a golden member: they become a new member (a new id), the rest
    keep ``member_id``. The records that leave stay together; none of them merges back."""
    linked = set(session.scalars(select(MemberLink.staged_member_id).where(MemberLink.member_id == member_id)))
    leaving = sorted(set(staged_member_ids))
    if not linked:
        raise ResolutionError(f"golden member {member_id!r} has no source records to split")
    strangers = [s for s in leaving if s not in linked]
    if strangers:
        raise ResolutionError(f"staged members {strangers} are not part of {member_id}; its records: {sorted(linked)}")
    staying = sorted(linked - set(leaving))
    if not leaving or not staying:
        raise ResolutionError(f"a split of {member_id} must leave at least one record on each side")
    # the id stays with the record it was first given to (hub.resolve): make that a staying record
    now = utcnow()
    for link in session.scalars(select(MemberLink).where(MemberLink.staged_member_id.in_(leaving))):
        link.linked_at = now
    for a in leaving:
        for b in staying:
            _constrain(session, a, b, "cannot_link", actor, reason)
    for a, b in combinations(leaving, 2):
        _constrain(session, a, b, "must_link", actor, reason)
    for a, b in combinations(staying, 2):
        _constrain(session, a, b, "must_link", actor, reason)
    session.add(
        AuditLog(
            actor=actor,
            action="steward_split",
            entity="golden_member",
            entity_id=member_id,
            before={"staged_members": sorted(linked)},
            after={"leaving": leaving, "reason": reason},
        )
    )
    return _resolve(session, actor)


def pin_field(
    session: Session, member_id: str, field: str, value: Any, *, actor: str, reason: str | None = None
) -> None:
    """Fix a golden field's value; survivorship keeps it until the pin is removed (``value=None``
    with ``unpin=True`` is :func:`unpin_field`)."""
    if field not in SURVIVING_FIELDS:
        raise ResolutionError(f"cannot pin {field!r}{closest(field, SURVIVING_FIELDS)}")
    golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == member_id))
    if golden is None:
        raise ResolutionError(f"no golden member {member_id!r}")
    text = value.isoformat() if hasattr(value, "isoformat") else (None if value is None else str(value))
    pin = session.get(GoldenFieldPin, (member_id, field))
    before = getattr(golden, field)
    if pin is None:
        session.add(GoldenFieldPin(member_id=member_id, field=field, value=text, pinned_by=actor, reason=reason))
    else:
        pin.value, pin.pinned_by, pin.pinned_at, pin.reason = text, actor, utcnow(), reason
    session.add(
        AuditLog(
            actor=actor,
            action="pin_field",
            entity="golden_member",
            entity_id=member_id,
            before={field: str(before) if before is not None else None},
            after={field: text, "reason": reason},
        )
    )
    _resolve(session, actor)


def unpin_field(session: Session, member_id: str, field: str, *, actor: str) -> None:
    pin = session.get(GoldenFieldPin, (member_id, field))
    if pin is not None:
        session.delete(pin)
        session.add(
            AuditLog(
                actor=actor,
                action="unpin_field",
                entity="golden_member",
                entity_id=member_id,
                before={field: pin.value},
                after=None,
            )
        )
        _resolve(session, actor)
