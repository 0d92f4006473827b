"""Quarantine (隔离区): records that could not be stored or staged, kept with their reasons.

Two kinds of entry:

- a stored source record that failed its mapping or validation (``source_record_id`` set). After
  the mapping (or mappings/stores.yaml) is fixed, ``retry`` maps it again with the current files; on
  success it is staged and leaves quarantine, otherwise its reason is brought up to date.
- a record a connector handed over that could not be stored at all: not a JSON object, unreadable
  JSON, or no usable id (``source_record_id`` empty). It is kept raw, once per distinct payload, so
  nothing is lost. It cannot be replayed (the hub has no id to store it under): when the source
  sends the record again correctly it is stored as usual, and the entry stays as evidence.

Reading an entry shows raw personal data, so ``show`` writes the audit log (principle 7).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.staging import StageOptions, stage_records
from hub.tables import AuditLog, QuarantineRow, utcnow
from mappings import Mapping
from schemas import content_hash
from schemas.errors import HubError

MAX_ID_LENGTH = 128


# ------------------------------------------------------------------------------ at ingest
def _record_id(record: dict[str, Any], id_field: str) -> tuple[str | None, str | None]:
    """The record's external id as text, or None and why not."""
    value: Any = record.get(id_field)
    if value is None and "." in id_field and id_field not in record:
        value = record
        for part in id_field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None or value == "":
        return (
            None,
            f"no id: the record has no {id_field!r} field" if id_field not in record else f"{id_field} is empty",
        )
    if isinstance(value, bool | dict | list):
        return None, f"{id_field} is {type(value).__name__} {json.dumps(value, default=str)[:60]}, not an id"
    if isinstance(value, float):
        if value != int(value):
            return None, f"{id_field} is {value!r}, not a whole number"
        value = int(value)
    text = str(value).strip()
    if not text:
        return None, f"{id_field} is blank"
    if len(text) > MAX_ID_LENGTH:
        return None, f"{id_field} is {len(text)} characters long (at most {MAX_ID_LENGTH})"
    return text, None


def _as_object(record: Any) -> tuple[dict[str, Any] | None, str | None]:
    if isinstance(record, dict):
        return record, None
    if isinstance(record, bytes | bytearray):
        record = bytes(record).decode("utf-8", errors="replace")
    if isinstance(record, str):
        try:
            decoded = json.loads(record)
        except ValueError as exc:
            return None, f"not valid JSON: {exc}"
        if isinstance(decoded, dict):
            return decoded, None
        record = decoded
    return None, f"not a JSON object but {type(record).__name__ if record is not None else 'null'}"


def _raw(record: Any) -> Any:
    if isinstance(record, bytes | bytearray):
        return bytes(record).decode("utf-8", errors="replace")
    try:
        json.dumps(record)
        return record
    except (TypeError, ValueError):
        return repr(record)


def split_page(
    session: Session, source: str, stream: str, id_field: str, records: Iterable[Any]
) -> tuple[dict[str, dict[str, Any]], int]:
    """The storable records of a page by external id; the others are quarantined here (one entry
    per distinct payload, however often the source sends it). Returns (storable, quarantined)."""
    storable: dict[str, dict[str, Any]] = {}
    rejected: list[tuple[Any, str, str | None]] = []
    for record in records:
        payload, problem = _as_object(record)
        if payload is None:
            rejected.append(({"raw": _raw(record)}, problem or "unreadable", None))
            continue
        external_id, problem = _record_id(payload, id_field)
        if external_id is None:
            rejected.append((payload, problem or "no id", id_field))
            continue
        storable[external_id] = payload
    if rejected:
        now = utcnow()
        for payload, reason, failing in rejected:
            digest = content_hash(payload)
            entry = session.scalar(
                select(QuarantineRow).where(
                    QuarantineRow.source_record_id.is_(None),
                    QuarantineRow.source == source,
                    QuarantineRow.stream == stream,
                    QuarantineRow.payload_hash == digest,
                )
            )
            if entry is None:
                session.add(
                    QuarantineRow(
                        source=source,
                        stream=stream,
                        external_id=None,
                        payload=payload,
                        field=failing,
                        reason=reason,
                        payload_hash=digest,
                        attempts=1,
                        created_at=now,
                        last_attempt_at=now,
                    )
                )
                session.flush()
            else:
                entry.attempts, entry.last_attempt_at, entry.reason = entry.attempts + 1, now, reason
    return storable, len(rejected)


