"""The resolver's settings as typed, validated data, read from YAML (hub/resolution/settings.yaml).

A typo in a file fails with the file, the line and the closest valid name, the way sqlglot answers
an unknown dialect: ``settings.yaml, line 42: unknown level kind 'jaro_winkler_' (did you mean
'jaro_winkler'?)``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import yaml

from hub.resolution.text import VIEWS
from schemas.errors import ConfigError

DEFAULT_SETTINGS = Path(__file__).resolve().parent / "settings.yaml"

FIELDS = (
    "family_name",
    "given_name",
    "full_name",
    "birthday",
    "phone",
    "email",
    "id_number",
    "loyalty_card",
    "gender",
    "city",
    "postcode",
    "address",
    "street_number",
    "state",
)
"""Canonical fields the resolver knows. ``memberhub match --columns`` maps a file's columns onto them."""

LEVEL_KINDS = (
    "exact",
    "swapped",
    "same_as",
    "jaro_winkler",
    "levenshtein",
    "damerau_levenshtein",
    "within_days",
    "else",
)


def closest(name: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` or the list of valid names when nothing is close."""
    choices = sorted(str(c) for c in choices)
    match = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f"; valid: {', '.join(choices)}"


class _Where:
    """The file and line of a YAML node, for messages."""

    def __init__(self, path: Path | str, line: int | None) -> None:
        self.path, self.line = path, line

    def __str__(self) -> str:
        name = Path(self.path).name
        return f"{name}, line {self.line}" if self.line else name


class _LineLoader(yaml.SafeLoader):
    """Keeps the line of each mapping, under the key ``__line__``. Only ``true``/``false`` are
    booleans: YAML 1.1 would read the level key ``on:`` as True."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


@dataclass(frozen=True)
class Level:
    label: str
    kind: str
    view: str = "text"  # the view of the field this level reads (``on:``)
    threshold: float | None = None  # at_least / at_most / days
    other_field: str | None = None  # swapped: with
    other_view: str | None = None  # same_as: other
    m: float = 0.5
    u: float = 0.5


@dataclass(frozen=True)
class Comparison:
    field: str
    label: str
    levels: tuple[Level, ...]
    tf: bool = False

    @property
    def level_labels(self) -> tuple[str, ...]:
        return ("missing", *(level.label for level in self.levels))


@dataclass(frozen=True)
class KeyPart:
    field: str
    view: str = "text"


@dataclass(frozen=True)
class BlockingRule:
    name: str
    keys: tuple[KeyPart, ...]
    max_block_size: int
    unordered: bool = False


@dataclass(frozen=True)
class DeterministicRule:
    name: str
    fields: tuple[str, ...]
    max_holders: int | None = None
    unless: dict[str, tuple[str, ...]] = field(default_factory=dict)  # comparison field -> level labels


@dataclass(frozen=True)
class Thresholds:
    merge: float = 0.95
    review: float = 0.5
    conflict: float = 0.0001


@dataclass(frozen=True)
class FieldRule:
    rule: str
    then: str | None = None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Survivorship:
    default: FieldRule
    fields: dict[str, FieldRule]

    def rule_for(self, name: str) -> FieldRule:
        return self.fields.get(name, self.default)


@dataclass(frozen=True)
class Training:
    min_pairs: int = 500
    max_iterations: int = 60
    u_sample_pairs: int = 1_000_000


@dataclass(frozen=True)
class Settings:
    thresholds: Thresholds
    blocking: tuple[BlockingRule, ...]
    deterministic: tuple[DeterministicRule, ...]
    comparisons: tuple[Comparison, ...]
    survivorship: Survivorship
    training: Training
    source: str = "settings.yaml"

    def comparison(self, name: str) -> Comparison:
        for comparison in self.comparisons:
            if comparison.field == name:
                return comparison
        raise ConfigError(f"no comparison on {name!r}{closest(name, [c.field for c in self.comparisons])}")

    def restricted_to(self, present: set[str]) -> Settings:
        """Only the comparisons and rules whose fields the data has (``memberhub match`` on a file with
        five columns). A blocking rule needs all its key fields; a deterministic rule all its fields."""
        return Settings(
            thresholds=self.thresholds,
            blocking=tuple(r for r in self.blocking if all(k.field in present for k in r.keys)),
            deterministic=tuple(
                DeterministicRule(r.name, r.fields, r.max_holders, {c: v for c, v in r.unless.items() if c in present})
                for r in self.deterministic
                if all(f in present for f in r.fields)
            ),
            comparisons=tuple(c for c in self.comparisons if c.field in present),
            survivorship=self.survivorship,
            training=self.training,
            source=self.source,
        )


SURVIVORSHIP_RULES = ("source_priority", "most_recent", "most_frequent", "most_complete", "oldest")


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and check a settings file; the packaged defaults when ``path`` is None."""
    if path is None:
        return _default_settings()
    return _load(Path(path))


@cache
def _default_settings() -> Settings:
    return _load(DEFAULT_SETTINGS)


def _load(path: Path) -> Settings:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read resolution settings {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from exc
    return _parse(raw or {}, path)


def parse_settings(raw: dict[str, Any], source: str = "<settings>") -> Settings:
    """Settings from an already loaded mapping (tests and programmatic overrides)."""
    return _parse(raw, Path(source))


def _keys(raw: dict[str, Any], allowed: tuple[str, ...], where: _Where, what: str) -> None:
    for key in raw:
        if key != "__line__" and key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r} in {what}{closest(key, allowed)}")


def _at(raw: Any, path: Path) -> _Where:
    return _Where(path, raw.get("__line__") if isinstance(raw, dict) else None)


def _field(name: Any, where: _Where) -> str:
    if name not in FIELDS:
        raise ConfigError(f"{where}: unknown field {name!r}{closest(name, FIELDS)}")
    return str(name)


def _view(name: Any, where: _Where) -> str:
    if name not in VIEWS:
        raise ConfigError(f"{where}: unknown view {name!r}{closest(name, VIEWS)}")
    return str(name)


def _parse(raw: dict[str, Any], path: Path) -> Settings:
    where = _at(raw, path)
    _keys(
        raw, ("thresholds", "blocking", "deterministic", "comparisons", "survivorship", "training"), where, "settings"
    )
    t = raw.get("thresholds") or {}
    _keys(t, ("merge", "review", "conflict"), _at(t, path), "thresholds")
    thresholds = Thresholds(**{k: float(v) for k, v in t.items() if k != "__line__"})
    if not 0 < thresholds.conflict < thresholds.review <= thresholds.merge < 1:
        raise ConfigError(f"{_at(t, path)}: thresholds must satisfy 0 < conflict < review <= merge < 1")

    comparisons = tuple(_comparison(c, path) for c in raw.get("comparisons") or [])
    labels = {c.field: set(c.level_labels) for c in comparisons}

    b = raw.get("blocking") or {}
    _keys(b, ("max_block_size", "rules"), _at(b, path), "blocking")
    default_cap = int(b.get("max_block_size", 60))
    blocking = []
    for rule in b.get("rules") or []:
        w = _at(rule, path)
        _keys(rule, ("name", "keys", "max_block_size", "unordered"), w, "a blocking rule")
        parts = []
        for key in rule.get("keys") or []:
            name, _, view = str(key).partition(".")
            parts.append(KeyPart(_field(name, w), _view(view or "text", w)))
        if not parts:
            raise ConfigError(f"{w}: blocking rule {rule.get('name')!r} has no keys")
        blocking.append(
            BlockingRule(
                str(rule.get("name") or "+".join(str(k) for k in rule["keys"])),
                tuple(parts),
                int(rule.get("max_block_size", default_cap)),
                bool(rule.get("unordered", False)),
            )
        )

    deterministic = []
    for rule in raw.get("deterministic") or []:
        w = _at(rule, path)
        _keys(rule, ("name", "fields", "max_holders", "unless"), w, "a deterministic rule")
        unless: dict[str, tuple[str, ...]] = {}
        for comp, levels in (rule.get("unless") or {}).items():
            if comp == "__line__":
                continue
            if comp not in labels:
                raise ConfigError(f"{w}: 'unless' names no comparison {comp!r}{closest(comp, labels)}")
            levels = (levels,) if isinstance(levels, str) else tuple(levels)
            for level in levels:
                if level not in labels[comp]:
                    raise ConfigError(f"{w}: {comp} has no level {level!r}{closest(level, labels[comp])}")
            unless[comp] = levels
        deterministic.append(
            DeterministicRule(
                str(rule.get("name")),
                tuple(_field(f, w) for f in rule.get("fields") or []),
                int(rule["max_holders"]) if rule.get("max_holders") is not None else None,
                unless,
            )
        )
    for rule in deterministic:  # a deterministic rule's pairs must be generated to be seen
        if not any(tuple(k.field for k in b.keys) == rule.fields for b in blocking):
            blocking.append(BlockingRule(rule.name, tuple(KeyPart(f) for f in rule.fields), default_cap))

    s = raw.get("survivorship") or {}
    _keys(s, ("default", "fields"), _at(s, path), "survivorship")
    survivorship = Survivorship(
        _field_rule(s.get("default") or {"rule": "most_recent"}, path),
        {
            name: _field_rule(rule, path)
            for name, rule in (s.get("fields") or {}).items()
            if name != "__line__" and _survivor_field(name, _at(s.get("fields"), path))
        },
    )
    tr = raw.get("training") or {}
    _keys(tr, ("min_pairs", "max_iterations", "u_sample_pairs"), _at(tr, path), "training")
    training = Training(**{k: int(v) for k, v in tr.items() if k != "__line__"})
    return Settings(thresholds, tuple(blocking), tuple(deterministic), comparisons, survivorship, training, path.name)


SURVIVING_FIELDS = ("full_name", "phone", "email", "birthday", "city")


def _survivor_field(name: str, where: _Where) -> bool:
    if name not in SURVIVING_FIELDS:
        raise ConfigError(f"{where}: survivorship for unknown field {name!r}{closest(name, SURVIVING_FIELDS)}")
    return True


def _field_rule(raw: Any, path: Path) -> FieldRule:
    if isinstance(raw, str):
        raw = {"rule": raw}
    w = _at(raw, path)
    _keys(raw, ("rule", "then", "sources"), w, "a survivorship rule")
    for key in ("rule", "then"):
        name = raw.get(key)
        if name is not None and name not in SURVIVORSHIP_RULES:
            raise ConfigError(f"{w}: unknown survivorship rule {name!r}{closest(name, SURVIVORSHIP_RULES)}")
    if raw.get("rule") is None:
        raise ConfigError(f"{w}: a survivorship entry needs a rule; valid: {', '.join(SURVIVORSHIP_RULES)}")
    if raw["rule"] == "source_priority" and not raw.get("sources"):
        raise ConfigError(f"{w}: source_priority needs `sources`, the systems in order of trust")
    return FieldRule(str(raw["rule"]), raw.get("then"), tuple(raw.get("sources") or ()))


def _comparison(raw: dict[str, Any], path: Path) -> Comparison:
    w = _at(raw, path)
    _keys(raw, ("field", "label", "levels", "tf"), w, "a comparison")
    name = _field(raw.get("field"), w)
    levels = []
    for level in raw.get("levels") or []:
        lw = _at(level, path)
        _keys(
            level,
            ("label", "kind", "on", "at_least", "at_most", "days", "with", "other", "m", "u"),
            lw,
            f"a level of {name}",
        )
        kind = level.get("kind")
        if kind not in LEVEL_KINDS:
            raise ConfigError(f"{lw}: unknown level kind {kind!r}{closest(kind, LEVEL_KINDS)}")
        threshold = level.get("at_least", level.get("at_most", level.get("days")))
        if kind in ("jaro_winkler", "levenshtein", "damerau_levenshtein", "within_days") and threshold is None:
            raise ConfigError(f"{lw}: a {kind} level needs {'at_least' if kind == 'jaro_winkler' else 'at_most'}")
        view = _view(level.get("on", "days" if kind == "within_days" else "text"), lw)
        m, u = float(level.get("m", 0.5)), float(level.get("u", 0.5))
        if not (0 < m <= 1 and 0 < u <= 1):
            raise ConfigError(f"{lw}: m and u are probabilities in (0, 1]")
        levels.append(
            Level(
                label=str(level.get("label") or kind),
                kind=kind,
                view=view,
                threshold=float(threshold) if threshold is not None else None,
                other_field=_field(level["with"], lw) if kind == "swapped" else None,
                other_view=_view(level.get("other", "text"), lw) if kind == "same_as" else None,
                m=m,
                u=u,
            )
        )
    if not levels or levels[-1].kind != "else":
        raise ConfigError(f"{w}: the comparison on {name} must end with an `else` level")
    return Comparison(name, str(raw.get("label") or name), tuple(levels), bool(raw.get("tf", False)))


_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
