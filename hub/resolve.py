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

The resolver's index lives in memory, per database, and is kept current incrementally. Database
triggers queue every staged member that is inserted, updated or deleted, and those a steward's
decision or pin names (``resolution_queue``, migration 0010_5); a run takes the queue and re-decides
only what those records affect, reading only them, the links and golden members of the clusters the
resolver decided again, and the review pairs that involve them. A run with an empty queue reads
nothing else and writes nothing. A process that starts cold, or finds that another process resolved
since (``resolution_state.generation``), rebuilds the index from the staged members with the stored
model, no retraining — a full run, which gives the same clusters as the incremental path by
construction (tests/test_resolution_incremental.py, tests/test_resolution_queue.py).

Links, golden members and review items are read and written with Core statements, not the ORM: plain
rows (hub.resolution.rows), new ones inserted in one call, changed columns in one UPDATE per set of
columns, and only what changed (phone and e-mail compared by blind index, evidence recomputed only
for links whose pair or values changed).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, any_, delete, event, exists, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from hub import ledger
from hub.db import insert_many, update_many
from hub.resolution.engine import Resolver, Update
from hub.resolution.model import Model
from hub.resolution.rows import GOLDEN_KEYS, GOLDEN_VALUES, GoldenRow, LinkRow, write_golden, write_links
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
    ResolutionQueueRow,
    ResolutionState,
    ReviewQueueItem,
    StagedMember,
    utcnow,
)

MATCH_FIELDS = ("family_name", "given_name", "full_name", "phone", "email", "birthday", "gender", "city")
OPTIONAL_MATCH_FIELDS = ("id_number", "loyalty_card", "postcode", "address")
"""Used when the staged member table has them (another issue adds hashed resident ids)."""
ID_CHUNK = 10_000
"""Ids per ``IN (...)`` list (PostgreSQL takes them all as one array parameter)."""
SURVIVOR_COLUMNS = ("id", "source", "source_id", "updated_at", "created_at", *SURVIVING_FIELDS)
"""What survivorship reads of a staged member."""
CONSTRAINED = "constrained"
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
    emptied: int = 0  # golden members every record left
    relinked: int = 0  # staged members moved from one golden member to another
    review_queued: int = 0  # open pairs in the review queue after this run
    rematched: int = 0  # staged members whose candidates were scored again this run
    model_trained: bool = False


# ------------------------------------------------------------------------------------------ the index
@dataclass
class _Index:
    resolver: Resolver
    model_id: int | None
    generation: int | None  # the resolution_state generation it matches; None while a run changes it
    must: set[tuple[int, int]]
    cannot: set[tuple[int, int]]
    active_golden: int | None = None  # counted when the index is built, then kept by each run


_INDEXES: dict[str, _Index] = {}
_LOCK = threading.Lock()
QUEUED_DIALECTS = ("postgresql", "sqlite")
"""Backends whose migration installs the triggers that fill ``resolution_queue``. Elsewhere every
run reads all staged members, as a cold process does."""


def _index_key(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=False)


def invalidate_indexes(session: Session) -> None:
    """Golden members changed outside a resolution run (an erasure): every process's index, and the
    golden count kept with it, is out of date; each rebuilds on its next run."""
    state, _ = _state(session)
    state.generation += 1
    session.flush()
    forget_index(session)


def forget_index(session: Session | None = None) -> None:
    """Drop the in-memory index (all of them without a session): the next run with work rebuilds it."""
    with _LOCK:
        if session is None:
            _INDEXES.clear()
        else:
            _INDEXES.pop(_index_key(session), None)


