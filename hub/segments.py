"""Segments (会员分类): named groups of members, each a SQL rule over the member view, evaluated in
the database after every ledger and tier update, with history of who entered and left, when.

A rule is a boolean SQL expression over the columns of ``member_metrics`` (documented at the top of
hub/segments.yaml and in ``hub.analytics.metrics``). Rules are parsed by sqlglot once, checked — known
columns, allowed operators and functions, types — and every problem names the file, line and column
and the closest valid name, as mapping files do. The checked rule is rendered for SQLite or
PostgreSQL, so a million members are classified by a few set-based statements.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from hub.analytics import metrics, sql
from hub.config import _expand
from hub.normalise import city_name
from hub.tables import MemberMetrics, SegmentChange, SegmentMembership, SegmentRun
from mappings import load_stores
from mappings.engine import Problem, Where, _File, _hint, _offset
from schemas.errors import ConfigError

SEGMENTS_FILE = Path(__file__).resolve().parent / "segments.yaml"

NUMBER, TEXT, BOOLEAN, DATE, TIMESTAMP, NULL = "number", "text", "boolean", "date", "timestamp", "null"
VIEW_COLUMNS: dict[str, str] = {
    "member_id": TEXT,
    "tier": TEXT,
    "city": TEXT,
    "home_store": TEXT,
    "home_store_city": TEXT,
    "birthday": DATE,
    "marketing_consent": BOOLEAN,
    "enrolled_at": TIMESTAMP,
    "first_order_at": TIMESTAMP,
    "last_order_at": TIMESTAMP,
    "orders": NUMBER,
    "spend": NUMBER,
    "avg_order_value": NUMBER,
    "store_orders": NUMBER,
    "online_orders": NUMBER,
    "stores": NUMBER,
    "points": NUMBER,
    "days_since_first_order": NUMBER,
    "days_since_last_order": NUMBER,
    "tenure_days": NUMBER,
    "typical_interval_days": NUMBER,
    "interval_basis": TEXT,
    "churn_risk": NUMBER,
    "r_score": NUMBER,
    "f_score": NUMBER,
    "m_score": NUMBER,
    "aov_score": NUMBER,
}
"""The member view's columns and their kinds: what a segment rule may read."""

FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Coalesce: "coalesce",
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Abs: "abs",
    exp.Round: "round",
    exp.Length: "length",
}
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)
TOP_LEVEL = ("tag_prefix", "segments", "triggers")
SEGMENT_KEYS = ("label", "description", "rule", "tag", "writeback")
DEFAULT_TAG_PREFIX = "MH-"


class SegmentFileError(ConfigError):
    """The segments file has problems; ``problems`` lists each, the message prints them a line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Segment:
    name: str
    label: str
    rule: str
    predicate: exp.Expression = field(repr=False, compare=False)
    description: str = ""
    tag: str | None = None
    """What destinations show (a Shopify tag, a HubSpot value, an Odoo category, a Square group);
    None: not written back."""

    def sql(self, session: Session, alias: str = "m") -> str:
        """The rule in the session's dialect, its columns read from ``alias``."""
        tree = self.predicate.copy()
        for column in tree.find_all(exp.Column):
            column.set("table", exp.to_identifier(alias))
        return tree.sql(dialect=sql.dialect_of(session))


@dataclass(frozen=True)
class Segments:
    path: Path
    segments: dict[str, Segment]
    tag_prefix: str
    triggers: dict[str, Any]
    fingerprint: str

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.segments.values())

    def get(self, name: str) -> Segment:
        if name not in self.segments:
            raise ConfigError(f"no segment {name!r}{_hint(name, self.segments)}")
        return self.segments[name]


# ------------------------------------------------------------------------------ loading and checking
def segments_file() -> Path:
    """hub/segments.yaml, unless ``MEMBERHUB_SEGMENTS`` names another file."""
    return Path(os.environ.get("MEMBERHUB_SEGMENTS") or SEGMENTS_FILE)


def load_segments(path: Path | str | None = None) -> Segments:
    segments, problems = check_segments(path)
    if problems or segments is None:
        raise SegmentFileError(problems)
    return segments


