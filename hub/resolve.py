"""Identity resolution in the hub: staged members → golden members, with stable ids.

The matching itself is hub.resolution (deterministic rules, a Fellegi–Sunter model trained by EM,
constrained clustering). This module turns its clusters into golden members and keeps their ids
stable (ARCHITECTURE.md, principles 3–5):

* re-running on the same data changes nothing;
* when clusters join, the older golden id survives, the other is redirected (``member_id_changes``,
  kind ``merge``) and its points move with ``ledger.transfer_balance``;
* when records leave a golden member, the id stays with the record it was first given to and the
  part that leaves gets a new id (kind ``split``);
* a steward's merge, reject or split (``match_constraints``) and pinned fields survive every run;
* each link stores the evidence and weight that made it, each golden field its source and rule.

The resolver's index lives in memory, per database, and is kept current incrementally: each run
reads which staged members are new, changed or gone and re-decides only what they affect. A process
that starts cold rebuilds the index from the staged members — a full run, which gives the same
clusters as the incremental path by construction (tests/test_resolution_incremental.py).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from hub import ledger
from hub.resolution.engine import Resolver
from hub.resolution.model import Model
from hub.resolution.settings import SURVIVING_FIELDS, Settings, load_settings
from hub.resolution.survivorship import survive
from hub.tables import (
    AuditLog,
    GoldenFieldPin,
    GoldenMember,
    MatchConstraint,
    MatchModelRow,
    MemberIdChange,
    MemberLink,
    ReviewQueueItem,
    StagedMember,
    utcnow,
)

MATCH_FIELDS = ("family_name", "given_name", "full_name", "phone", "email", "birthday", "gender", "city")
OPTIONAL_MATCH_FIELDS = ("id_number", "loyalty_card", "postcode", "address")
"""Used when the staged member table has them (another issue adds hashed resident ids)."""
ID_CHUNK = 10_000
"""Ids per ``IN (...)`` list."""
MIN_TRAINING_RECORDS = 1000
"""Below this many staged members the model keeps its settings' starting values."""


@dataclass
class ResolveCounts:
    golden: int = 0  # active golden members after this run
    created: int = 0
    linked: int = 0  # staged members newly linked
    auto_merged: int = 0  # staged members newly joined to another record of the same person
    merged_golden: int = 0  # golden members folded into an older one
    split: int = 0  # golden ids minted for records that left a golden member
    relinked: int = 0  # staged members moved from one golden member to another
    review_queued: int = 0  # open pairs in the review queue after this run
    rematched: int = 0  # staged members whose candidates were scored again this run
    model_trained: bool = False


# ------------------------------------------------------------------------------------------ the index
@dataclass
class _Index:
    resolver: Resolver
    model_id: int | None
    fingerprints: dict[int, tuple]
    must: set[tuple[int, int]]
    cannot: set[tuple[int, int]]


_INDEXES: dict[str, _Index] = {}
_LOCK = threading.Lock()


def _index_key(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=False)


def forget_index(session: Session | None = None) -> None:
    """Drop the in-memory index (all of them without a session): the next run rebuilds it."""
    with _LOCK:
        if session is None:
            _INDEXES.clear()
        else:
            _INDEXES.pop(_index_key(session), None)


def _match_record(member: Any) -> dict[str, Any]:
    record = {f: getattr(member, f, None) for f in MATCH_FIELDS}
    for f in OPTIONAL_MATCH_FIELDS:
        record[f] = getattr(member, f, None)
    return record


def _match_records(session: Session) -> dict[int, dict[str, Any]]:
    """Every staged member's match fields by id, in id order: plain rows, not ORM objects (building
    an object per member cost more than matching it)."""
    names = (*MATCH_FIELDS, *OPTIONAL_MATCH_FIELDS)
    present = [f for f in names if f in StagedMember.__table__.c]
    columns = [getattr(StagedMember, f) for f in present]
    rows = session.execute(select(StagedMember.id, *columns).order_by(StagedMember.id))
    records = {}
    for row in rows:
        found = dict(zip(present, row[1:], strict=True))
        records[row[0]] = {f: found.get(f) for f in names}
    return records


def _fingerprint(record: dict[str, Any]) -> tuple:
    return tuple(record.get(f) for f in (*MATCH_FIELDS, *OPTIONAL_MATCH_FIELDS))


