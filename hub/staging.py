"""Turning stored source records into canonical members and orders through their mappings.

A record that fails its mapping or validation goes to quarantine with the failing field and a
readable reason, and never blocks the rest of the batch. Only records whose content changed since
they were last staged are mapped again; ``hub.quarantine.retry`` replays quarantined ones.

What quarantines a record, and what only flags a value:

- quarantined: the mapping fails (a cast, an unknown store code), the canonical model rejects the
  record (no id, a bad email, a naive timestamp), or a field the mapping lists under ``required``
  is missing or cannot be normalised;
- flagged (the record is staged, ``flags`` says why a value is missing or raw): a phone that is not
  a valid number (kept in ``phone_raw``, never guessed), a birthday that cannot be read or is
  implausible, an unknown gender code, an invalid resident ID number.

Throughput matters (a first load is millions of records): rows are read and written in batches,
staged rows handed to the driver in one call per batch (COPY on PostgreSQL, executemany on
SQLite) after the columns' own types have sealed and converted them, and the costly normalisers
have fast paths and caches (see benchmarks/staging.py for the figures). On PostgreSQL the work is
split across processes, one per CPU (``StageOptions.workers``; ``hub.staging_parallel``), with the
same results as one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from hub.db import insert_many, update_many
from hub.drift import FieldsSeen
from hub.normalise import (
    check_birthday,
    check_email,
    check_phone,
    check_resident_id,
    city_name,
    gender_code,
    keyed_hash,
    name_text,
    normalise_name,
    province_of,
    split_address,
)
from hub.privacy.guard import protect_members
from hub.search import ContactRules
from hub.tables import QuarantineRow, SourceRecordRow, StagedMember, StagedOrder, utcnow
from mappings import Mapping
from schemas import Member, Order
from schemas.config import ProgrammeConfig
from schemas.errors import MappingError

BATCH = 2000
EXTRA_MEMBER_FIELDS = ("resident_id", "address", "province", "district")
"""Canonical member fields a mapping may fill that are normalised here rather than carried on the
Member model: the resident ID becomes a keyed hash, the address its province, city and district."""


@dataclass(frozen=True)
class StageOptions:
    """How values are normalised. ``region``: the default region for phone numbers written without
    a country code. ``email_rewrite``: mail providers whose dots and plus tags are folded (``"*"``
    for every provider in ``hub.normalise.EMAIL_PROVIDERS``); off by default. ``day_first``: how to
    read 02/03/1990 birthdays (None: ambiguous ones are flagged, not guessed). ``family_first``: Latin
    names given in one field are written family name first."""

    region: str = "CN"
    email_rewrite: frozenset[str] = frozenset()
    day_first: bool | None = None
    family_first: bool = False
    workers: int | None = None
    """Processes that stage at once, each over its own slice of the pending records with its own
    connection (``hub.staging_parallel``). None: one per CPU on PostgreSQL, one elsewhere (SQLite
    has one writer)."""

    @classmethod
    def of(cls, programme: ProgrammeConfig) -> StageOptions:
        """The options memberhub.yaml sets: ``programme.default_region``, ``programme.email_rewrite``
        (checked as search and lookups read them, ``hub.search.ContactRules``)."""
        rules = ContactRules.of(programme)
        return cls(region=rules.region, email_rewrite=rules.email_rewrite)


@dataclass
class StageCounts:
    members: int = 0
    orders: int = 0
    quarantined: int = 0
    released: int = 0  # records that left quarantine because they now map cleanly
    flagged: int = 0  # staged members with at least one value dropped or kept raw
    failures: dict[str, int] = field(default_factory=dict)  # "source.stream field" -> quarantined this run

    def add(self, other: StageCounts) -> None:
        """Another process's counts for the same run, added to these."""
        for name in (f.name for f in fields(self) if f.name != "failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, number in other.failures.items():
            self.failures[key] = self.failures.get(key, 0) + number


class Rejected(Exception):
    """A record that cannot be staged: the failing field (or None) and why."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


PENDING = or_(SourceRecordRow.staged_hash.is_(None), SourceRecordRow.staged_hash != SourceRecordRow.content_hash)
"""Source records that are new, or changed since they were last staged."""
_RECORD_COLUMNS = (
    SourceRecordRow.id,
    SourceRecordRow.source,
    SourceRecordRow.stream,
    SourceRecordRow.external_id,
    SourceRecordRow.payload,
    SourceRecordRow.content_hash,
)


def stage(
    session: Session,
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    *,
    region: str = "CN",
    options: StageOptions | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> StageCounts:
    """Stage every new or changed source record. ``kinds`` maps connector name -> system kind."""
    options = options or StageOptions(region=region)
    workers = _workers(session, options)
    if workers > 1:
        from hub.staging_parallel import stage_parallel

        return stage_parallel(session, mappings, kinds, options, workers, on_batch)
    counts = StageCounts()
    seen = FieldsSeen()
    pending = select(*_RECORD_COLUMNS).where(PENDING).order_by(SourceRecordRow.id)
    claims = Claims()
    last_id = 0
    while True:
        rows = session.execute(pending.where(SourceRecordRow.id > last_id).limit(BATCH)).all()
        if not rows:
            break
        for row in rows:
            seen.observe(row)
        stage_rows(session, rows, mappings, kinds, options, counts, claims)
        last_id = rows[-1].id
        if on_batch:
            on_batch(len(rows))
    FieldsSeen.merged([seen]).save(session)
    return counts


def stage_records(
    session: Session,
    record_ids: Iterable[int],
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    options: StageOptions | None = None,
) -> StageCounts:
    """Stage these source records again, whatever was staged before (``quarantine retry``)."""
    counts = StageCounts()
    claims = Claims()
    ids = sorted(set(record_ids))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        rows = session.execute(select(*_RECORD_COLUMNS).where(SourceRecordRow.id.in_(chunk))).all()
        stage_rows(session, rows, mappings, kinds, options or StageOptions(), counts, claims)
    return counts


def stage_rows(
    session: Session,
    rows: Sequence[Any],
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    options: StageOptions,
    counts: StageCounts,
    claims: Claims | None = None,
) -> None:
    """Map, validate and normalise one batch of source records, then write the results with a
    handful of statements: staged rows inserted or updated, failures quarantined, fixed records
    released from quarantine, and each record marked as staged at the version that was read."""
    members, orders, failed = prepare_rows(session, rows, mappings, kinds, options)
    claims = claims if claims is not None else Claims()
    _claim_source_ids(session, members, StagedMember, rows, failed, claims)
    _claim_source_ids(session, orders, StagedOrder, rows, failed, claims)
    write_rows(session, rows, members, orders, failed, counts, claims)


Failed = dict[int, tuple[Any, "Rejected", Mapping | None]]
"""source record id -> (the record, why it was rejected, its mapping)"""


def prepare_rows(
    session: Session,
    rows: Sequence[Any],
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    options: StageOptions,
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], Failed]:
    """The staged member and order rows of a batch (source record id -> values, with blind
    indexes; forgotten people left out) and the records that failed. Writes nothing of its own."""
    members: dict[int, dict[str, Any]] = {}
    orders: dict[int, dict[str, Any]] = {}
    failed: Failed = {}
    for row in rows:
        mapping = mappings.get((kinds.get(row.source, row.source), row.stream))
        try:
            if mapping is None:
                kind = kinds.get(row.source, row.source)
                raise Rejected(None, f"no mapping for {row.source}.{row.stream}: add mappings/{kind}/{row.stream}.yaml")
            if not isinstance(row.payload, dict):
                raise Rejected(None, f"payload is {type(row.payload).__name__}, not a JSON object")
            if mapping.target == "member":
                members[row.id] = member_values(mapping, row.payload, row.source, options)
            else:
                orders[row.id] = order_values(mapping, row.payload, row.source)
        except Rejected as exc:
            failed[row.id] = (row, exc, mapping)
    protect_members(session, members)  # blind indexes; forgotten people (hub.privacy) are not staged again
    return members, orders, failed


def write_rows(
    session: Session,
    rows: Sequence[Any],
    members: dict[int, dict[str, Any]],
    orders: dict[int, dict[str, Any]],
    failed: Failed,
    counts: StageCounts,
    claims: Claims | None = None,
) -> None:
    """Write one prepared batch whose source ids are settled: staged rows inserted or updated,
    failures quarantined, fixed records released, each record marked staged at the version read."""
    ids = [row.id for row in rows]
    claims = claims if claims is not None else Claims()
    existing_members = _existing(session, StagedMember, ids, claims)
    existing_orders = _existing(session, StagedOrder, ids, claims)
    quarantined = _existing(session, QuarantineRow, ids, claims)
    now = utcnow()
    _write(session, StagedMember, members, existing_members, now)
    _write(session, StagedOrder, orders, existing_orders, now)
    counts.members += len(members)
    counts.orders += len(orders)
    counts.flagged += sum(1 for m in members.values() if m["flags"])

    released = [quarantined[i] for i in (*members, *orders) if i in quarantined]
    if released:
        session.execute(delete(QuarantineRow).where(QuarantineRow.id.in_(released)))
        counts.released += len(released)
    new_entries, changed_entries = [], []
    for record_id, (row, rejected, mapping) in failed.items():
        values = {
            "source": row.source,
            "stream": row.stream,
            "external_id": row.external_id,
            "payload": row.payload,
            "field": (rejected.field or "")[:64] or None,
            "reason": rejected.reason,
            "mapping_hash": mapping.fingerprint if mapping else None,
            "last_attempt_at": now,
        }
        if record_id in quarantined:
            changed_entries.append({"id": quarantined[record_id], **values})
        else:
            new_entries.append({"source_record_id": record_id, "created_at": now, "attempts": 1, **values})
        key = f"{row.source}.{row.stream} {rejected.field or '(record)'}"
        counts.failures[key] = counts.failures.get(key, 0) + 1
    if new_entries:
        session.execute(insert(QuarantineRow.__table__), new_entries)
    if changed_entries:
        session.execute(update(QuarantineRow), changed_entries)
        ids_again = [e["id"] for e in changed_entries]
        session.execute(
            update(QuarantineRow).where(QuarantineRow.id.in_(ids_again)).values(attempts=QuarantineRow.attempts + 1)
        )
    counts.quarantined += len(failed)
    # Marked with the hash that was read: a version stored meanwhile is staged next time.
    _mark_staged(session, rows)
    session.flush()


def _workers(session: Session, options: StageOptions) -> int:
    if not _postgres(session):
        return 1  # SQLite has one writer
    return max(1, options.workers if options.workers is not None else os.cpu_count() or 1)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _mark_staged(session: Session, rows: Sequence[Any]) -> None:
    digests = [{"id": row.id, "staged_hash": row.content_hash} for row in rows]
    update_many(session, SourceRecordRow.__table__, "id", digests)


def _existing(session: Session, model: Any, ids: list[int], claims: Claims) -> dict[int, int]:
    """source record id -> primary key of the row already staged (or quarantined) for it. Nothing is
    looked up when the table was empty when the run started: a run stages each record once, so the
    rows it wrote itself are other records' (and a first load skips a lookup that, without statistics
    on the fresh table, PostgreSQL answers with a scan of it)."""
    if claims.table_was_empty(session, model):
        return {}
    if _postgres(session):  # one array parameter instead of an IN list of thousands
        table = model.__tablename__
        found = session.connection().exec_driver_sql(
            f"SELECT source_record_id, id FROM {table} WHERE source_record_id = ANY(%(ids)s::bigint[])", {"ids": ids}
        )
        return dict(found.all())
    return dict(session.execute(select(model.source_record_id, model.id).where(model.source_record_id.in_(ids))).all())


@dataclass
class Claims:
    """Which source record owns each (source, source_id) among staged rows, as far as this run
    knows. A source with no staged rows when the run started needs no database lookups: every
    owner is then one this run staged. (That matters on a first load: without statistics on a
    freshly filled table PostgreSQL scans it for each lookup, which made staging quadratic.)"""

    owners: dict[tuple[str, str, str], int] = field(default_factory=dict)
    empty_at_start: dict[tuple[str, str | None], bool] = field(default_factory=dict)  # (table, source or None)

    def was_empty(self, session: Session, model: Any, source: str) -> bool:
        key = (model.__tablename__, source)
        if key not in self.empty_at_start:
            found = session.scalar(select(model.id).where(model.source == source).limit(1))
            self.empty_at_start[key] = found is None
        return self.empty_at_start[key]

    def table_was_empty(self, session: Session, model: Any) -> bool:
        key = (model.__tablename__, None)
        if key not in self.empty_at_start:
            self.empty_at_start[key] = session.scalar(select(model.id).limit(1)) is None
        return self.empty_at_start[key]

    def look_up(self, session: Session, model: Any, wanted: Iterable[tuple[str, str]]) -> None:
        """Learn the owners of these (source, source_id) pairs that are already staged, for the
        sources that had staged rows when the run started."""
        table = model.__tablename__
        by_source: dict[str, set[str]] = {}
        for source, source_id in wanted:
            if (table, source, source_id) not in self.owners:
                by_source.setdefault(source, set()).add(source_id)
        for source, source_ids in by_source.items():
            if self.was_empty(session, model, source):
                continue
            ids = sorted(source_ids)
            for start in range(0, len(ids), 1000):
                for source_id, record_id in session.execute(
                    select(model.source_id, model.source_record_id).where(
                        model.source == source, model.source_id.in_(ids[start : start + 1000])
                    )
                ):
                    self.owners[(table, source, source_id)] = record_id

    def settle(self, table: str, wanted: Iterable[tuple[int, str, str]]) -> dict[int, tuple[str, int]]:
        """Claim (source, source_id) for each record, in the order given (source record id
        order): record id -> (source_id, owner) for the records whose id another record owns."""
        taken = {}
        for record_id, source, source_id in wanted:
            owner = self.owners.setdefault((table, source, source_id), record_id)
            if owner != record_id:
                taken[record_id] = (source_id, owner)
        return taken


def _claim_source_ids(
    session: Session,
    staged: dict[int, dict[str, Any]],
    model: Any,
    rows: Sequence[Any],
    failed: Failed,
    claims: Claims,
) -> None:
    """(source, source_id) is unique among staged rows. A record whose mapped id is already taken
    by another source record is quarantined, rather than failing the whole batch on the constraint."""
    if not staged:
        return
    wanted = claimed(staged)
    claims.look_up(session, model, [(source, source_id) for _, source, source_id in wanted])
    drop_taken(staged, claims.settle(model.__tablename__, wanted), rows, failed)


def claimed(staged: dict[int, dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(source record id, source, source id) of each staged row: the ids the records claim."""
    return [(record_id, values["source"], values["source_id"]) for record_id, values in staged.items()]