def check_segments(path: Path | str | None = None) -> tuple[Segments | None, list[Problem]]:
    """Parse and check a segments file; every problem is returned, not just the first."""
    path = Path(path) if path else segments_file()
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(Where(path, 1, 1), f"cannot read the file: {exc.strerror}")]
    file = _File(path, content)
    try:
        root = yaml.compose(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Where(path, mark.line + 1, mark.column + 1) if mark else Where(path, 1, 1)
        return None, [Problem(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
    if not isinstance(root, yaml.MappingNode):
        return None, [Problem(Where(path, 1, 1), "a segments file is a YAML mapping with `segments:`")]
    problems: list[Problem] = []
    nodes: dict[str, yaml.Node] = {}
    for key, value in root.value:
        if key.value not in TOP_LEVEL:
            problems.append(Problem(file.where(key), f"unknown key {key.value!r}{_hint(key.value, TOP_LEVEL)}"))
        else:
            nodes[key.value] = value
    prefix = str(nodes["tag_prefix"].value) if "tag_prefix" in nodes else DEFAULT_TAG_PREFIX
    found: dict[str, Segment] = {}
    if "segments" not in nodes or not isinstance(nodes["segments"], yaml.MappingNode):
        problems.append(Problem(Where(path, 1, 1), "`segments:` must map each segment's name to its label and rule"))
    else:
        for key, value in nodes["segments"].value:
            segment = _segment(file, key, value, prefix, problems)
            if segment is not None:
                found[segment.name] = segment
    triggers: dict[str, Any] = {}
    if "triggers" in nodes:
        raw = yaml.safe_load(yaml.serialize(nodes["triggers"])) or {}
        try:
            triggers = _expand(raw, path, root, ("triggers",))
        except ConfigError as exc:
            problems.append(Problem(file.where(nodes["triggers"]), str(exc)))
    if problems:
        return None, problems
    fingerprint = hashlib.sha256(content.encode()).hexdigest()
    return Segments(path, found, prefix, triggers, fingerprint), []


def _segment(file: _File, key: yaml.Node, value: yaml.Node, prefix: str, problems: list[Problem]) -> Segment | None:
    name = str(key.value)
    if not name.replace("_", "").isalnum() or not name.isascii() or not name[:1].isalpha() or name != name.lower():
        problems.append(Problem(file.where(key), f"segment name {name!r}: use lower case letters, digits and _"))
        return None
    if not isinstance(value, yaml.MappingNode):
        problems.append(Problem(file.where(value), f"{name}: give label and rule"))
        return None
    fields: dict[str, yaml.Node] = {}
    for k, v in value.value:
        if k.value not in SEGMENT_KEYS:
            problems.append(Problem(file.where(k), f"{name}: unknown key {k.value!r}{_hint(k.value, SEGMENT_KEYS)}"))
        else:
            fields[k.value] = v
    missing = [k for k in ("label", "rule") if k not in fields]
    if missing:
        problems.append(Problem(file.where(key), f"{name}: missing {' and '.join(missing)}"))
        return None
    rule_node = fields["rule"]
    if not isinstance(rule_node, yaml.ScalarNode):
        problems.append(Problem(file.where(rule_node), f"{name}: the rule must be text, e.g. orders >= 3"))
        return None
    rule = str(rule_node.value)
    try:
        predicate = parse_rule(rule)
    except _RuleError as exc:
        offset = exc.offset if exc.offset is not None else _offset(exc.node, rule)
        problems.append(Problem(file.locate(rule_node, rule, offset), f"{name}: {exc.message}"))
        return None
    label = str(fields["label"].value)
    writeback = str(fields["writeback"].value).lower() not in ("false", "no", "0") if "writeback" in fields else True
    tag = str(fields["tag"].value) if "tag" in fields else f"{prefix}{label}"
    if "," in tag:
        problems.append(Problem(file.where(fields.get("tag", key)), f"{name}: a tag cannot hold a comma (Shopify)"))
        return None
    description = str(fields["description"].value) if "description" in fields else ""
    return Segment(name, label, rule, predicate, description, tag if writeback else None)


class _RuleError(Exception):
    def __init__(self, node: exp.Expression | None, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.node, self.message, self.offset = node, message, offset


def parse_rule(rule: str) -> exp.Expression:
    """Parse and check one rule; raises ``_RuleError`` at the offending node."""
    if not rule.strip():
        raise _RuleError(None, "empty rule", 0)
    try:
        tree = sqlglot.parse_one(rule, read=sql.READ)
    except ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        line, col = int(detail.get("line", 1)), int(detail.get("col", 1))
        offset = sum(len(x) + 1 for x in rule.split("\n")[: line - 1]) + max(0, col - 1)
        raise _RuleError(None, f"cannot parse {rule!r}: {detail.get('description') or exc}", offset) from None
    except SqlglotError as exc:
        raise _RuleError(None, f"cannot parse {rule!r}: {exc}", 0) from None
    try:
        kind = _kind(tree)
    except _RuleError as exc:
        if isinstance(exc.node, exp.Subquery | exp.Select) and exc.offset is None:
            exc.offset = max(0, rule.rfind("(", 0, _offset(exc.node, rule)))  # at the query's parenthesis
        raise
    if kind not in (BOOLEAN, NULL):
        raise _RuleError(tree, f"a rule must be true or false for a member, but {tree.sql()} is {kind}")
    return tree


def _kind(node: exp.Expression) -> str:
    """The kind of ``node``, checking it on the way: only columns of the view, literals, comparisons,
    logic, arithmetic and a few functions."""
    if isinstance(node, exp.Paren):
        return _kind(node.this)
    if isinstance(node, exp.Column):
        if node.table:
            raise _RuleError(node, f"write the column alone, without {node.table}.: rules read one member view")
        if node.name not in VIEW_COLUMNS:
            raise _RuleError(node, f"unknown column {node.name!r}{_hint(node.name, VIEW_COLUMNS)}")
        return VIEW_COLUMNS[node.name]
    if isinstance(node, exp.Literal):
        return TEXT if node.is_string else NUMBER
    if isinstance(node, exp.Boolean):
        return BOOLEAN
    if isinstance(node, exp.Null):
        return NULL
    if isinstance(node, exp.And | exp.Or):
        for side in (node.this, node.expression):
            _expect(side, BOOLEAN, f"{type(node).__name__.upper()} takes true/false on both sides")
        return BOOLEAN
    if isinstance(node, exp.Not):
        _expect(node.this, BOOLEAN, "NOT takes true/false")
        return BOOLEAN
    if isinstance(node, exp.Is):
        _kind(node.this)
        return BOOLEAN
    if isinstance(node, _COMPARISONS):
        _comparable(node, node.this, node.expression)
        return BOOLEAN
    if isinstance(node, exp.Between):
        for bound in (node.args["low"], node.args["high"]):
            _comparable(node, node.this, bound)
        return BOOLEAN
    if isinstance(node, exp.In):
        if node.args.get("query"):
            raise _RuleError(node, "IN takes a list of values, not a query")
        for item in node.expressions:
            _comparable(node, node.this, item)
        return BOOLEAN
    if isinstance(node, exp.Like | exp.ILike):
        _expect(node.this, TEXT, "LIKE compares text")
        return BOOLEAN
    if isinstance(node, _ARITHMETIC):
        for side in (node.this, node.expression):
            _expect(side, NUMBER, f"{node.sql()}: arithmetic takes numbers")
        return NUMBER
    if isinstance(node, exp.Neg):
        _expect(node.this, NUMBER, "a minus sign takes a number")
        return NUMBER
    if isinstance(node, exp.Case):
        kinds = [_kind(branch.args["true"]) for branch in node.args.get("ifs") or []]
        for branch in node.args.get("ifs") or []:
            _expect(branch.this, BOOLEAN, "CASE WHEN takes a condition")
        if node.args.get("default") is not None:
            kinds.append(_kind(node.args["default"]))
        known = {k for k in kinds if k != NULL}
        return known.pop() if len(known) == 1 else (NULL if not known else NUMBER)
    if type(node) in FUNCTIONS:
        args = [a for a in node.iter_expressions()]
        kinds = [_kind(a) for a in args]
        if isinstance(node, exp.Coalesce):
            known = {k for k in kinds if k != NULL}
            return known.pop() if len(known) == 1 else NULL
        if isinstance(node, exp.Lower | exp.Upper):
            return TEXT
        return NUMBER
    if isinstance(node, exp.Func):
        name = node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.this)
        allowed = ", ".join(sorted(FUNCTIONS.values()))
        raise _RuleError(node, f"function {name.lower()}() is not allowed in a segment rule; allowed: {allowed}")
    raise _RuleError(node, f"{node.sql()!r} is not allowed in a segment rule (columns, values, comparisons, logic)")


def _expect(node: exp.Expression, kind: str, message: str) -> None:
    found = _kind(node)
    if found not in (kind, NULL):
        raise _RuleError(node, f"type mismatch: {message}, but {node.sql()} is {found}")


def _comparable(parent: exp.Expression, left: exp.Expression, right: exp.Expression) -> None:
    a, b = _kind(left), _kind(right)
    if NULL in (a, b) or a == b:
        return
    temporal = {TEXT, DATE, TIMESTAMP}
    if a in temporal and b in temporal and TEXT in (a, b):
        return
    raise _RuleError(right, f"type mismatch: {parent.sql()} compares {a} with {b}")


# ------------------------------------------------------------------------------ recomputing
@dataclass
class RunCounts:
    run_id: int = 0
    members: int = 0
    entered: int = 0
    left: int = 0
    sizes: dict[str, int] = field(default_factory=dict)


def store_cities() -> dict[str, str | None]:
    """Chain store code -> its city, named as member cities are (上海 → 上海市)."""
    return {code: city_name(entry.get("city")) for code, entry in load_stores().stores.items()}


def recompute(
    session: Session, definitions: Segments, *, default_tier: str, as_of: datetime | None = None
) -> RunCounts:
    """Rebuild the member view, then move members into and out of every segment. Re-running with
    nothing changed records no entry or exit.

    Membership is diffed in one pass: every rule is evaluated over the view (one scan each), the
    result is full-joined with the current memberships, and only the differences — who entered, who
    left, including everyone in a segment taken out of the file — are written, to the history and
    to the memberships."""
    as_of = as_of or datetime.now(UTC)
    run = SegmentRun(as_of=as_of, definitions_hash=definitions.fingerprint, sizes={})
    session.add(run)
    session.flush()
    counts = RunCounts(run_id=run.id)
    counts.members = metrics.refresh(session, as_of=as_of, default_tier=default_tier, store_cities=store_cities())
    now = sql.timestamp(as_of, session)
    metrics.drop_work_tables(session, (MOVES,))
    metrics.run(
        session, metrics.Step("moves", sql.render(_moves(session, definitions), session), MOVES, metrics.PARALLEL)
    )
    moved = {"entered": {}, "left": {}}
    for segment_name, change, number in session.execute(
        text(f"SELECT segment, change, COUNT(*) FROM {MOVES} GROUP BY segment, change")
    ):
        moved[change][segment_name] = int(number)
    counts.entered, counts.left = sum(moved["entered"].values()), sum(moved["left"].values())
    for statement in (
        f"""INSERT INTO segment_history (run_id, segment, member_id, change, at)
        SELECT {run.id}, segment, member_id, change, {now} FROM {MOVES}
        ORDER BY segment, member_id {metrics.BYTE_ORDER}""",
        f"""DELETE FROM segment_memberships WHERE EXISTS (
          SELECT 1 FROM {MOVES} AS v WHERE v.change = 'left'
          AND v.segment = segment_memberships.segment AND v.member_id = segment_memberships.member_id)""",
        f"""INSERT INTO segment_memberships (segment, member_id, entered_at, run_id)
        SELECT segment, member_id, {now}, {run.id} FROM {MOVES} WHERE change = 'entered'
        ORDER BY segment, member_id {metrics.BYTE_ORDER}""",
    ):
        session.execute(text(sql.render(statement, session)))
    metrics.drop_work_tables(session, (MOVES,))
    counts.sizes = {name: int(size) for name, size in sizes(session).items()}
    per_segment = {
        segment.name: {
            "entered": moved["entered"].get(segment.name, 0),
            "left": moved["left"].get(segment.name, 0),
            "members": counts.sizes.setdefault(segment.name, 0),
        }
        for segment in definitions
    }
    run.members, run.sizes, run.finished_at = counts.members, per_segment, datetime.now(UTC)
    session.flush()
    return counts


MOVES = "segment_moves"
"""The run's scratch table (temporary): segment, member_id, change (entered | left)."""


def _moves(session: Session, definitions: Segments) -> str:
    wanted = [
        f"SELECT {sql.text(s.name)} AS segment, m.member_id FROM member_metrics AS m WHERE ({s.sql(session)})"
        for s in definitions
    ] or ["SELECT segment, member_id FROM segment_memberships WHERE 1 = 0"]
    return f"""CREATE TEMPORARY TABLE {MOVES} AS
    WITH wanted AS ({" UNION ALL ".join(wanted)})
    SELECT COALESCE(w.segment, s.segment) AS segment, COALESCE(w.member_id, s.member_id) AS member_id,
           CASE WHEN s.member_id IS NULL THEN 'entered' ELSE 'left' END AS change
    FROM wanted AS w FULL OUTER JOIN segment_memberships AS s ON s.segment = w.segment AND s.member_id = w.member_id
    WHERE w.member_id IS NULL OR s.member_id IS NULL"""


# ------------------------------------------------------------------------------ reading
def sizes(session: Session) -> dict[str, int]:
    return dict(
        session.execute(select(SegmentMembership.segment, func.count()).group_by(SegmentMembership.segment)).all()
    )


def members_of(session: Session, segment: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    query = (
        select(SegmentMembership.member_id, SegmentMembership.entered_at, MemberMetrics)
        .join(MemberMetrics, MemberMetrics.member_id == SegmentMembership.member_id, isouter=True)
        .where(SegmentMembership.segment == segment)
        .order_by(SegmentMembership.member_id)
        .limit(limit)
    )
    rows = []
    for member_id, entered_at, row in session.execute(query):
        rows.append(
            {
                "member_id": member_id,
                "entered_at": entered_at,
                "tier": row.tier if row else None,
                "orders": row.orders if row else None,
                "spend": row.spend if row else None,
                "days_since_last_order": row.days_since_last_order if row else None,
                "rfm": _rfm(row) if row else None,
            }
        )
    return rows


def history(session: Session, *, segment: str | None = None, member_id: str | None = None) -> list[dict[str, Any]]:
    query = select(SegmentChange).order_by(SegmentChange.id)
    if segment:
        query = query.where(SegmentChange.segment == segment)
    if member_id:
        query = query.where(SegmentChange.member_id == member_id)
    return [
        {"segment": c.segment, "member_id": c.member_id, "change": c.change, "at": c.at, "run_id": c.run_id}
        for c in session.scalars(query)
    ]


def _rfm(row: MemberMetrics) -> str | None:
    if row.r_score is None:
        return None
    return f"{row.r_score}{row.f_score}{row.m_score}"


def explain(session: Session, member_id: str) -> dict[str, Any] | None:
    """A member's view row, segments and the evidence behind the churn score, in words."""
    row = session.get(MemberMetrics, member_id)
    if row is None:
        return None
    data = {c.name: getattr(row, c.name) for c in MemberMetrics.__table__.columns}
    data["rfm"] = _rfm(row)
    data["segments"] = sorted(
        session.scalars(select(SegmentMembership.segment).where(SegmentMembership.member_id == member_id))
    )
    data["churn_evidence"] = churn_evidence(row)
    return data


def churn_evidence(row: MemberMetrics) -> str:
    if row.orders == 0 or row.typical_interval_days is None:
        return "no orders yet: no churn score / 尚无订单，不计流失风险"
    gap = row.typical_interval_days
    if row.interval_basis == "own":
        span = (row.days_since_first_order or 0) - (row.days_since_last_order or 0)
        basis = f"own typical gap {gap:.1f} days ({row.orders} orders over {span} days)"
    else:
        basis = f"one order only: the chain's average gap {gap:.1f} days"
    overdue = row.days_since_last_order / max(gap, 1.0)
    level = churn_level(row.churn_risk)
    return (
        f"last order {row.days_since_last_order} days ago; {basis}; {overdue:.2f}× the gap → "
        f"risk {row.churn_risk:.2f} ({level}) / 距上次购买 {row.days_since_last_order} 天，流失风险 {level}"
    )


def churn_level(risk: float | None) -> str:
    if risk is None:
        return "n/a"
    return "high" if risk >= 2 / 3 else "medium" if risk >= 1 / 3 else "low"


# ------------------------------------------------------------------------------ the step Dagster and the CLI run
def refresh(hub: Any, *, as_of: datetime | None = None, definitions: Segments | None = None) -> dict[str, Any]:
    """Recompute the member view and segments, then record the marketing events due (``hub``: a
    ``hub.service.Hub``). Each part in its own transaction."""
    from hub import triggers

    as_of = as_of or datetime.now(UTC)
    definitions = definitions or load_segments()
    with hub.session() as session, session.begin():
        counts = recompute(session, definitions, default_tier=hub.config.programme.tiers[0].name, as_of=as_of)
    with hub.session() as session, session.begin():
        events = triggers.emit(session, hub.config.programme, definitions.triggers, now=as_of)
    return {
        "members": counts.members,
        "entered": counts.entered,
        "left": counts.left,
        "sizes": counts.sizes,
        "events": events.emitted,
    }