def _match_records(session: Session, ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """Staged members' match fields by id (all of them, or those of ``ids``), in id order: plain rows,
    not ORM objects (building an object per member cost more than matching it). Those of ``ids``
    also carry what survivorship reads (``SURVIVOR_COLUMNS``), so a run decrypts them once, and
    ``CONSTRAINED``: whether a steward's constraint names them."""
    extra = () if ids is None else SURVIVOR_COLUMNS
    names = [f for f in dict.fromkeys((*MATCH_FIELDS, *OPTIONAL_MATCH_FIELDS, *extra)) if f != "id"]
    present = [f for f in names if f in StagedMember.__table__.c]
    columns = [getattr(StagedMember, f) for f in present]
    if ids is not None:
        mc = MatchConstraint.__table__
        named = or_(mc.c.staged_member_a == StagedMember.id, mc.c.staged_member_b == StagedMember.id)
        columns.append(exists().where(named).label(CONSTRAINED))
        present.append(CONSTRAINED)
        names.append(CONSTRAINED)
    query = select(StagedMember.id, *columns).order_by(StagedMember.id)
    rows = session.execute(query) if ids is None else _rows_in_chunks(session, query, StagedMember.id, ids)
    records = {}
    for row in rows:
        found = dict(zip(present, row[1:], strict=True))
        records[row[0]] = {f: found.get(f) for f in names}
        if extra:
            records[row[0]]["id"] = row[0]
    return records


def _latest_model_id(session: Session) -> int | None:
    return session.scalar(select(func.max(MatchModelRow.id)))


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


def _state(session: Session) -> tuple[ResolutionState, int | None]:
    """The resolution state, locked until the run commits (two runs never decide at the same time),
    and the latest model's id, read with it."""
    latest = select(func.max(MatchModelRow.id)).scalar_subquery()
    query = select(ResolutionState, latest).where(ResolutionState.id == 1).with_for_update(of=ResolutionState)
    found = session.execute(query).first()
    if found is not None:
        return found[0], found[1]
    state = ResolutionState(id=1, generation=0, model_id=None)
    session.add(state)
    session.flush()
    return state, _latest_model_id(session)


def _take_queue(session: Session) -> set[int]:
    """The staged members queued since the last run, taken off the queue (for good when this run
    commits). Exactly the rows read are taken: a change committed meanwhile stays for the next run."""
    table = ResolutionQueueRow.__table__
    return set(session.scalars(delete(table).returning(table.c.staged_member_id)))


def _constraints(session: Session, ids: set[int] | None) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Steward constraints (must, cannot), all of them or those naming one of ``ids``."""
    query = select(MatchConstraint.kind, MatchConstraint.staged_member_a, MatchConstraint.staged_member_b)
    if ids is None:
        rows = list(session.execute(query))
    else:
        rows = _rows_in_chunks(session, query, (MatchConstraint.staged_member_a, MatchConstraint.staged_member_b), ids)
    must, cannot = set(), set()
    for kind, a, b in rows:
        (must if kind == "must_link" else cannot).add((a, b))
    return must, cannot


def _apply_constraints(
    index: _Index, must: set[tuple[int, int]], cannot: set[tuple[int, int]], scope: set[int] | None, updates: list
) -> None:
    """Bring the index's constraints in line with ``must`` and ``cannot`` (within ``scope``: pairs
    naming one of those ids; None: all)."""
    resolver = index.resolver
    alive = resolver.frame.alive.a
    position = resolver.frame.position

    def live(pair: tuple[int, int]) -> bool:
        return all(k in position and alive[position[k]] for k in pair)

    def inside(pair: tuple[int, int]) -> bool:
        return scope is None or pair[0] in scope or pair[1] in scope

    must, cannot = {p for p in must if live(p)}, {p for p in cannot if live(p)}
    old_must, old_cannot = {p for p in index.must if inside(p)}, {p for p in index.cannot if inside(p)}
    for pair in (old_must - must) | (old_cannot - cannot):  # a decision withdrawn or replaced
        if live(pair):
            updates.append(resolver.unconstrain(*pair))
    for pair in (must - old_must) | (cannot - old_cannot):
        updates.append(resolver.constrain(*pair, same=pair in must))
    index.must = (index.must - old_must) | must
    index.cannot = (index.cannot - old_cannot) | cannot


def _build_index(session: Session, settings: Settings, model_id: int | None, counts: ResolveCounts) -> _Index:
    """A fresh index of every staged member (a cold process, another process's run, a new model)."""
    row = session.get(MatchModelRow, model_id) if model_id is not None else None
    model = Model.from_json(row.params) if row is not None else None
    index = _Index(Resolver(settings, model), model_id, None, set(), set())
    records = _match_records(session)
    update = index.resolver.add(list(records), list(records.values()))
    counts.rematched += update.dirty
    updates: list[Update] = []
    _apply_constraints(index, *_constraints(session, None), None, updates)
    return index


def _update_index(
    session: Session, index: _Index, queued: set[int], counts: ResolveCounts
) -> tuple[set[int], dict[int, dict[str, Any]]]:
    """Feed the queued staged members to a current index; return the staged members whose cluster
    was decided again (with everything they may have pulled along), and the records read."""
    resolver = index.resolver
    records = _match_records(session, queued)
    constrained = [r.pop(CONSTRAINED) for r in records.values()]
    position, alive = resolver.frame.position, resolver.frame.alive.a
    gone = [i for i in queued if i not in records and i in position and alive[position[i]]]
    updates: list[Update] = []
    if gone:
        updates.append(resolver.remove(gone))
    if records:
        updates.append(resolver.add(list(records), list(records.values())))
    # the constraints naming them: only read when there are some (a decision on them, or one withdrawn)
    if any(constrained) or any(a in queued or b in queued for a, b in index.must | index.cannot):
        _apply_constraints(index, *_constraints(session, queued), queued, updates)
    touched: set[int] = set()
    for update in updates:
        counts.rematched += update.dirty
        touched.update(update.touched)
    return touched, records


def _prepare(
    session: Session, settings: Settings, counts: ResolveCounts
) -> tuple[_Index, set[int] | None, set[int] | None, ResolutionState, dict[int, dict[str, Any]]] | None:
    """Bring the in-memory index up to date. Returns (index, the staged members whose golden member
    may change — None: all, the staged members whose values or decisions changed — None: all, the
    locked resolution state, the staged members read with their survivorship values), or None when
    nothing changed since the last run."""
    state, model_id = _state(session)
    queued = _take_queue(session)
    queued_by_triggers = session.get_bind().dialect.name in QUEUED_DIALECTS
    if queued_by_triggers and model_id == state.model_id and not queued:
        return None  # nothing new since the last run: nothing to read, nothing to write
    enough = model_id is None and session.scalar(select(func.count()).select_from(StagedMember)) >= MIN_TRAINING_RECORDS
    if enough and train_model(session, settings=settings) is not None:
        model_id = _latest_model_id(session)
        counts.model_trained = True
    same_model = model_id == state.model_id
    key = _index_key(session)
    with _LOCK:
        index = _INDEXES.pop(key, None)  # back when this run commits (an error leaves no half-updated index)
    warm = (
        queued_by_triggers
        and same_model
        and index is not None
        and index.generation == state.generation
        and index.model_id == model_id
        and index.resolver.settings is settings
    )
    if warm:
        touched, read = _update_index(session, index, queued, counts)
        return index, touched | queued, queued, state, read
    index = _build_index(session, settings, model_id, counts)
    return index, None, (queued if queued_by_triggers and same_model else None), state, {}


def _finish(session: Session, index: _Index, state: ResolutionState) -> None:
    """Record the run: the next one in this process starts from the index as it is now."""
    state.generation += 1
    state.model_id = index.model_id
    state.updated_at = utcnow()
    session.flush()
    index.generation = state.generation
    key = _index_key(session)
    session.info.setdefault("resolution_indexes", {})[key] = index
    if not session.info.get("resolution_hook"):
        session.info["resolution_hook"] = True
        event.listen(session, "after_commit", _keep_indexes)
        event.listen(session, "after_soft_rollback", _drop_indexes)


def _keep_indexes(session: Session) -> None:
    with _LOCK:
        _INDEXES.update(session.info.pop("resolution_indexes", {}))


def _drop_indexes(session: Session, _previous: Any) -> None:
    session.info.pop("resolution_indexes", None)


# ------------------------------------------------------------------------------------------ resolve
def resolve(session: Session, *, actor: str = "system", settings: Settings | None = None) -> ResolveCounts:
    """Bring golden members, links, the review queue and lineage up to date with the staged members.

    Only what changed since the last run is read and decided again: the staged members the queue
    names, the clusters their candidates belong to, and the review pairs that involve them."""
    settings = settings or load_settings()
    counts = ResolveCounts()
    prepared = _prepare(session, settings, counts)
    if prepared is None:
        index, state = _INDEXES.get(_index_key(session)), session.get(ResolutionState, 1)  # state: already read
        current = index is not None and state is not None and index.generation == state.generation
        counts.golden = index.active_golden if current else _active_golden(session)
        counts.review_queued = _open_reviews(session)
        return counts
    index, scope, changed, state, read = prepared
    resolver = index.resolver
    links, golden, clusters = _load_scope(session, resolver, scope)
    if changed is None:  # a new model: every link's evidence and every golden member again
        changed = set(links).union(*clusters.values())
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

    now = utcnow()
    next_seq = 0  # read when the first new golden member needs one
    touched_golden: set[str] = set()
    scored: list[tuple[LinkRow, Any]] = []  # links whose evidence is scored in one pass below
    moves: list[tuple[Any, GoldenRow, GoldenRow, list[int] | None]] = []  # merges and splits
    for head, staged_ids in sorted(clusters.items(), key=lambda kv: min(kv[1])):
        owners = sorted(claim.get(head, []), key=lambda mid: golden[mid].seq)
        current = {links[s].member_id for s in staged_ids if s in links}
        if owners and current == {owners[0]} and sorted(by_golden[owners[0]]) == sorted(staged_ids):
            if changed.intersection(staged_ids):  # same members, new values: new evidence
                _evidence(resolver, staged_ids, links, scored, changed)
                touched_golden.add(owners[0])
            continue  # unchanged cluster
        if owners:
            survivor = golden[owners[0]]
        else:
            next_seq = next_seq or (session.scalar(select(func.max(GoldenMember.seq))) or 0) + 1
            survivor = golden[f"MH{next_seq:08d}"] = GoldenRow(next_seq, f"MH{next_seq:08d}", new=True)
            next_seq += 1
            left = sorted({links[s].member_id for s in staged_ids if s in links})
            if left:
                counts.split += 1
                for old in left:
                    leaving = [s for s in staged_ids if s in links and links[s].member_id == old]
                    moves.append((_split, golden[old], survivor, leaving))
            else:
                counts.created += 1
        for absorbed in owners[1:]:
            _fold(golden[absorbed], survivor, [links[s] for s in by_golden[absorbed]])
            moves.append((_merge, golden[absorbed], survivor, None))
            counts.merged_golden += 1
        joined = len(staged_ids) > 1
        for staged_id in staged_ids:
            link = links.get(staged_id)
            if link is None:
                links[staged_id] = LinkRow(staged_id, survivor.member_id, now, new=True)
                counts.linked += 1
                counts.auto_merged += joined
            elif link.member_id != survivor.member_id:
                touched_golden.add(link.member_id)
                link.move(survivor.member_id, now)
                counts.relinked += 1
        touched_golden.add(survivor.member_id)
        _evidence(resolver, staged_ids, links, scored, changed)
    _fill_evidence(resolver, scored)

    members_of: dict[str, list[int]] = defaultdict(list)
    for staged_id, link in links.items():
        members_of[link.member_id].append(staged_id)
    # survivorship only where something changed: membership, a record's values, or a pin
    touched_golden |= {links[s].member_id for s in changed if s in links}
    wanted = sorted(touched_golden & set(members_of))
    pins = _golden_values(session, golden, [m for m in wanted if not golden[m].new])
    members = _survivor_records(session, {s for m in wanted for s in members_of[m]}, read)
    for member_id in wanted:
        cluster = [members[s] for s in members_of[member_id] if s in members]
        _survive(golden[member_id], cluster, settings, pins.get(member_id))
    for member_id in touched_golden - set(members_of):
        g = golden[member_id]
        if g.status == "active" and g.merged_into is None:
            g.set("status", "empty")  # every record left; the id stays readable in member_id_changes
            counts.emptied += 1

    session.flush()  # what the caller changed, before the rows below are written around the ORM
    write_golden(session, list(golden.values()), now)
    write_links(session, list(links.values()))
    for move, source, target, leaving in moves:
        move(session, source, target, leaving, actor)
    _review_queue(session, resolver, scope, now)
    _refresh(session, golden, links, now)
    if scope is None or index.active_golden is None:
        session.flush()
        index.active_golden = _active_golden(session)
    else:
        index.active_golden += counts.created + counts.split - counts.merged_golden - counts.emptied
    counts.golden = index.active_golden
    _finish(session, index, state)
    counts.review_queued = _open_reviews(session)
    return counts


def _active_golden(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(GoldenMember.status == "active")) or 0)


