"""What each source stream's records look like (discovery), and how that changes (schema drift).

Staging records, per (connector, stream), every field path seen in the raw records and its JSON type
in the ``stream_fields`` table: nested objects as dotted paths (``customer.id``), the fields of a list
of objects as ``line_items[].sku``. ``mappings validate`` checks expressions against these paths.

``schema_drift`` reports a field that appeared, disappeared or changed type since the stream's
schema was last accepted; it never changes anything, so the orchestration layer can run it as an
asset check. ``accept_drift`` makes the current shape the known one (a steward's decision).

When is a field "gone"? A field present in a fraction *p* of records is reported missing once it
has been absent from the last ``max(min_absent, factor / p)`` records: for a field in every record,
50 records; for one in 1 % of records, 1,000. The chance that a field still in use is absent that
long by luck is below e^-factor (e^-10 ≈ 0.005 %), so sparse fields do not cry wolf.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.tables import StreamField, utcnow

ROOT = "$"
MAX_DEPTH = 8
MIN_ABSENT = 50
ABSENT_FACTOR = 10.0

_JSON_TYPES: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """The JSON type of a decoded value: string, number, boolean, object, array or null."""
    return _JSON_TYPES.get(type(value)) or ("number" if isinstance(value, int | float) else "string")


def field_paths(payload: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (path, JSON type) in one record, e.g. {("customer", "object"), ("customer.id", "number")}."""
    out: set[tuple[str, str]] = set()
    _walk(payload, "", out, 0)
    return out


def _walk(value: dict[str, Any], prefix: str, out: set[tuple[str, str]], depth: int) -> None:
    types = _JSON_TYPES
    for key, item in value.items():
        path = prefix + str(key)
        kind = types.get(type(item)) or json_type(item)
        out.add((path, kind))
        if depth >= MAX_DEPTH:
            continue
        if kind == "object":
            _walk(item, path + ".", out, depth + 1)
        elif kind == "array":
            for element in item:
                if isinstance(element, dict):
                    _walk(element, path + "[].", out, depth + 1)


@dataclass
class _Seen:
    """How often a field path was seen in one staging run, and where last."""

    count: int = 0
    last: int = 0  # the position (1-based) of the last record in this run that had it


@dataclass
class Discovery:
    """Field paths seen during one staging run, saved to ``stream_fields`` at the end of it."""

    streams: dict[tuple[str, str], dict[tuple[str, str], _Seen]] = field(default_factory=dict)
    records: dict[tuple[str, str], int] = field(default_factory=dict)

    def save(self, session: Session, now: datetime | None = None) -> None:
        now = now or utcnow()
        for (connector, stream), total in self.records.items():
            rows = {
                (r.path, r.json_type): r
                for r in session.scalars(
                    select(StreamField).where(StreamField.connector == connector, StreamField.stream == stream)
                )
            }
            root = rows.get((ROOT, "object"))
            first = root is None
            base = root.record_count if root else 0
            if root is None:
                root = StreamField(
                    connector=connector,
                    stream=stream,
                    path=ROOT,
                    json_type="object",
                    first_seen_at=now,
                    record_count=0,
                    last_seen_seq=0,
                    accepted=True,
                )
                session.add(root)
            root.record_count, root.last_seen_seq, root.last_seen_at = base + total, base + total, now
            types_of: dict[str, set[str]] = defaultdict(set)
            for path, kind in rows:
                types_of[path].add(kind)
            for (path, kind), seen in sorted(self.streams.get((connector, stream), {}).items()):
                row = rows.get((path, kind))
                if row is None:
                    earlier = types_of.get(path, set()) - {"null"}
                    # Baseline on first discovery; a null is not a new type; a field that had only
                    # nulls and now has values has not changed shape.
                    accepted = first or kind == "null" or (path in types_of and not earlier)
                    row = StreamField(
                        connector=connector,
                        stream=stream,
                        path=path,
                        json_type=kind,
                        first_seen_at=now,
                        record_count=0,
                        last_seen_seq=0,
                        accepted=accepted,
                    )
                    session.add(row)
                row.record_count = (row.record_count or 0) + seen.count
                row.last_seen_seq = base + seen.last
                row.last_seen_at = now
        session.flush()
        self.streams.clear()
        self.records.clear()


_FLAT = frozenset(type_ for type_ in (str, int, float, bool, type(None), Decimal))


