"""What must hold before points and tiers are written back into other systems. Each check reads
only, and says in words what is wrong; Dagster runs them as blocking asset checks, so a failure stops
write-back in that run and shows why in its UI. ``memberhub`` can run them without Dagster too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import ledger
from hub.drift import Reader, schema_drift
from hub.tables import GoldenMember, MemberLink, QuarantineRow, SourceRecordRow

SAMPLE = 10
"""How many offending keys a check lists; the count covers them all."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def golden_ids_unique(session: Session) -> Outcome:
    """Each golden id names one person, every source record links to an active golden member, and
    every merged id redirects to an active one: otherwise a system would be sent an id that is not
    (or no longer) one person's."""
    duplicated = list(
        session.scalars(
            select(GoldenMember.member_id).group_by(GoldenMember.member_id).having(func.count() > 1).limit(SAMPLE)
        )
    )
    stale_links = list(
        session.scalars(
            select(MemberLink.member_id)
            .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
            .where(GoldenMember.status != "active")
            .distinct()
            .limit(SAMPLE)
        )
    )
    status = dict(session.execute(select(GoldenMember.member_id, GoldenMember.status)).all())
    redirects = dict(
        session.execute(
            select(GoldenMember.member_id, GoldenMember.merged_into).where(GoldenMember.status != "active")
        ).all()
    )
    broken: list[str] = []
    for member_id in redirects:
        if status.get(member_id) == "forgotten":  # erased on request (hub.privacy): redirects nowhere on purpose
            continue
        seen, current = {member_id}, redirects[member_id]
        while current in redirects and current not in seen:
            seen.add(current)
            current = redirects[current]
        if current is None or status.get(current) not in ("active", "forgotten"):  # forgotten: hub.privacy
            broken.append(member_id)
    problems = []
    if duplicated:
        problems.append(f"golden ids used twice: {', '.join(duplicated)}")
    if stale_links:
        problems.append(f"source records linked to merged members: {', '.join(stale_links)}")
    if broken:
        problems.append(f"merged ids that lead to no active member: {', '.join(sorted(broken)[:SAMPLE])}")
    active = sum(1 for s in status.values() if s == "active")
    return Outcome(
        not problems,
        "; ".join(problems) or f"{active} active golden members, each id one person's",
        {"active": active, "duplicated": len(duplicated), "stale_links": len(stale_links), "broken": len(broken)},
    )


def ledger_reconciles(session: Session) -> Outcome:
    """Every account, lot and entry of the points ledger adds up (``hub.ledger.reconcile``)."""
    differences = ledger.reconcile(session)
    shown = [f"{d.check} of {d.key}: ledger says {d.expected}, found {d.found}" for d in differences[:SAMPLE]]
    return Outcome(
        not differences,
        "; ".join(shown) if differences else "the ledger reconciles: zero difference",
        {"differences": len(differences)},
    )


def no_schema_drift(session: Session, reads: Reader | None = None) -> Outcome:
    """No field that a mapping reads has disappeared or changed type since its stream's shape was
    accepted (``memberhub mappings drift``); new or unused fields are listed but do not fail."""
    changes = schema_drift(session, reads=reads)
    errors = [c for c in changes if c.severity == "error"]
    if errors:
        text = "; ".join(c.describe() for c in errors[:SAMPLE])
        text += " — fix the mapping, or accept with `memberhub mappings drift --accept`"
    else:
        text = f"no mapped field changed ({len(changes)} unmapped change(s) noted)"
    return Outcome(not errors, text, {"errors": len(errors), "warnings": len(changes) - len(errors)})


def quarantine_rate(session: Session, threshold: float) -> Outcome:
    """No source has more than ``threshold`` of its records in quarantine (a broken mapping or a
    system sending something new would otherwise write back a partial picture)."""
    stored = dict(session.execute(select(SourceRecordRow.source, func.count()).group_by(SourceRecordRow.source)).all())
    held = dict(session.execute(select(QuarantineRow.source, func.count()).group_by(QuarantineRow.source)).all())
    never_stored = dict(
        session.execute(
            select(QuarantineRow.source, func.count())
            .where(QuarantineRow.source_record_id.is_(None))
            .group_by(QuarantineRow.source)
        ).all()
    )
    rates = {
        source: round(held.get(source, 0) / total, 4)
        for source in sorted(set(stored) | set(held))
        if (total := stored.get(source, 0) + never_stored.get(source, 0))
    }
    over = {source: rate for source, rate in rates.items() if rate > threshold}
    if over:
        text = "; ".join(f"{s}: {r:.1%} of records in quarantine" for s, r in over.items())
        text += f" (at most {threshold:.1%}) — see `memberhub quarantine list`"
    else:
        text = f"quarantine under {threshold:.1%} for every source"
    return Outcome(not over, text, {"threshold": threshold, **{f"rate/{s}": r for s, r in rates.items()}})


__all__ = ["Outcome", "golden_ids_unique", "ledger_reconciles", "no_schema_drift", "quarantine_rate"]