def _load_model(session: Session, settings: Settings) -> tuple[int | None, Model | None]:
    row = session.scalar(select(MatchModelRow).order_by(MatchModelRow.id.desc()).limit(1))
    if row is None:
        return None, None
    return row.id, Model.from_json(row.params)


def _labels(session: Session) -> list[tuple[int, int, bool]]:
    """Steward decisions as training labels: constraints and decided review pairs."""
    out = [
        (c.staged_member_a, c.staged_member_b, c.kind == "must_link") for c in session.scalars(select(MatchConstraint))
    ]
    for item in session.scalars(select(ReviewQueueItem).where(ReviewQueueItem.status.in_(("merged", "rejected")))):
        out.append((item.staged_member_a, item.staged_member_b, item.status == "merged"))
    return out


def train_model(session: Session, *, settings: Settings | None = None, actor: str = "system") -> Model | None:
    """Train a model on every staged member (EM, steward decisions as labels) and store it: the
    next run uses it and re-decides every cluster with it. None when there are too few candidate
    pairs to learn from (settings ``training.min_pairs``): the settings' starting values stay."""
    settings = settings or load_settings()
    members = _match_records(session)
    resolver = Resolver(settings)
    resolver.add(list(members), list(members.values()), train=True, labels=_labels(session))
    model = resolver.model
    if not model.trained_pairs:
        return None
    row = MatchModelRow(
        params=model.to_json(),
        records=len(members),
        pairs=model.trained_pairs,
        labelled_pairs=model.labelled_pairs,
        created_by=actor,
    )
    session.add(row)
    session.add(
        AuditLog(
            actor=actor,
            action="train_model",
            entity="match_model",
            entity_id="new",
            before=None,
            after={"records": len(members), "pairs": model.trained_pairs, "prior": model.prior},
        )
    )
    session.flush()
    forget_index(session)
    return model


def _sync_index(session: Session, settings: Settings, counts: ResolveCounts) -> tuple[_Index, set[int]]:
    """Bring the in-memory index up to date; also return the staged members whose values changed."""
    model_id, model = _load_model(session, settings)
    if model is None and session.scalar(select(func.count()).select_from(StagedMember)) >= MIN_TRAINING_RECORDS:
        model = train_model(session, settings=settings)
        if model is not None:
            model_id = session.scalar(select(func.max(MatchModelRow.id)))
            counts.model_trained = True
    key = _index_key(session)
    with _LOCK:
        index = _INDEXES.get(key)
        if index is None or index.model_id != model_id or index.resolver.settings is not settings:
            index = _Index(Resolver(settings, model), model_id, {}, set(), set())
            _INDEXES[key] = index
    records = _match_records(session)
    changed = [i for i, r in records.items() if index.fingerprints.get(i) != _fingerprint(r)]
    gone = [i for i in index.fingerprints if i not in records]
    if gone:
        update = index.resolver.remove(gone)
        counts.rematched += update.dirty
        for i in gone:
            index.fingerprints.pop(i, None)
    if changed:
        update = index.resolver.add(changed, [records[i] for i in changed])
        counts.rematched += update.dirty
        for i in changed:
            index.fingerprints[i] = _fingerprint(records[i])
    must, cannot = set(), set()
    for c in session.scalars(select(MatchConstraint)):
        if c.staged_member_a in records and c.staged_member_b in records:
            (must if c.kind == "must_link" else cannot).add((c.staged_member_a, c.staged_member_b))
    for pair in (index.must - must) | (index.cannot - cannot):  # a decision withdrawn or replaced
        index.resolver.unconstrain(*pair)
    for pair in (must - index.must) | (cannot - index.cannot):
        index.resolver.constrain(*pair, same=pair in must)
    index.must, index.cannot = must, cannot
    return index, set(changed)