def _open_reviews(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(ReviewQueueItem.status == "open")) or 0)


def _among(session: Session, column: Any, ids: list[Any]) -> Any:
    """``column IN ids``; on PostgreSQL one array parameter (``= ANY``): psycopg took longer to
    convert a statement with thousands of placeholders than the server took to run it."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(ids), ARRAY(column.type)))
    return column.in_(ids)


def _chunks(session: Session, ids: Iterable[Any]) -> list[list[Any]]:
    """``ids`` sorted, in as many lists as one statement each takes: one on PostgreSQL (an array)."""
    ids = sorted(ids)
    size = max(len(ids), 1) if session.get_bind().dialect.name == "postgresql" else ID_CHUNK
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _rows_in_chunks(session: Session, query: Any, columns: Any, ids: Iterable[Any]) -> list[Any]:
    """The rows of a Core ``query`` where ``columns`` (one column, or a tuple: any of them) is one of ``ids``."""
    columns = columns if isinstance(columns, tuple) else (columns,)
    out: list[Any] = []
    for chunk in _chunks(session, ids):
        out.extend(session.execute(query.where(or_(*(_among(session, column, chunk) for column in columns)))))
    return out


def _load_scope(
    session: Session, resolver: Resolver, scope: set[int] | None
) -> tuple[dict[int, LinkRow], dict[str, GoldenRow], dict[Any, list[int]]]:
    """The links, golden members and clusters a run may change: everything (``scope`` None), or
    the clusters of the staged members in ``scope`` with every golden member they are linked to and
    every record of those. A cluster the run did not decide again is, record for record, the golden
    member it was linked to last time, so this closes over whole clusters and whole golden members.

    Plain rows from Core selects, nothing decrypted. Within a scope, one statement reads the links
    with the record their evidence names, and their golden members; a full run leaves the evidence
    unread (it explains every cluster it decides again)."""
    position, alive, label, keys = (
        resolver.frame.position,
        resolver.frame.alive.a,
        resolver.label,
        resolver.frame.keys,
    )
    lt, gt = MemberLink.__table__, GoldenMember.__table__
    linked_to = lt.c.evidence["linked_to"].as_integer()
    golden_columns = [gt.c[name] for name in GOLDEN_KEYS]
    links: dict[int, LinkRow] = {}
    golden: dict[str, GoldenRow] = {}
    if scope is None:
        query = select(lt.c.staged_member_id, lt.c.member_id, lt.c.linked_at, lt.c.rule)
        for s, member_id, linked_at, rule in session.execute(query):
            links[s] = LinkRow(s, member_id, linked_at, rule)
        for row in session.execute(select(*golden_columns)):
            golden[row.member_id] = GoldenRow(*row)
        staged = [keys[p] for p in np.nonzero(alive)[0].tolist()]
    else:
        for chunk in _chunks(session, scope):
            around = select(lt.c.member_id).where(_among(session, lt.c.staged_member_id, chunk))
            query = (
                select(lt.c.staged_member_id, lt.c.linked_at, lt.c.rule, linked_to, *golden_columns)
                .join_from(lt, gt, gt.c.member_id == lt.c.member_id)
                .where(lt.c.member_id.in_(around))
            )
            for s, linked_at, rule, to, *values in session.execute(query):
                g = golden.get(values[1]) or golden.setdefault(values[1], GoldenRow(*values))
                links.setdefault(s, LinkRow(s, g.member_id, linked_at, rule, to))
        staged = [s for s in scope | set(links) if s in position and alive[position[s]]]
    clusters: dict[Any, list[int]] = defaultdict(list)
    for s in staged:
        clusters[keys[int(label[position[s]])]].append(s)
    return links, golden, clusters


def _refresh(session: Session, golden: dict[str, GoldenRow], links: dict[int, LinkRow], now: Any) -> None:
    """Rows were written around the ORM: objects of them the session holds get the values written
    (as if loaded again), and review items it holds are read again when next used."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, GoldenMember):
            row = golden.get(obj.member_id)
            if row is not None and row.changed:
                for column in (*row.changed, "updated_at"):
                    set_committed_value(obj, column, now if column == "updated_at" else getattr(row, column))
        elif isinstance(obj, MemberLink):
            link = links.get(obj.staged_member_id)
            if link is not None and link.changed:
                for column in link.changed:
                    set_committed_value(obj, column, getattr(link, column))
        elif isinstance(obj, ReviewQueueItem):
            session.expire(obj)