class FieldsSeen:
    """The field paths of the records a run read, for ``Discovery``: walked once per
    distinct shape of flat record (the same keys with values of the same types), not per record."""

    def __init__(self) -> None:
        # (connector, stream) -> (record ids read, {paths of a record: [records, last record id]})
        self.streams: dict[tuple[str, str], tuple[list[int], dict[frozenset, list[int]]]] = {}
        self._shapes: dict[tuple[tuple[str, ...], tuple[type, ...]], frozenset] = {}

    def __getstate__(self) -> dict[str, Any]:  # sent back by staging workers: the counts, not the cache
        return {"streams": self.streams, "_shapes": {}}

    def observe(self, row: Any) -> None:
        ids, shapes = self.streams.setdefault((row.source, row.stream), ([], {}))
        ids.append(row.id)
        payload = row.payload
        if not isinstance(payload, dict):
            return
        types = tuple(map(type, payload.values()))
        if _FLAT.issuperset(types):
            shape = (tuple(payload), types)
            paths = self._shapes.get(shape)
            if paths is None:
                paths = self._shapes[shape] = frozenset(field_paths(payload))
        else:
            paths = frozenset(field_paths(payload))
        entry = shapes.get(paths)
        if entry is None:
            shapes[paths] = [1, row.id]
        else:
            entry[0] += 1
            entry[1] = row.id

    @staticmethod
    def merged(parts: Iterable[FieldsSeen]) -> Discovery:
        """One run's discovery from what one or more processes read, counted as one process reading
        the records in source record id order would (positions are ranks in that order)."""
        parts = list(parts)
        discovery = Discovery()
        for key in sorted({key for part in parts for key in part.streams}):
            ids = sorted(record_id for part in parts if key in part.streams for record_id in part.streams[key][0])
            discovery.records[key] = len(ids)
            items: dict[tuple[str, str], list[int]] = {}
            for part in parts:
                for paths, (count, last) in part.streams.get(key, ([], {}))[1].items():
                    for item in paths:
                        entry = items.setdefault(item, [0, 0])
                        entry[0] += count
                        entry[1] = max(entry[1], last)
            if items:
                discovery.streams[key] = {
                    item: _Seen(count=count, last=bisect_right(ids, last)) for item, (count, last) in items.items()
                }
        return discovery


def discovered_fields(session: Session) -> dict[tuple[str, str], dict[str, set[str]]]:
    """(connector, stream) -> {path: JSON types seen}, for every stream that has been discovered."""
    out: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
    for connector, stream, path, kind in session.execute(
        select(StreamField.connector, StreamField.stream, StreamField.path, StreamField.json_type)
    ):
        if path != ROOT:
            out[(connector, stream)].setdefault(path, set()).add(kind)
        else:
            out.setdefault((connector, stream), {})  # a stream with records but no fields still counts
    return dict(out)


def discovered_records(session: Session) -> dict[tuple[str, str], int]:
    """(connector, stream) -> record versions discovery has seen."""
    return {
        (c, s): n
        for c, s, n in session.execute(
            select(StreamField.connector, StreamField.stream, StreamField.record_count).where(StreamField.path == ROOT)
        )
    }


@dataclass(frozen=True)
class SchemaChange:
    """One change in a source stream's shape."""

    connector: str
    stream: str
    path: str
    change: str  # appeared | disappeared | type_changed
    json_type: str  # the new type (appeared, type_changed) or the last one seen (disappeared)
    previous_types: tuple[str, ...]  # type_changed: the accepted types before
    records: int  # appeared / type_changed: records with the new shape; disappeared: records since last seen
    first_seen_at: datetime
    last_seen_at: datetime
    used_by: tuple[str, ...] = ()  # canonical fields whose mapping expressions read this path
    severity: str = "warning"  # error: a mapping reads a field that is gone or changed type

    def describe(self) -> str:
        where = f"{self.connector}.{self.stream}: {self.path}"
        used = f"; read by the mapping for {', '.join(self.used_by)}" if self.used_by else ""
        if self.change == "appeared":
            return f"{where} appeared ({self.json_type}, in {self.records} records since {self.first_seen_at:%Y-%m-%d})"
        if self.change == "type_changed":
            before = "/".join(self.previous_types)
            return f"{where} changed type from {before} to {self.json_type} (in {self.records} records){used}"
        last = f"{self.last_seen_at:%Y-%m-%d}"
        return f"{where} disappeared: absent from the last {self.records} records (last seen {last}){used}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["description"] = self.describe()
        return data


