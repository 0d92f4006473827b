"""What the API and the console both do, for one signed-in person: read a member (masked or audited),
page the review queue, decide a pair, split, pin, adjust points, read the audit log.

Every function takes an open session inside the caller's transaction; a decision and its audit row
commit together. Access is checked here, so the two front ends cannot disagree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from hub import ledger, tiers
from hub.accounts import Principal
from hub.resolution import steward
from hub.resolution.settings import SURVIVING_FIELDS
from hub.search import ContactRules, find_members, id_redirects, member_stores, resolve_member_id
from hub.tables import (
    AuditLog,
    GoldenFieldPin,
    GoldenMember,
    MemberLink,
    ReviewQueueItem,
    StagedMember,
)
from hub.web.errors import WebError, forbidden, not_found
from hub.web.masking import mask_email, mask_phone
from schemas import ProgrammeConfig

CONTACT_FIELDS = ("phone", "email")
REVIEW_ORDERS = ("score", "age")
REVIEW_STATUSES = ("open", "deferred", "merged", "rejected", "obsolete")
DECISIONS = ("merge", "reject", "defer")


def require(principal: Principal, permission: str) -> None:
    if not principal.can(permission):
        raise forbidden(permission.replace(".", " "))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


def _contact(principal: Principal, field: str, value: Any) -> str | None:
    if principal.sees_contacts or field not in CONTACT_FIELDS:
        return _text(value)
    return mask_phone(value) if field == "phone" else mask_email(value)


def audit_pii_read(session: Session, principal: Principal, entity: str, entity_id: str, via: str) -> None:
    """A person saw unmasked contact fields: written down like a change (ARCHITECTURE.md, principle 7)."""
    if principal.sees_contacts:
        session.add(
            AuditLog(
                actor=principal.actor,
                action="pii.read",
                entity=entity,
                entity_id=entity_id,
                before=None,
                after={"fields": list(CONTACT_FIELDS), "via": via},
            )
        )


def visible_member(session: Session, principal: Principal, member_id: str) -> tuple[str, str | None]:
    """(the active id, the id asked for when it was redirected); a clerk asking for a member outside
    their stores gets the same 404 as for a member that does not exist, so ids cannot be probed."""
    require(principal, "member.read")
    active, redirected = resolve_member_id(session, member_id)
    if active is None:
        raise not_found(f"member {member_id}")
    if principal.store_scoped and not member_stores(session, active) & set(principal.stores):
        raise not_found(f"member {member_id}")
    return active, (member_id.upper() if redirected else None)


def _source_records(session: Session, principal: Principal, member_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(StagedMember, MemberLink)
        .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
        .where(MemberLink.member_id == member_id)
        .order_by(StagedMember.id)
    ).all()
    return [
        {
            "staged_member_id": staged.id,
            "source": staged.source,
            "source_id": staged.source_id,
            "store_code": staged.store_code,
            "full_name": staged.full_name,
            "phone": _contact(principal, "phone", staged.phone),
            "email": _contact(principal, "email", staged.email),
            "birthday": _text(staged.birthday),
            "city": staged.city,
            "updated_at": staged.updated_at,
            "rule": link.rule,
            "probability": (link.evidence or {}).get("probability"),
            "linked_at": link.linked_at,
        }
        for staged, link in rows
    ]


def _points(session: Session, member_id: str) -> dict[str, Any]:
    statement = ledger.statement(session, member_id)
    lot_keys = ("id", "kind", "store_code", "points", "remaining", "earned_at", "expires_at", "pending")
    move_keys = ("id", "at", "kind", "points", "pending", "store", "source", "document", "actor", "reason")
    return {
        "balance": statement["balance"],
        "pending": statement["pending"],
        "debt": statement["debt"],
        "lots": [{k: lot[k] for k in lot_keys} for lot in statement["lots"]],
        "history": [{k: move[k] for k in move_keys} for move in statement["history"]],
    }


def member_detail(session: Session, principal: Principal, member_id: str, *, via: str) -> dict[str, Any]:
    """Golden fields with lineage and pins, source records, points, tiers, id redirects."""
    active, redirected_from = visible_member(session, principal, member_id)
    golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == active))
    assert golden is not None
    pins = {p.field: p for p in session.scalars(select(GoldenFieldPin).where(GoldenFieldPin.member_id == active))}
    fields = []
    for field in SURVIVING_FIELDS:
        lineage = (golden.lineage or {}).get(field) or {}
        pin = pins.get(field)
        fields.append(
            {
                "field": field,
                "value": _contact(principal, field, getattr(golden, field)),
                "source": lineage.get("source"),
                "source_id": lineage.get("source_id"),
                "staged_member_id": lineage.get("staged_member_id"),
                "rule": lineage.get("rule"),
                "pinned": pin is not None,
                "pinned_by": pin.pinned_by if pin else None,
            }
        )
    audit_pii_read(session, principal, "golden_member", active, via)
    return {
        "member_id": active,
        "redirected_from": redirected_from,
        "status": golden.status,
        "created_at": golden.created_at,
        "updated_at": golden.updated_at,
        "fields": fields,
        "sources": _source_records(session, principal, active),
        "stores": sorted(member_stores(session, active)),
        "points": _points(session, active),
        "tiers": [
            {"at": t["at"], "tier": t["tier"], "previous": t["previous"], "reason": t["reason"], "actor": t["actor"]}
            for t in tiers.history(session, active)
        ],
        "redirects": id_redirects(session, active),
    }


def search(
    session: Session, principal: Principal, query: str, *, limit: int = 50, rules: ContactRules = ContactRules()
) -> list[dict[str, Any]]:
    """Search results never show full contact fields (only a member's own page does, audited)."""
    require(principal, "member.read")
    stores = principal.stores if principal.store_scoped else None
    hits = find_members(session, query, limit=limit, stores=stores, rules=rules)
    return [
        {
            "member_id": h.member_id,
            "full_name": h.full_name,
            "phone": mask_phone(h.phone),
            "email": mask_email(h.email),
            "matched": h.matched,
        }
        for h in hits
    ]


# ----------------------------------------------------------------------------------------------- review
def review_page(
    session: Session,
    principal: Principal,
    *,
    status: str = "open",
    order: str = "score",
    source: str | None = None,
    store: str | None = None,
    page: int = 1,
    per_page: int = 25,
) -> tuple[list[dict[str, Any]], int]:
    require(principal, "review.read")
    a, b = aliased(StagedMember), aliased(StagedMember)
    query = (
        select(ReviewQueueItem, a, b)
        .join(a, a.id == ReviewQueueItem.staged_member_a)
        .join(b, b.id == ReviewQueueItem.staged_member_b)
        .where(ReviewQueueItem.status == status)
    )
    if source:
        query = query.where(or_(a.source == source, b.source == source))
    if store:
        query = query.where(or_(a.store_code == store, b.store_code == store))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordering = (
        (ReviewQueueItem.probability.desc(), ReviewQueueItem.id)
        if order == "score"
        else (ReviewQueueItem.created_at, ReviewQueueItem.id)
    )
    rows = session.execute(query.order_by(*ordering).offset((page - 1) * per_page).limit(per_page)).all()
    return [_item_summary(item, ra, rb) for item, ra, rb in rows], int(total)


def _side(staged: StagedMember) -> dict[str, Any]:
    return {
        "staged_member_id": staged.id,
        "source": staged.source,
        "source_id": staged.source_id,
        "store_code": staged.store_code,
        "full_name": staged.full_name,
    }


def _item_summary(item: ReviewQueueItem, a: StagedMember, b: StagedMember) -> dict[str, Any]:
    return {
        "id": item.id,
        "status": item.status,
        "probability": item.probability,
        "weight": item.weight,
        "created_at": item.created_at,
        "a": _side(a),
        "b": _side(b),
    }


def review_item(session: Session, principal: Principal, item_id: int, *, via: str) -> dict[str, Any]:
    """One pair side by side: both records' fields, each comparison's level and weight, the members
    they belong to now, and the decision so far."""
    require(principal, "review.read")
    item = session.get(ReviewQueueItem, item_id)
    if item is None:
        raise not_found(f"review item {item_id}")
    records = {
        s.id: s
        for s in session.scalars(
            select(StagedMember).where(StagedMember.id.in_([item.staged_member_a, item.staged_member_b]))
        )
    }
    links = dict(
        session.execute(
            select(MemberLink.staged_member_id, MemberLink.member_id).where(
                MemberLink.staged_member_id.in_(list(records))
            )
        ).all()
    )
    compared = (
        "full_name",
        "family_name",
        "given_name",
        "name_pinyin",
        "phone",
        "email",
        "birthday",
        "gender",
        "city",
        "district",
        "store_code",
    )

    def side(staged: StagedMember) -> dict[str, Any]:
        return {
            **_side(staged),
            "member_id": links.get(staged.id),
            "fields": {f: _contact(principal, f, getattr(staged, f)) for f in compared},
        }

    evidence = item.evidence or {}
    audit_pii_read(session, principal, "review_item", str(item.id), via)
    return {
        **_item_summary(item, records[item.staged_member_a], records[item.staged_member_b]),
        "a": side(records[item.staged_member_a]),
        "b": side(records[item.staged_member_b]),
        "rule": evidence.get("rule"),
        "comparisons": [
            {
                "field": c.get("field"),
                "label": c.get("label"),
                "level": c.get("level"),
                "weight": c.get("weight"),
                "tf_adjustment": c.get("tf_adjustment"),
            }
            for c in evidence.get("comparisons", [])
        ],
        "decided_by": item.decided_by,
        "decided_at": item.decided_at,
        "note": item.note,
    }


def _members_of(session: Session, staged_ids: list[int]) -> dict[str, str | None]:
    rows = dict(
        session.execute(
            select(MemberLink.staged_member_id, MemberLink.member_id).where(MemberLink.staged_member_id.in_(staged_ids))
        ).all()
    )
    return {str(s): rows.get(s) for s in staged_ids}


def decide(session: Session, principal: Principal, item_id: int, decision: str, note: str | None) -> dict[str, Any]:
    """Merge, reject or defer a pair; audited with the members before and after."""
    require(principal, "review.decide")
    if decision not in DECISIONS:
        raise WebError(422, "invalid_decision", f"decision must be one of {', '.join(DECISIONS)}")
    item = session.get(ReviewQueueItem, item_id)
    if item is None:
        raise not_found(f"review item {item_id}")
    a, b = item.staged_member_a, item.staged_member_b
    before = {"status": item.status, "members": _members_of(session, [a, b])}
    if decision == "merge":
        steward.merge_pair(session, a, b, actor=principal.actor, reason=note)
    elif decision == "reject":
        steward.reject_pair(session, a, b, actor=principal.actor, reason=note)
    else:
        steward.defer_pair(session, a, b, actor=principal.actor, note=note)
    session.flush()
    session.refresh(item)
    after = {"status": item.status, "members": _members_of(session, [a, b]), "note": note}
    session.add(
        AuditLog(
            actor=principal.actor,
            action=f"review.{decision}",
            entity="review_item",
            entity_id=str(item.id),
            before=before,
            after=after,
        )
    )
    return {"id": item.id, "decision": decision, "status": item.status, "members": after["members"]}


# ----------------------------------------------------------------------------------------------- members
def split_member(
    session: Session, principal: Principal, member_id: str, leaving: list[int], reason: str | None
) -> dict[str, Any]:
    require(principal, "member.split")
    active, _ = visible_member(session, principal, member_id)
    if not leaving:
        raise WebError(422, "nothing_to_split", "choose at least one source record to leave the member")
    steward.split(session, active, leaving, actor=principal.actor, reason=reason)
    members = _members_of(session, sorted(set(leaving)))
    return {
        "member_id": active,
        "leaving": sorted(set(leaving)),
        "new_member_ids": sorted({m for m in members.values() if m and m != active}),
    }


def pin(
    session: Session, principal: Principal, member_id: str, field: str, value: str | None, reason: str | None
) -> dict[str, Any]:
    require(principal, "member.pin")
    active, _ = visible_member(session, principal, member_id)
    if field not in SURVIVING_FIELDS:
        raise WebError(422, "unknown_field", f"cannot pin {field!r}; fields: {', '.join(SURVIVING_FIELDS)}")
    steward.pin_field(session, active, field, value, actor=principal.actor, reason=reason)
    golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == active))
    return {"member_id": active, "field": field, "value": _text(getattr(golden, field)), "pinned": True}