# ------------------------------------------------------------------------------------------ resolve
def resolve(session: Session, *, actor: str = "system", settings: Settings | None = None) -> ResolveCounts:
    """Bring golden members, links, the review queue and lineage up to date with the staged members."""
    settings = settings or load_settings()
    counts = ResolveCounts()
    index, changed = _sync_index(session, settings, counts)
    resolver = index.resolver
    clusters: dict[Any, list[int]] = defaultdict(list)
    for staged_id, head in resolver.clusters().items():
        clusters[head].append(staged_id)

    # The evidence is only ever replaced here, never read: not loaded (it is most of a link's bytes).
    unread = defer(MemberLink.evidence)
    links = {link.staged_member_id: link for link in session.scalars(select(MemberLink).options(unread))}
    golden = {g.member_id: g for g in session.scalars(select(GoldenMember))}
    by_golden: dict[str, list[int]] = defaultdict(list)
    for staged_id, link in links.items():
        by_golden[link.member_id].append(staged_id)

    cluster_of = {s: head for head, members in clusters.items() for s in members}
    home: dict[str, Any] = {}  # golden id -> the cluster that keeps it
    for member_id, staged_ids in by_golden.items():
        present = [s for s in staged_ids if s in cluster_of]
        if present:
            first = min(present, key=lambda s: (links[s].linked_at, s))
            home[member_id] = cluster_of[first]
    claim: dict[Any, list[str]] = defaultdict(list)
    for member_id, head in home.items():
        claim[head].append(member_id)

    next_seq = (session.scalar(select(func.max(GoldenMember.seq))) or 0) + 1
    touched_golden: set[str] = set()
    scored: list[tuple[MemberLink, Any]] = []  # links whose evidence is scored in one pass below
    for head, staged_ids in sorted(clusters.items(), key=lambda kv: min(kv[1])):
        owners = sorted(claim.get(head, []), key=lambda mid: golden[mid].seq)
        current = {links[s].member_id for s in staged_ids if s in links}
        if owners and current == {owners[0]} and sorted(by_golden[owners[0]]) == sorted(staged_ids):
            if changed.intersection(staged_ids):  # same members, new values: new evidence
                _evidence(resolver, staged_ids, links, scored)
                touched_golden.add(owners[0])
            continue  # unchanged cluster
        if owners:
            survivor = golden[owners[0]]
        else:
            survivor = GoldenMember(seq=next_seq, member_id=f"MH{next_seq:08d}", status="active")
            session.add(survivor)
            golden[survivor.member_id] = survivor
            next_seq += 1
            left = sorted({links[s].member_id for s in staged_ids if s in links})
            if left:
                counts.split += 1
                for old in left:
                    _split(session, golden[old], survivor, [s for s in staged_ids if links[s].member_id == old], actor)
            else:
                counts.created += 1
        for absorbed in owners[1:]:
            _merge(session, golden[absorbed], survivor, links, actor)
            counts.merged_golden += 1
        joined = len(staged_ids) > 1
        for staged_id in staged_ids:
            link = links.get(staged_id)
            if link is None:
                link = MemberLink(staged_member_id=staged_id, member_id=survivor.member_id, rule="new", evidence={})
                session.add(link)
                links[staged_id] = link
                counts.linked += 1
                counts.auto_merged += joined
            elif link.member_id != survivor.member_id:
                touched_golden.add(link.member_id)
                link.member_id = survivor.member_id
                link.linked_at = utcnow()
                counts.relinked += 1
        touched_golden.add(survivor.member_id)
        _evidence(resolver, staged_ids, links, scored)
    _fill_evidence(resolver, scored)

    session.flush()
    pins: dict[str, dict[str, Any]] = defaultdict(dict)
    for pin in session.scalars(select(GoldenFieldPin)):
        pins[pin.member_id][pin.field] = {"value": pin.value, "by": pin.pinned_by, "at": pin.pinned_at.isoformat()}
    members_of: dict[str, list[int]] = defaultdict(list)
    for staged_id, link in links.items():
        members_of[link.member_id].append(staged_id)
    # survivorship only where something changed: membership, a record's values, or a pin
    touched_golden |= set(pins) & set(members_of)
    touched_golden |= {links[s].member_id for s in changed if s in links}
    needed = sorted({s for member_id in touched_golden for s in members_of.get(member_id, ())})
    members: dict[int, StagedMember] = {}
    for start in range(0, len(needed), ID_CHUNK):  # PostgreSQL takes at most 65,535 parameters a statement
        chunk = needed[start : start + ID_CHUNK]
        members.update((m.id, m) for m in session.scalars(select(StagedMember).where(StagedMember.id.in_(chunk))))
    for member_id in sorted(touched_golden & set(members_of)):
        staged_ids = members_of[member_id]
        _survive(golden[member_id], [members[s] for s in staged_ids if s in members], settings, pins.get(member_id))
    for member_id in touched_golden - set(members_of):
        g = golden[member_id]
        if g.status == "active" and g.merged_into is None:
            g.status = "empty"  # every record left; the id stays readable in member_id_changes
    counts.review_queued = _review_queue(session, resolver)
    session.flush()
    counts.golden = sum(1 for g in golden.values() if g.status == "active")
    return counts


