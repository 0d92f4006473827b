"""Identity resolution, skeleton edition: staged members that share a normalised phone or email
are one person. Golden ids are stable: a cluster keeps the id it had; when clusters join, the
older id survives, the other is redirected, and its points move with it (transfer entries).

The probabilistic resolver (issue: identity resolution) replaces ``_clusters``; the id keeping,
merging and survivorship below stay.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import ledger
from hub.tables import AuditLog, GoldenMember, MemberIdChange, MemberLink, StagedMember, utcnow

SURVIVING_FIELDS = ("full_name", "phone", "email", "birthday", "city")


@dataclass
class ResolveCounts:
    golden: int = 0  # active golden members after this run
    created: int = 0
    linked: int = 0  # staged members newly linked
    auto_merged: int = 0  # staged members newly joined to another record of the same person
    merged_golden: int = 0  # golden members folded into an older one


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _clusters(members: list[StagedMember]) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Group staged member ids by exact normalised phone or email; say which rule joined each."""
    uf = _UnionFind()
    rule: dict[int, str] = {}
    first_by_key: dict[tuple[str, str], int] = {}
    for member in members:
        uf.find(member.id)
        for key_name in ("phone", "email"):
            value = getattr(member, key_name)
            if not value:
                continue
            first = first_by_key.setdefault((key_name, value), member.id)
            if first != member.id:
                uf.union(first, member.id)
                rule.setdefault(member.id, f"exact_{key_name}")
    groups: dict[int, list[int]] = defaultdict(list)
    for member in members:
        groups[uf.find(member.id)].append(member.id)
    return groups, rule


def resolve(session: Session, *, actor: str = "system") -> ResolveCounts:
    counts = ResolveCounts()
    members = list(session.scalars(select(StagedMember).order_by(StagedMember.id)))
    by_id = {m.id: m for m in members}
    links = {link.staged_member_id: link for link in session.scalars(select(MemberLink))}
    golden = {g.member_id: g for g in session.scalars(select(GoldenMember))}
    next_seq = (session.scalar(select(func.max(GoldenMember.seq))) or 0) + 1
    groups, rule = _clusters(members)

    for staged_ids in groups.values():
        owners = sorted({links[i].member_id for i in staged_ids if i in links}, key=lambda mid: golden[mid].seq)
        if owners:
            survivor = golden[owners[0]]
        else:
            survivor = GoldenMember(seq=next_seq, member_id=f"MH{next_seq:08d}", status="active")
            session.add(survivor)
            golden[survivor.member_id] = survivor
            next_seq += 1
            counts.created += 1
        for absorbed_id in owners[1:]:
            _merge(session, golden[absorbed_id], survivor, links, actor)
            counts.merged_golden += 1
        for staged_id in staged_ids:
            if staged_id not in links:
                joined = len(staged_ids) > 1
                link = MemberLink(
                    staged_member_id=staged_id,
                    member_id=survivor.member_id,
                    rule=rule.get(staged_id, "exact_contact" if joined else "new"),
                    evidence=_evidence(by_id[staged_id], [by_id[i] for i in staged_ids]),
                )
                session.add(link)
                links[staged_id] = link
                counts.linked += 1
                counts.auto_merged += link.rule != "new"
        _survive(survivor, [by_id[i] for i in staged_ids])
    session.flush()
    counts.golden = sum(1 for g in golden.values() if g.status == "active")
    return counts


def _merge(
    session: Session, absorbed: GoldenMember, survivor: GoldenMember, links: dict[int, MemberLink], actor: str
) -> None:
    """Fold ``absorbed`` into the older ``survivor``: relink, redirect, move the points."""
    for link in links.values():
        if link.member_id == absorbed.member_id:
            link.member_id = survivor.member_id
    absorbed.status, absorbed.merged_into, absorbed.updated_at = "merged", survivor.member_id, utcnow()
    session.add(MemberIdChange(old_member_id=absorbed.member_id, new_member_id=survivor.member_id, kind="merge"))
    moved = ledger.transfer_balance(session, absorbed.member_id, survivor.member_id, actor=actor)
    session.add(
        AuditLog(
            actor=actor,
            action="merge",
            entity="golden_member",
            entity_id=absorbed.member_id,
            before={"member_id": absorbed.member_id},
            after={"merged_into": survivor.member_id, "points_moved": moved},
        )
    )


def _evidence(member: StagedMember, cluster: list[StagedMember]) -> dict[str, Any]:
    others = [m for m in cluster if m.id != member.id]
    return {
        "phone": sorted({m.source for m in others if member.phone and m.phone == member.phone}),
        "email": sorted({m.source for m in others if member.email and m.email == member.email}),
    }


def _survive(golden: GoldenMember, cluster: list[StagedMember]) -> None:
    """Most recent non-empty value wins, per field; lineage says which record and rule."""
    ordered = sorted(cluster, key=lambda m: (m.updated_at is not None, m.updated_at, m.id), reverse=True)
    lineage: dict[str, Any] = {}
    changed = False
    for field in SURVIVING_FIELDS:
        winner = next((m for m in ordered if getattr(m, field) not in (None, "")), None)
        value = getattr(winner, field) if winner else None
        if getattr(golden, field) != value:
            setattr(golden, field, value)
            changed = True
        if winner is not None:
            lineage[field] = {"source": winner.source, "source_id": winner.source_id, "rule": "most_recent"}
    if golden.lineage != lineage:
        golden.lineage = lineage
        changed = True
    if changed:
        golden.updated_at = utcnow()


def active_member_id(session: Session, member_id: str) -> str:
    """Follow merge redirects to the golden id that is active now."""
    seen = set()
    while member_id not in seen:
        seen.add(member_id)
        row = session.scalar(select(GoldenMember).where(GoldenMember.member_id == member_id))
        if row is None or row.merged_into is None:
            return member_id
        member_id = row.merged_into
    return member_id