def unpin(session: Session, principal: Principal, member_id: str, field: str) -> dict[str, Any]:
    require(principal, "member.pin")
    active, _ = visible_member(session, principal, member_id)
    if field not in SURVIVING_FIELDS:
        raise WebError(422, "unknown_field", f"cannot unpin {field!r}; fields: {', '.join(SURVIVING_FIELDS)}")
    steward.unpin_field(session, active, field, actor=principal.actor)
    golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == active))
    return {"member_id": active, "field": field, "value": _text(getattr(golden, field)), "pinned": False}


def adjust_points(
    session: Session,
    principal: Principal,
    programme: ProgrammeConfig,
    member_id: str,
    delta: int,
    reason: str,
    *,
    store_code: str | None = None,
    document: str | None = None,
) -> dict[str, Any]:
    """A points correction; a clerk's is booked to one of their stores."""
    require(principal, "points.adjust")
    active, _ = visible_member(session, principal, member_id)
    if principal.store_scoped:
        if store_code is None and len(principal.stores) == 1:
            store_code = principal.stores[0]
        if store_code not in principal.stores:
            raise WebError(422, "store_required", f"name one of your stores: {', '.join(principal.stores)}")
    balance = ledger.adjust(
        session,
        active,
        delta,
        reason=reason,
        actor=principal.actor,
        programme=programme,
        document=document,
        store_code=store_code,
    )
    return {"member_id": active, "delta": delta, "balance": balance, "store_code": store_code}


def points_statement(session: Session, principal: Principal, member_id: str) -> dict[str, Any]:
    active, _ = visible_member(session, principal, member_id)
    return {"member_id": active, **_points(session, active)}


# ----------------------------------------------------------------------------------------------- audit
def audit_page(
    session: Session,
    principal: Principal,
    *,
    actor: str | None = None,
    action: str | None = None,
    entity_id: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    require(principal, "audit.read")
    conditions = []
    if actor:
        conditions.append(AuditLog.actor == actor)
    if action:
        conditions.append(AuditLog.action == action)
    if entity_id:
        conditions.append(AuditLog.entity_id == entity_id)
    where = and_(*conditions) if conditions else None
    query = select(AuditLog)
    count = select(func.count()).select_from(AuditLog)
    if where is not None:
        query, count = query.where(where), count.where(where)
    total = session.scalar(count) or 0
    rows = session.scalars(query.order_by(AuditLog.id.desc()).offset((page - 1) * per_page).limit(per_page))
    return [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "entity": r.entity,
            "entity_id": r.entity_id,
            "before": r.before,
            "after": r.after,
        }
        for r in rows
    ], int(total)