def drop_taken(
    staged: dict[int, dict[str, Any]], taken: dict[int, tuple[str, int]], rows: Sequence[Any], failed: Failed
) -> None:
    """Records whose id another source record holds leave ``staged`` for quarantine, in staged order."""
    by_id = {row.id: row for row in rows}
    for record_id in [record_id for record_id in staged if record_id in taken]:
        del staged[record_id]
        source_id, owner = taken[record_id]
        failed[record_id] = (by_id[record_id], taken_reason(source_id, owner), None)


def taken_reason(source_id: str, owner: int) -> Rejected:
    return Rejected("source_id", f"source_id: {source_id!r} is already the id of source record {owner}")


def _write(session: Session, model: Any, staged: dict[int, dict[str, Any]], existing: dict[int, int], now: Any) -> None:
    inserts, updates = [], []
    for record_id, values in staged.items():
        if record_id in existing:
            updates.append({"id": existing[record_id], **values, "staged_at": now})
        else:
            inserts.append({"source_record_id": record_id, **values, "staged_at": now})
    if inserts:
        insert_many(session, model.__table__, inserts)
    if updates:
        session.execute(update(model), updates)


# ------------------------------------------------------------------------------ one record
def _mapped(mapping: Mapping, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return mapping.apply(payload)
    except MappingError as exc:
        message = str(exc)
        raise Rejected(message.split(":", 1)[0], message) from exc


def _invalid(exc: ValidationError) -> Rejected:
    errors = exc.errors()
    first = ".".join(str(p) for p in errors[0]["loc"])
    reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return Rejected(first, reasons)


def member_values(mapping: Mapping, payload: dict[str, Any], source: str, options: StageOptions) -> dict[str, Any]:
    """The staged_members row for one raw record, or Rejected."""
    values = _mapped(mapping, payload)
    values["source"] = source
    pop = values.pop
    extras = {name: pop(name, None) for name in EXTRA_MEMBER_FIELDS}
    raw_email = pop("email", None)
    raw_birthday = pop("birthday", None)
    raw_gender = pop("gender", None)
    raw_phone = values.get("phone")
    if type(raw_phone) is not str and isinstance(raw_phone, int | float | Decimal) and type(raw_phone) is not bool:
        values["phone"] = str(raw_phone)
    try:
        member = Member.model_validate(values)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    flags: dict[str, str] = {}
    email = check_email(raw_email, rewrite=options.email_rewrite)
    if email.problem:
        raise Rejected("email", f"email: {email.problem}")
    phone = check_phone(member.phone, options.region)
    if phone.problem:
        flags["phone"] = phone.problem
    birthday = check_birthday(raw_birthday, day_first=options.day_first)
    if birthday.problem:
        flags["birthday"] = birthday.problem
    gender = gender_code(raw_gender)
    if gender.problem:
        flags["gender"] = gender.problem
    name = normalise_name(member.family_name, member.given_name, member.full_name, family_first=options.family_first)
    address = split_address(extras["address"]) if extras["address"] else None
    city = city_name(member.city) or (address.city if address else None)
    province = name_text(extras["province"]) or (address.province if address else None) or province_of(city)
    district = name_text(extras["district"]) or (address.district if address else None)
    born, sex = birthday.value, gender.value
    resident_hash = None
    if extras["resident_id"] not in (None, ""):
        resident = check_resident_id(extras["resident_id"])
        if resident.value is None:
            flags["resident_id"] = resident.problem or "invalid"
        else:
            resident_hash = keyed_hash("cn_resident_id", resident.value.number)
            if born is None and raw_birthday in (None, ""):
                born = resident.value.birth_date
            elif born is not None and born != resident.value.birth_date:
                flags["birthday"] = "differs from the birth date in the resident ID number"
            sex = sex or resident.value.sex
    staged = {
        "source": member.source,
        "source_id": member.source_id,
        "channel": member.channel.value,
        "full_name": name.full,
        "given_name": name.given,
        "family_name": name.family,
        "phone_raw": member.phone,
        "phone": phone.value,
        "email": email.value,
        "birthday": born,
        "gender": sex,
        "city": city,
        "store_code": member.store_code,
        "marketing_consent": member.marketing_consent,
        "created_at": member.created_at,
        "updated_at": member.updated_at,
        "name_pinyin": name.pinyin,
        "name_key": name.key,
        "resident_id_hash": resident_hash,
        "province": province,
        "district": district,
        "flags": flags,
    }
    for required in mapping.required:
        column = "resident_id_hash" if required == "resident_id" else required
        if staged.get(column) in (None, ""):
            problem = flags.get(required) or "missing"
            raise Rejected(required, f"{required}: {problem} (required by {mapping.path.name})")
    return staged


def order_values(mapping: Mapping, payload: dict[str, Any], source: str) -> dict[str, Any]:
    """The staged_orders row for one raw record, or Rejected."""
    values = _mapped(mapping, payload)
    values["source"] = source
    try:
        order = Order.model_validate(values)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    for required in mapping.required:
        if values.get(required.split(".")[0]) in (None, ""):
            raise Rejected(required, f"{required}: missing (required by {mapping.path.name})")
    return {
        "source": order.source,
        "source_id": order.source_id,
        "member_source_id": order.member_source_id,
        "store_code": order.store_code,
        "channel": order.channel.value,
        "status": order.status.value,
        "currency": order.total.currency,
        "total_amount": order.total.amount,
        "refunded_amount": order.refunded.amount if order.refunded else Decimal(0),
        "ordered_at": order.ordered_at,
        "updated_at": order.updated_at,
        "lines": {"items": [line.model_dump(mode="json") for line in order.lines]},
    }


__all__ = [
    "EXTRA_MEMBER_FIELDS",
    "PENDING",
    "Claims",
    "Rejected",
    "StageCounts",
    "StageOptions",
    "member_values",
    "order_values",
    "prepare_rows",
    "stage",
    "stage_records",
    "stage_rows",
    "write_rows",
]
