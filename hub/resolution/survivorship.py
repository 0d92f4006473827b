"""Which value a golden member shows for each field, and which source record it came from.

Rules are looked up by name (settings.yaml ``survivorship``), so a typo fails with the closest valid
name. A steward's pin beats every rule. Each rule picks a winning record among those that have a
value; ``then`` breaks ties (most_frequent, most_complete) and ``source_priority`` falls back to it
for sources not in its list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.resolution.settings import FieldRule, Survivorship, closest
from schemas.errors import ConfigError

_EARLY = datetime(1900, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """One source record's value for a field."""

    record_id: int
    source: str
    source_id: str
    value: Any
    updated_at: datetime | None
    created_at: datetime | None


Rule = Callable[[list[Candidate], FieldRule], list[Candidate]]
"""A rule narrows the candidates to the ones it prefers (ties stay, for ``then``)."""


def _most_recent(cands: list[Candidate], _: FieldRule) -> list[Candidate]:
    best = max(c.updated_at or _EARLY for c in cands)
    return [c for c in cands if (c.updated_at or _EARLY) == best]


def _oldest(cands: list[Candidate], _: FieldRule) -> list[Candidate]:
    best = min(c.created_at or c.updated_at or _EARLY for c in cands)
    return [c for c in cands if (c.created_at or c.updated_at or _EARLY) == best]


def _most_frequent(cands: list[Candidate], _: FieldRule) -> list[Candidate]:
    counts = Counter(_key(c.value) for c in cands)
    top = max(counts.values())
    return [c for c in cands if counts[_key(c.value)] == top]


def _most_complete(cands: list[Candidate], _: FieldRule) -> list[Candidate]:
    best = max(len(str(c.value)) for c in cands)
    return [c for c in cands if len(str(c.value)) == best]


def _source_priority(cands: list[Candidate], rule: FieldRule) -> list[Candidate]:
    for source in rule.sources:
        ranked = [c for c in cands if c.source == source]
        if ranked:
            return ranked
    return cands


def _key(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


RULES: dict[str, Rule] = {
    "source_priority": _source_priority,
    "most_recent": _most_recent,
    "most_frequent": _most_frequent,
    "most_complete": _most_complete,
    "oldest": _oldest,
}


def rule_named(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown survivorship rule {name!r}{closest(name, RULES)}") from None


def choose(cands: Sequence[Candidate], rule: FieldRule) -> tuple[Candidate | None, str]:
    """The winning candidate and the name of the rule that decided."""
    present = [c for c in cands if c.value not in (None, "")]
    if len(present) <= 1:  # nothing to decide (most members have one record)
        return (present[0] if present else None), rule.rule
    narrowed = rule_named(rule.rule)(present, rule)
    decided_by = rule.rule
    if len(narrowed) > 1 and rule.then:
        narrowed = rule_named(rule.then)(narrowed, rule)
        decided_by = f"{rule.rule}, then {rule.then}"
    if len(narrowed) > 1 and rule.then != "most_recent":
        narrowed = _most_recent(narrowed, rule)
    winner = min(narrowed, key=lambda c: -c.record_id)  # last resort: the newest record
    return winner, decided_by


def survive(
    fields: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    config: Survivorship,
    pins: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Golden values and their lineage for one member. ``records``: dicts with ``id``, ``source``,
    ``source_id``, ``updated_at``, ``created_at`` and the fields; ``pins``: field -> {value, by, at}."""
    values: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    for name in fields:
        pin = (pins or {}).get(name)
        if pin is not None:
            values[name] = pin["value"]
            lineage[name] = {"rule": "steward_pin", "pinned_by": pin.get("by"), "pinned_at": pin.get("at")}
            continue
        rule = config.rule_for(name)
        cands = [
            Candidate(r["id"], r["source"], r["source_id"], r.get(name), r.get("updated_at"), r.get("created_at"))
            for r in records
        ]
        winner, decided_by = choose(cands, rule)
        values[name] = winner.value if winner else None
        if winner is not None:
            lineage[name] = {
                "source": winner.source,
                "source_id": winner.source_id,
                "staged_member_id": winner.record_id,
                "rule": decided_by,
            }
    return values, lineage
