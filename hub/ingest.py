"""Pulling a connector's streams into ``source_records``, page by page, each page in one transaction
with the cursor it covers, so a crash at any point loses nothing and duplicates nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.orm import Session

from connectors import Connector, Page
from hub import quarantine
from hub.tables import ConnectorState, SourceRecordRow, utcnow
from schemas import content_hash

DEFAULT_LOOKBACK = timedelta(minutes=5)
"""Re-read this much before the stored cursor: records committed late at the source are not missed,
and re-reading the boundary costs nothing because unchanged records are not written."""


@dataclass
class SyncCounts:
    pulled: int = 0  # records read from the system
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined: int = 0  # not a JSON object, or no usable id: kept in quarantine, not stored
    streams: dict[str, int] = field(default_factory=dict)

    def add(self, other: SyncCounts) -> None:
        self.pulled += other.pulled
        self.new += other.new
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        for name, count in other.streams.items():
            self.streams[name] = self.streams.get(name, 0) + count


def read_cursor(session: Session, connector: str, stream: str) -> str | None:
    state = session.get(ConnectorState, (connector, stream))
    return state.cursor if state else None


def _moment(cursor: str) -> datetime:
    return datetime.fromisoformat(cursor.replace("Z", "+00:00"))


def _since(cursor: str | None, lookback: timedelta) -> str | None:
    if cursor is None:
        return None
    return (_moment(cursor) - lookback).isoformat()


def store_page(session: Session, source: str, stream: str, id_field: str, page: Page) -> SyncCounts:
    """Upsert one page's records by (source, stream, external id) and move the cursor with them."""
    counts = SyncCounts(pulled=len(page.records))
    # A record that is not a JSON object or has no usable id is quarantined, not a crash.
    by_id, counts.quarantined = quarantine.split_page(session, source, stream, id_field, page.records)
    # Only the columns the comparison needs, and plain INSERT/UPDATE statements in bulk: building an
    # ORM object per record cost more than reading the records over HTTP.
    existing = {
        external_id: (row_id, digest)
        for external_id, row_id, digest in session.execute(
            select(SourceRecordRow.external_id, SourceRecordRow.id, SourceRecordRow.content_hash).where(
                tuple_(SourceRecordRow.source, SourceRecordRow.stream) == (source, stream),
                SourceRecordRow.external_id.in_(list(by_id)),
            )
        )
    }
    now = utcnow()
    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for external_id, record in by_id.items():
        digest = content_hash(record)
        known = existing.get(external_id)
        if known is None:
            inserts.append(
                {
                    "source": source,
                    "stream": stream,
                    "external_id": external_id,
                    "payload": record,
                    "content_hash": digest,
                    "staged_hash": None,
                    "first_seen_at": now,
                    "last_seen_at": now,
                }
            )
        elif known[1] != digest:
            updates.append({"id": known[0], "payload": record, "content_hash": digest, "last_seen_at": now})
        else:
            counts.unchanged += 1
    if inserts:
        session.execute(insert(SourceRecordRow), inserts)
    if updates:
        session.execute(update(SourceRecordRow), updates)  # by primary key, one executemany
    counts.new, counts.changed = len(inserts), len(updates)
    counts.unchanged += len(page.records) - counts.quarantined - len(by_id)  # the same record twice on one page
    if page.cursor is not None:
        state = session.get(ConnectorState, (source, stream))
        if state is None:
            session.add(ConnectorState(connector=source, stream=stream, cursor=page.cursor, updated_at=now))
        elif state.cursor is None or _moment(page.cursor) > _moment(state.cursor):
            state.cursor, state.updated_at = page.cursor, now
    counts.streams[stream] = counts.new + counts.changed
    return counts


def sync(
    connector: Connector,
    session_factory: Callable[[], Session],
    *,
    full: bool = False,
    lookback: timedelta = DEFAULT_LOOKBACK,
    on_page: Callable[[str, SyncCounts], None] | None = None,
) -> SyncCounts:
    """Read every stream of ``connector`` from its cursor (or from the start with ``full``)."""
    total = SyncCounts()
    for stream in connector.streams:
        with session_factory() as session:
            cursor = None if full else read_cursor(session, connector.name, stream.name)
        for page in connector.read(stream.name, _since(cursor, lookback)):
            with session_factory() as session, session.begin():
                counts = store_page(session, connector.name, stream.name, stream.id_field, page)
            total.add(counts)
            if on_page:
                on_page(stream.name, counts)
    return total
