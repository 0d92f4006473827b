"""Pulling a connector's streams into ``source_records``, page by page, each page in one transaction
with the cursor it covers, so a crash at any point loses nothing and duplicates nothing."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, insert, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
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


def store_page(
    session: Session, source: str, stream: str, id_field: str, page: Page, echo_fields: tuple[str, ...] = ()
) -> SyncCounts:
    """Upsert one page's records by (source, stream, external id) and move the cursor with them.
    ``echo_fields`` (the stream's, see ``connectors.Stream``) do not count as a change."""
    counts = SyncCounts(pulled=len(page.records))
    # A record that is not a JSON object or has no usable id is quarantined, not a crash.
    by_id, counts.quarantined = quarantine.split_page(session, source, stream, id_field, page.records)
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        counts.new, counts.changed = _upsert_postgres(session, source, stream, by_id, now, echo_fields)
    else:
        counts.new, counts.changed = _upsert(session, source, stream, by_id, now, echo_fields)
    counts.unchanged += len(by_id) - counts.new - counts.changed
    counts.unchanged += len(page.records) - counts.quarantined - len(by_id)  # the same record twice on one page
    if page.cursor is not None:
        state = session.get(ConnectorState, (source, stream))
        if state is None:
            session.add(ConnectorState(connector=source, stream=stream, cursor=page.cursor, updated_at=now))
        elif state.cursor is None or _moment(page.cursor) > _moment(state.cursor):
            state.cursor, state.updated_at = page.cursor, now
    counts.streams[stream] = counts.new + counts.changed
    return counts


def record_hash(record: dict[str, Any], echo_fields: tuple[str, ...] = ()) -> str:
    """The content hash of a record without the fields the hub writes itself and their change stamps."""
    if not echo_fields:
        return content_hash(record)
    trimmed = dict(record)
    for path in echo_fields:
        head, _, rest = path.partition(".")
        if not rest:
            trimmed.pop(head, None)
        elif isinstance(trimmed.get(head), dict):
            trimmed[head] = {k: v for k, v in trimmed[head].items() if k != rest}
    return content_hash(trimmed)


def _new_row(
    source: str, stream: str, external_id: str, record: dict[str, Any], now: datetime, echo_fields: tuple[str, ...] = ()
) -> dict[str, object]:
    return {
        "source": source,
        "stream": stream,
        "external_id": external_id,
        "payload": record,
        "content_hash": record_hash(record, echo_fields),
        "staged_hash": None,
        "first_seen_at": now,
        "last_seen_at": now,
    }


def _upsert(
    session: Session,
    source: str,
    stream: str,
    by_id: dict[str, dict[str, Any]],
    now: datetime,
    echo_fields: tuple[str, ...] = (),
) -> tuple[int, int]:
    """Insert new records, update changed ones; (new, changed). Only the columns the comparison
    needs, and plain INSERT/UPDATE statements in bulk: building an ORM object per record cost more
    than reading the records over HTTP."""
    existing = {
        external_id: (row_id, digest)
        for external_id, row_id, digest in session.execute(
            select(SourceRecordRow.external_id, SourceRecordRow.id, SourceRecordRow.content_hash).where(
                tuple_(SourceRecordRow.source, SourceRecordRow.stream) == (source, stream),
                SourceRecordRow.external_id.in_(list(by_id)),
            )
        )
    }
    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for external_id, record in by_id.items():
        known = existing.get(external_id)
        if known is None:
            inserts.append(_new_row(source, stream, external_id, record, now, echo_fields))
            continue
        digest = record_hash(record, echo_fields)
        if known[1] != digest:
            updates.append({"id": known[0], "payload": record, "content_hash": digest, "last_seen_at": now})
    if inserts:
        session.execute(insert(SourceRecordRow), inserts)
    if updates:
        session.execute(update(SourceRecordRow), updates)  # by primary key, one executemany
    return len(inserts), len(updates)


def _upsert_postgres(
    session: Session,
    source: str,
    stream: str,
    by_id: dict[str, dict[str, Any]],
    now: datetime,
    echo_fields: tuple[str, ...] = (),
) -> tuple[int, int]:
    """The same on PostgreSQL as one INSERT … ON CONFLICT DO UPDATE (changed records only), sent as
    multi-row VALUES. A lookup of the page's ids first was quadratic on a first load: on a freshly
    filled table without statistics the planner matched the ids by filtering every row of the
    source. ``xmax = 0`` tells an inserted row from an updated one; unchanged rows are not written."""
    if not by_id:
        return 0, 0
    table = SourceRecordRow.__table__
    statement = postgres_insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.source, table.c.stream, table.c.external_id],
        set_={
            "payload": statement.excluded.payload,
            "content_hash": statement.excluded.content_hash,
            "last_seen_at": statement.excluded.last_seen_at,
        },
        where=table.c.content_hash != statement.excluded.content_hash,
    ).returning(literal_column("xmax = 0", type_=Boolean))
    rows = [_new_row(source, stream, external_id, record, now, echo_fields) for external_id, record in by_id.items()]
    inserted = session.execute(statement, rows).scalars().all()
    new = sum(1 for flag in inserted if flag)
    return new, len(inserted) - new


_DONE = object()


def read_ahead(pages: Iterator[Page]) -> Iterator[Page]:
    """The pages of ``pages``, with the next one read in a background thread while the caller
    stores the current one: the HTTP round trip and the database write overlap. At most one page
    waits unstored, and pages come out in order, so storing each with its own cursor keeps every
    guarantee of a plain loop. An error of the read comes out after the pages read before it; when
    the caller stops early (an error while storing), the reader stops after its current request."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for page in pages:
                if not offer(page):
                    break
            else:
                offer(_DONE)
        except BaseException as exc:  # handed to the caller's thread, raised there
            offer(exc)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=reader, name="memberhub-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


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
        for page in read_ahead(connector.read(stream.name, _since(cursor, lookback))):
            with session_factory() as session, session.begin():
                counts = store_page(session, connector.name, stream.name, stream.id_field, page, stream.echo_fields)
            total.add(counts)
            if on_page:
                on_page(stream.name, counts)
    return total