Reader = Callable[[str, str, str], tuple[str, ...]]
"""reads(connector, stream, path) -> canonical fields whose mapping expressions read that path."""


def mapping_reader(mappings: dict[tuple[str, str], Any], kinds: dict[str, str]) -> Reader:
    """A Reader over loaded mappings; ``kinds`` maps connector name -> system kind."""

    def reads(connector: str, stream: str, path: str) -> tuple[str, ...]:
        mapping = mappings.get((kinds.get(connector, connector), stream))
        return tuple(mapping.reads(path)) if mapping is not None else ()

    return reads


def schema_drift(
    session: Session,
    *,
    reads: Reader | None = None,
    min_absent: int = MIN_ABSENT,
    factor: float = ABSENT_FACTOR,
) -> list[SchemaChange]:
    """Every field that appeared, disappeared or changed type and has not been accepted, most
    severe first. Read-only: safe as a Dagster asset check."""
    grouped: dict[tuple[str, str], dict[str, list[StreamField]]] = defaultdict(lambda: defaultdict(list))
    for row in session.scalars(
        select(StreamField).order_by(StreamField.connector, StreamField.stream, StreamField.path)
    ):
        grouped[(row.connector, row.stream)][row.path].append(row)
    changes: list[SchemaChange] = []
    for (connector, stream), paths in grouped.items():
        roots = paths.pop(ROOT, [])
        total = roots[0].record_count if roots else 0
        for path, rows in paths.items():
            used = reads(connector, stream, path) if reads else ()
            accepted = sorted(r.json_type for r in rows if r.accepted and r.json_type != "null")
            for row in rows:
                if row.accepted or row.json_type == "null":
                    continue
                change = "type_changed" if accepted else "appeared"
                changes.append(
                    SchemaChange(
                        connector,
                        stream,
                        path,
                        change,
                        row.json_type,
                        tuple(accepted),
                        row.record_count,
                        row.first_seen_at,
                        row.last_seen_at,
                        used,
                        "error" if used and change == "type_changed" else "warning",
                    )
                )
            if not any(r.accepted for r in rows):
                continue
            last = max(r.last_seen_seq for r in rows)
            count = sum(r.record_count for r in rows)
            frequency = min(1.0, count / max(last, 1))
            gap = total - last
            if gap >= max(min_absent, math.ceil(factor / frequency)):
                newest = max(rows, key=lambda r: r.last_seen_seq)
                changes.append(
                    SchemaChange(
                        connector,
                        stream,
                        path,
                        "disappeared",
                        newest.json_type,
                        (),
                        gap,
                        min(r.first_seen_at for r in rows),
                        newest.last_seen_at,
                        used,
                        "error" if used else "warning",
                    )
                )
    changes.sort(key=lambda c: (c.severity != "error", c.connector, c.stream, c.path))
    return changes


def accept_drift(
    session: Session,
    *,
    connector: str | None = None,
    stream: str | None = None,
    path: str | None = None,
    min_absent: int = MIN_ABSENT,
    factor: float = ABSENT_FACTOR,
) -> list[SchemaChange]:
    """Make the current shape the known one for the matching changes: new fields and types become
    accepted, fields that disappeared are forgotten (if they come back, they are reported again)."""
    accepted = [
        c
        for c in schema_drift(session, min_absent=min_absent, factor=factor)
        if (connector is None or c.connector == connector)
        and (stream is None or c.stream == stream)
        and (path is None or c.path == path)
    ]
    for change in accepted:
        where = (
            StreamField.connector == change.connector,
            StreamField.stream == change.stream,
            StreamField.path == change.path,
        )
        if change.change == "disappeared":
            session.execute(delete(StreamField).where(*where))
        else:
            for row in session.scalars(select(StreamField).where(*where, StreamField.json_type == change.json_type)):
                row.accepted = True
    session.flush()
    return accepted


__all__ = [
    "Discovery",
    "SchemaChange",
    "accept_drift",
    "discovered_fields",
    "discovered_records",
    "field_paths",
    "json_type",
    "mapping_reader",
    "schema_drift",
]