def _golden_values(session: Session, golden: dict[str, GoldenRow], member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Read the stored values of these golden members (to compare the chosen ones with) and return
    their stewards' pins (field -> value, by, at), in one statement."""
    pins: dict[str, dict[str, Any]] = defaultdict(dict)
    if not member_ids:
        return pins
    gt, pt = GoldenMember.__table__, GoldenFieldPin.__table__
    query = select(
        gt.c.member_id, *(gt.c[name] for name in GOLDEN_VALUES), pt.c.field, pt.c.value, pt.c.pinned_by, pt.c.pinned_at
    ).join_from(gt, pt, pt.c.member_id == gt.c.member_id, isouter=True)
    for member_id, *values, name, value, by, at in _rows_in_chunks(session, query, gt.c.member_id, member_ids):
        row = golden[member_id]
        for column, stored in zip(GOLDEN_VALUES, values, strict=True):
            setattr(row, column, stored)
        if name is not None:
            pins[member_id][name] = {"value": value, "by": by, "at": at.isoformat()}
    return pins


def _survivor_records(session: Session, ids: set[int], read: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The staged members' values survivorship chooses from, by id: those this run read already, and
    the others in one statement."""
    found = {s: read[s] for s in ids if s in read}
    if len(found) < len(ids):
        t = StagedMember.__table__
        query = select(*(t.c[name] for name in SURVIVOR_COLUMNS))
        for row in _rows_in_chunks(session, query, t.c.id, ids - found.keys()):
            found[row[0]] = dict(zip(SURVIVOR_COLUMNS, row, strict=True))
    return found


def _evidence(
    resolver: Resolver,
    staged_ids: list[int],
    links: dict[int, LinkRow],
    scored: list[tuple[LinkRow, Any]],
    changed: set[int],
) -> None:
    """Each link's evidence: the strongest scored link to another record of its cluster. Links that
    need the scored evidence are added to ``scored`` (with their rule), filled by ``_fill_evidence``.
    A link whose stored evidence names the same pair, under the same rule, of records whose values
    did not change keeps it (the model is the same, or every link is explained again)."""
    mates = set(staged_ids)
    for staged_id in staged_ids:
        link = links[staged_id]
        best = next((lk for lk in resolver.links(staged_id) if lk.b in mates), None)
        if best is None:
            must = [resolver.frame.keys[q] for q in resolver.must.get(resolver.frame.position[staged_id], ())]
            if any(m in mates for m in must):
                link.explain("steward", {"must_link": sorted(m for m in must if m in mates)})
            elif len(staged_ids) > 1:
                link.explain("cluster", {"cluster": sorted(staged_ids)})
            elif link.new or link.rule != "new":
                link.explain("new", {})
            continue
        same = link.linked_to == best.b and link.rule == _rule(best) and not changed.intersection((staged_id, best.b))
        if not same:
            scored.append((link, best))


def _rule(best: Any) -> str:
    return best.rule if best.rule != "score" else "probabilistic"


def _fill_evidence(resolver: Resolver, scored: list[tuple[LinkRow, Any]]) -> None:
    found = resolver.explain_many([(best.a, best.b) for _link, best in scored])
    for (link, best), evidence in zip(scored, found, strict=True):
        evidence["linked_to"] = best.b
        link.explain(_rule(best), evidence)


def _review_queue(session: Session, resolver: Resolver, scope: set[int] | None, now: Any) -> None:
    """Open a review item for each uncertain pair; close items whose pair no longer needs review.
    With a ``scope`` only the pairs that involve one of those staged members are looked at. An open
    or deferred item whose pair still has the same weight is left as it is."""
    wanted = {(min(a, b), max(a, b)): round(w, 4) for a, b, w in resolver.review_pairs(scope)}
    t = ReviewQueueItem.__table__
    query = select(t.c.staged_member_a, t.c.staged_member_b, t.c.id, t.c.status, t.c.weight)
    if scope is None:
        found = list(session.execute(query))
    else:
        found = _rows_in_chunks(session, query, (t.c.staged_member_a, t.c.staged_member_b), scope)
    existing = {(a, b): (item_id, status, weight) for a, b, item_id, status, weight in found}
    closed = [
        {"id": item_id, "status": "obsolete", "updated_at": now}
        for pair, (item_id, status, _weight) in existing.items()
        if status in ("open", "deferred") and pair not in wanted
    ]
    to_write = []
    for pair, weight in wanted.items():
        item = existing.get(pair)
        if item is None or item[1] == "obsolete" or (item[1] in ("open", "deferred") and item[2] != weight):
            to_write.append((pair, weight))
    fresh, changed = [], []
    for (pair, weight), evidence in zip(to_write, resolver.explain_many([p for p, _w in to_write]), strict=True):
        item = existing.get(pair)
        values = {"weight": weight, "probability": evidence["probability"], "evidence": evidence}
        if item is None:
            fresh.append({"staged_member_a": pair[0], "staged_member_b": pair[1], **values, "status": "open",
                          "created_at": now, "updated_at": now})  # fmt: skip
        else:
            status = "open" if item[1] == "obsolete" else item[1]
            changed.append({"id": item[0], **values, "status": status, "updated_at": now})
    update_many(session, t, "id", closed)
    update_many(session, t, "id", changed)
    insert_many(session, t, fresh)


def _fold(absorbed: GoldenRow, survivor: GoldenRow, links: list[LinkRow]) -> None:
    """``absorbed`` joins the older ``survivor``: its records (``links``) are relinked, it redirects there."""
    for link in links:
        if link.member_id == absorbed.member_id:
            link.move(survivor.member_id)
    absorbed.set("status", "merged")
    absorbed.set("merged_into", survivor.member_id)


def _merge(session: Session, absorbed: GoldenRow, survivor: GoldenRow, _leaving: None, actor: str) -> None:
    """After ``_fold``: the redirect downstream systems read, the points, the audit."""
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


def _split(session: Session, source: GoldenRow, new: GoldenRow, leaving: list[int], actor: str) -> None:
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


def _survive(golden: GoldenRow, cluster: list[dict[str, Any]], settings: Settings, pins: dict | None) -> None:
    """The golden member's values and lineage from its records; only what differs is written."""
    values, lineage = survive(SURVIVING_FIELDS, cluster, settings.survivorship, pins)
    for name, value in values.items():
        golden.set(name, date.fromisoformat(value) if name == "birthday" and isinstance(value, str) else value)
    golden.set("lineage", lineage)


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