def _evidence(
    resolver: Resolver, staged_ids: list[int], links: dict[int, MemberLink], scored: list[tuple[MemberLink, Any]]
) -> None:
    """Each link's evidence: the strongest scored link to another record of its cluster. Links that
    need the scored evidence are added to ``scored`` (with their rule), filled by ``_fill_evidence``."""
    mates = set(staged_ids)
    for staged_id in staged_ids:
        link = links[staged_id]
        best = next((lk for lk in resolver.links(staged_id) if lk.b in mates), None)
        if best is None:
            must = [resolver.frame.keys[q] for q in resolver.must.get(resolver.frame.position[staged_id], ())]
            if any(m in mates for m in must):
                link.rule, link.evidence = "steward", {"must_link": sorted(m for m in must if m in mates)}
            elif len(staged_ids) > 1:
                link.rule, link.evidence = "cluster", {"cluster": sorted(staged_ids)}
            else:
                link.rule, link.evidence = "new", {}
            continue
        scored.append((link, best))


def _fill_evidence(resolver: Resolver, scored: list[tuple[MemberLink, Any]]) -> None:
    found = resolver.explain_many([(best.a, best.b) for _link, best in scored])
    for (link, best), evidence in zip(scored, found, strict=True):
        evidence["linked_to"] = best.b
        link.rule, link.evidence = best.rule if best.rule != "score" else "probabilistic", evidence


def _review_queue(session: Session, resolver: Resolver) -> int:
    """Open a review item for each uncertain pair; close items whose pair no longer needs review."""
    wanted = {(min(a, b), max(a, b)): w for a, b, w in resolver.review_pairs()}
    existing = {(i.staged_member_a, i.staged_member_b): i for i in session.scalars(select(ReviewQueueItem))}
    for pair, item in existing.items():
        if item.status in ("open", "deferred") and pair not in wanted:
            item.status, item.updated_at = "obsolete", utcnow()
    to_write = [
        (pair, weight)
        for pair, weight in wanted.items()
        if existing.get(pair) is None or existing[pair].status not in ("merged", "rejected")
    ]
    found = resolver.explain_many([pair for pair, _weight in to_write])
    for (pair, weight), evidence in zip(to_write, found, strict=True):
        item = existing.get(pair)
        if item is None:
            session.add(
                ReviewQueueItem(
                    staged_member_a=pair[0],
                    staged_member_b=pair[1],
                    weight=round(weight, 4),
                    probability=evidence["probability"],
                    evidence=evidence,
                    status="open",
                )
            )
        else:
            if item.status == "obsolete":
                item.status = "open"
            item.weight, item.probability, item.evidence = round(weight, 4), evidence["probability"], evidence
            item.updated_at = utcnow()
    session.flush()
    return int(session.scalar(select(func.count()).where(ReviewQueueItem.status == "open")) or 0)


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


def _split(session: Session, source: GoldenMember, new: GoldenMember, leaving: list[int], actor: str) -> None:
    """Records ``leaving`` left ``source`` for the new golden member ``new``."""
    session.add(MemberIdChange(old_member_id=source.member_id, new_member_id=new.member_id, kind="split"))
    split_balance = getattr(ledger, "split_balance", None)
    moved: Any = None
    if callable(split_balance):
        moved = split_balance(session, source.member_id, new.member_id, staged_member_ids=leaving, actor=actor)
    session.add(
        AuditLog(
            actor=actor,
            action="split",
            entity="golden_member",
            entity_id=source.member_id,
            before={"member_id": source.member_id},
            after={"new_member_id": new.member_id, "staged_members": sorted(leaving), "points_moved": moved},
        )
    )


def _survive(golden: GoldenMember, cluster: list[StagedMember], settings: Settings, pins: dict | None) -> None:
    records = [
        {
            "id": m.id,
            "source": m.source,
            "source_id": m.source_id,
            "updated_at": m.updated_at,
            "created_at": m.created_at,
            **{f: getattr(m, f) for f in SURVIVING_FIELDS},
        }
        for m in cluster
    ]
    values, lineage = survive(SURVIVING_FIELDS, records, settings.survivorship, pins)
    changed = False
    for field, value in values.items():
        if field == "birthday" and isinstance(value, str):
            value = date.fromisoformat(value)
        if getattr(golden, field) != value:
            setattr(golden, field, value)
            changed = True
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