# ------------------------------------------------------------------------------ reading
def _entry(
    row: QuarantineRow,
    *,
    payload: bool = False,
    mappings: dict[tuple[str, str], Mapping] | None = None,
    kinds: dict[str, str] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "source": row.source,
        "stream": row.stream,
        "external_id": row.external_id,
        "source_record_id": row.source_record_id,
        "field": row.field,
        "reason": row.reason,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "last_attempt_at": row.last_attempt_at.isoformat() if row.last_attempt_at else None,
        "replayable": row.source_record_id is not None,
    }
    if payload:
        data["payload"] = row.payload
        if mappings is not None:
            mapping = mappings.get(((kinds or {}).get(row.source, row.source), row.stream))
            data["mapping"] = str(mapping.path) if mapping else None
            data["mapping_changed_since"] = bool(
                mapping and row.mapping_hash and mapping.fingerprint != row.mapping_hash
            )
    return data


def list_entries(
    session: Session,
    *,
    source: str | None = None,
    stream: str | None = None,
    field: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Quarantined records, newest attempt first, without their payloads."""
    query = select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit).offset(offset)
    for column, value in ((QuarantineRow.source, source), (QuarantineRow.stream, stream), (QuarantineRow.field, field)):
        if value is not None:
            query = query.where(column == value)
    return [_entry(row) for row in session.scalars(query)]


def summary(session: Session) -> list[dict[str, Any]]:
    """How many records are quarantined per source, stream and failing field."""
    rows = session.execute(
        select(QuarantineRow.source, QuarantineRow.stream, QuarantineRow.field, func.count())
        .group_by(QuarantineRow.source, QuarantineRow.stream, QuarantineRow.field)
        .order_by(func.count().desc())
    ).all()
    return [{"source": s, "stream": t, "field": f, "count": n} for s, t, f, n in rows]


def show(
    session: Session,
    entry_id: int,
    *,
    actor: str,
    mappings: dict[tuple[str, str], Mapping] | None = None,
    kinds: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One entry with its raw payload. Audited: the payload is personal data."""
    row = session.get(QuarantineRow, entry_id)
    if row is None:
        raise HubError(f"no quarantined record {entry_id}; `memberhub quarantine list` shows their ids")
    session.add(AuditLog(actor=actor, action="read", entity="quarantine", entity_id=str(entry_id)))
    return _entry(row, payload=True, mappings=mappings, kinds=kinds)


# ------------------------------------------------------------------------------ retrying
@dataclass
class RetryResult:
    retried: int = 0
    released: int = 0  # staged now, and out of quarantine
    still_failing: list[dict[str, Any]] = field(default_factory=list)
    not_replayable: list[int] = field(default_factory=list)  # never stored: no id, not JSON

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry(
    session: Session,
    mappings: dict[tuple[str, str], Mapping],
    kinds: dict[str, str],
    *,
    ids: Iterable[int] = (),
    everything: bool = False,
    source: str | None = None,
    stream: str | None = None,
    options: StageOptions | None = None,
    actor: str = "system",
) -> RetryResult:
    """Map quarantined records again with the current mappings: the given ids, or with
    ``everything`` all of them (narrowed by ``source`` / ``stream``)."""
    wanted = sorted(set(ids))
    if not wanted and not everything:
        raise HubError("say which records to retry: quarantine ids, or --all")
    query = select(QuarantineRow)
    if wanted:
        query = query.where(QuarantineRow.id.in_(wanted))
    if source is not None:
        query = query.where(QuarantineRow.source == source)
    if stream is not None:
        query = query.where(QuarantineRow.stream == stream)
    entries = list(session.scalars(query.order_by(QuarantineRow.id)))
    missing = set(wanted) - {e.id for e in entries}
    if missing:
        raise HubError(f"no quarantined record {', '.join(map(str, sorted(missing)))}")
    result = RetryResult(retried=len(entries))
    by_record = {e.source_record_id: e.id for e in entries if e.source_record_id is not None}
    result.not_replayable = [e.id for e in entries if e.source_record_id is None]
    if by_record:
        counts = stage_records(session, by_record, mappings, kinds, options)
        result.released = counts.released
        remaining = session.scalars(select(QuarantineRow).where(QuarantineRow.id.in_(list(by_record.values()))))
        result.still_failing = [_entry(row) for row in remaining]
    session.add(
        AuditLog(
            actor=actor,
            action="quarantine_retry",
            entity="quarantine",
            entity_id="all" if everything and not wanted else ",".join(map(str, wanted))[:160],
            after={"retried": result.retried, "released": result.released, "still_failing": len(result.still_failing)},
        )
    )
    session.flush()
    return result


__all__ = ["RetryResult", "list_entries", "retry", "show", "split_page", "summary"]
