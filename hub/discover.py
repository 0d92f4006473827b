"""``memberhub connectors discover NAME``: which streams a connector serves and which fields their
records carry, read from a sample page per stream, before any mapping file is written.

Field paths are the ones staging records for schema drift (``hub.drift.field_paths``): nested objects
as dotted paths (``customer.id``), the fields of a list of objects as ``line_items[].sku``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from connectors import Connector
from hub.drift import field_paths

EXAMPLE_CHARS = 60


@dataclass
class FieldSeen:
    path: str
    types: list[str]  # JSON types seen, most frequent first ("null" last)
    present: int  # sampled records that have it
    example: Any = None  # the first value that is not null, an object or an array

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.path, "type": "|".join(self.types), "present": self.present, "example": self.example}


@dataclass
class StreamSeen:
    name: str
    kind: str
    id_field: str
    sampled: int = 0
    fields: list[FieldSeen] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.name,
            "kind": self.kind,
            "id_field": self.id_field,
            "sampled": self.sampled,
            "fields": [f.as_dict() for f in self.fields],
        }


def discover(connector: Connector, *, pages: int = 1) -> list[StreamSeen]:
    """Read up to ``pages`` pages of every stream (from the start) and describe their fields."""
    found = []
    for stream in connector.streams:
        reader = connector.read(stream.name, None)
        try:
            records = [r for page in islice(reader, pages) for r in page.records]
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        found.append(describe(stream.name, stream.kind, stream.id_field, records))
    return found


def describe(name: str, kind: str, id_field: str, records: list[Any]) -> StreamSeen:
    """The fields of these records: path, JSON types, how many have it, one example value."""
    counts: dict[str, dict[str, int]] = {}
    examples: dict[str, Any] = {}
    seen = StreamSeen(name, kind, id_field)
    for record in records:
        if not isinstance(record, dict):
            continue
        seen.sampled += 1
        for path, kind_seen in field_paths(record):
            per_type = counts.setdefault(path, {})
            per_type[kind_seen] = per_type.get(kind_seen, 0) + 1
            if path not in examples and kind_seen not in ("null", "object", "array"):
                value = first_value(record, path)
                if value is not None:
                    examples[path] = value
    for path in sorted(counts, key=_order):
        per_type = counts[path]
        types = sorted(per_type, key=lambda t: (t == "null", -per_type[t], t))
        present = max(per_type.values()) if len(per_type) == 1 else _present(records, path)
        seen.fields.append(FieldSeen(path, types, present, examples.get(path)))
    return seen


def first_value(record: Any, path: str) -> Any:
    """The first scalar at ``path`` (``a.b``, ``items[].sku``) in one record, or None."""
    values = _values(record, path.split("."))
    return next((v for v in values if v is not None and not isinstance(v, dict | list)), None)


def _values(value: Any, steps: list[str]) -> list[Any]:
    if not steps:
        return [value]
    step, rest = steps[0], steps[1:]
    if not isinstance(value, dict):
        return []
    if step.endswith("[]"):
        items = value.get(step[:-2])
        if not isinstance(items, list):
            return []
        return [found for item in items for found in _values(item, rest)]
    if step not in value:
        return []
    return _values(value[step], rest)


def _present(records: list[Any], path: str) -> int:
    return sum(1 for r in records if isinstance(r, dict) and _values(r, path.split(".")))


def _order(path: str) -> tuple[str, ...]:
    # A parent before its children, then alphabetical: ``customer``, ``customer.id``, ``email``.
    return tuple(path.replace("[]", "").split("."))


def shorten(value: Any, width: int = EXAMPLE_CHARS) -> str:
    """An example value as one short line for the terminal."""
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
