"""Rendering a mapping's expressions as SQL over the stored raw records (``source_records.payload``),
so the database computes the canonical values instead of Python ("pushdown").

The parsed sqlglot trees are rewritten node by node: a source field becomes a JSON extraction
(SQLite ``payload ->> '$.a.b'``, PostgreSQL ``jsonb_extract_path_text(payload, 'a', 'b')`` over the
payload cast to jsonb once per row), the hub's own functions become SQL (``store()`` a CASE over
mappings/stores.yaml, ``m2o_id()`` an array subscript), and sqlglot renders the result per dialect.

What pushdown cannot do, and why staging stays in Python (see benchmarks/staging.py for figures):
a failed cast aborts the whole PostgreSQL statement (one bad row fails the batch) and SQLite turns
``'abc'`` into 0 silently, so per-record quarantine with a reason is lost; an unknown store code is
NULL instead of an error; and phones, emails, names and birthdays still need Python normalisers.
Lines of orders (``lines.from``) are not pushed down.
"""

from __future__ import annotations

from sqlglot import exp

from mappings.engine import ANY, TEXT, FieldRule, Mapping, StoreMap, load_stores
from schemas.errors import MappingError

DIALECTS = ("sqlite", "postgres")
PAYLOAD = "p"


class _Renderer:
    def __init__(self, dialect: str, mapping: Mapping, stores: StoreMap) -> None:
        if dialect not in DIALECTS:
            raise MappingError(f"cannot push down to {dialect!r}; dialects: {', '.join(DIALECTS)}")
        self.dialect = dialect
        self.mapping = mapping
        self.stores = stores

    # helpers ---------------------------------------------------------------------------------
    def extract(self, path: list[str | int]) -> exp.Expression:
        if self.dialect == "sqlite":
            parts: list[exp.Expression] = [exp.JSONPathRoot()]
            for part in path:
                parts.append(exp.JSONPathSubscript(this=part) if isinstance(part, int) else exp.JSONPathKey(this=part))
            return exp.JSONExtractScalar(this=exp.column(PAYLOAD), expression=exp.JSONPath(expressions=parts))
        return exp.Anonymous(
            this="jsonb_extract_path_text",
            expressions=[exp.column(PAYLOAD), *(exp.Literal.string(str(p)) for p in path)],
        )

    def numeric(self, node: exp.Expression) -> exp.Expression:
        """An operand in a numeric context: PostgreSQL's JSON text must be cast, SQLite converts."""
        rendered = self.render(node)
        if self.dialect == "postgres" and not (isinstance(node, exp.Literal) and not node.is_string):
            return exp.cast(rendered, "numeric")
        return rendered

    @staticmethod
    def path(node: exp.Expression) -> list[str] | None:
        if isinstance(node, exp.Column):
            return [p.name for p in node.parts]
        if isinstance(node, exp.Dot):
            inner = _Renderer.path(node.this)
            return None if inner is None else [*inner, node.expression.name]
        return None

    # nodes -----------------------------------------------------------------------------------
    def render(self, node: exp.Expression) -> exp.Expression:
        path = self.path(node)
        if path is not None:
            return self.extract(list(path))
        if isinstance(node, exp.Literal | exp.Boolean | exp.Null):
            return node.copy()
        if isinstance(node, exp.Paren):
            return exp.Paren(this=self.render(node.this))
        if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Mod):
            return type(node)(this=self.numeric(node.this), expression=self.numeric(node.expression))
        if isinstance(node, exp.Div):
            return exp.Div(this=self.numeric(node.this), expression=self.numeric(node.expression), typed=True)
        if isinstance(node, exp.Neg):
            return exp.Neg(this=self.numeric(node.this))
        if isinstance(node, exp.EQ | exp.NEQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
            numbers = any(isinstance(s, exp.Literal) and not s.is_string for s in (node.this, node.expression))
            side = self.numeric if numbers else self.render
            return type(node)(this=side(node.this), expression=side(node.expression))
        if isinstance(node, exp.And | exp.Or):
            return type(node)(this=self.render(node.this), expression=self.render(node.expression))
        if isinstance(node, exp.Not):
            return exp.Not(this=self.render(node.this))
        if isinstance(node, exp.Is):
            return exp.Is(this=self.render(node.this), expression=exp.Null())
        if isinstance(node, exp.In):
            return exp.In(this=self.render(node.this), expressions=[self.render(e) for e in node.expressions])
        if isinstance(node, exp.DPipe):
            return exp.DPipe(this=self.render(node.this), expression=self.render(node.expression), safe=True)
        if isinstance(node, exp.Coalesce):
            # Python's coalesce skips empty strings as well as NULL.
            parts = [self.render(a) for a in (node.this, *node.expressions)]
            blanks = [p for p in parts if not isinstance(p, exp.Literal | exp.Cast | exp.Null)]
            fallback: list[exp.Expression] = []
            if blanks:
                test = exp.or_(*(exp.EQ(this=p.copy(), expression=exp.Literal.string("")) for p in blanks))
                fallback = [exp.Case(ifs=[exp.If(this=test, true=exp.Literal.string(""))])]
            return exp.Coalesce(
                this=self.blank_null(parts[0]), expressions=[*(self.blank_null(p) for p in parts[1:]), *fallback]
            )
        if isinstance(node, exp.Trim):
            return exp.Nullif(this=exp.Trim(this=self.render(node.this)), expression=exp.Literal.string(""))
        if isinstance(node, exp.Nullif):
            return exp.Nullif(this=self.render(node.this), expression=self.render(node.expression))
        if isinstance(node, exp.Cast | exp.TryCast):
            return self.cast(node)
        if isinstance(node, exp.Case):
            return exp.Case(
                this=self.render(node.this) if node.this else None,
                ifs=[
                    exp.If(this=self.render(i.this), true=self.render(i.args["true"])) for i in node.args.get("ifs", [])
                ],
                default=self.render(node.args["default"]) if node.args.get("default") is not None else None,
            )
        if isinstance(node, exp.Lower | exp.Upper | exp.Length):
            return type(node)(this=self.render(node.this))
        if isinstance(node, exp.Replace):
            return exp.Replace(
                this=self.render(node.this),
                expression=self.render(node.expression),
                replacement=self.render(node.args["replacement"]),
            )
        if isinstance(node, exp.Substring):
            args = {k: self.render(v) for k, v in node.args.items() if isinstance(v, exp.Expression)}
            return exp.Substring(**args)
        if isinstance(node, exp.Anonymous):
            return self.function(node)
        raise MappingError(f"{node.sql()!r} cannot be pushed down ({type(node).__name__})")

    def blank_null(self, rendered: exp.Expression) -> exp.Expression:
        if isinstance(rendered, exp.Literal | exp.Cast | exp.Nullif):
            return rendered
        return exp.Nullif(this=rendered, expression=exp.Literal.string(""))

    def cast(self, node: exp.Cast) -> exp.Expression:
        inner = self.render(node.this)
        kind = node.to.this
        if kind == exp.DataType.Type.DATE:
            if self.dialect == "sqlite":
                return exp.Anonymous(this="date", expressions=[inner])
            return exp.cast(
                exp.Substring(this=inner, start=exp.Literal.number(1), length=exp.Literal.number(10)), "date"
            )
        if kind in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.DATETIME):
            return inner  # parsed in Python either way: naive times are UTC, which SQL cannot say alike
        return exp.Cast(this=inner, to=node.to.copy())

    def function(self, node: exp.Anonymous) -> exp.Expression:
        name = str(node.this).lower()
        args = node.expressions
        if name == "store":
            table = self.stores.systems.get(self.mapping.source, {})
            code = exp.cast(self.render(args[0]), "text")
            known = exp.Case(
                ifs=[
                    exp.If(
                        this=exp.In(this=code.copy(), expressions=[exp.Literal.string(c) for c in self.stores.stores]),
                        true=code.copy(),
                    )
                ]
            )
            if not table:
                return known
            return exp.Case(
                this=code,
                ifs=[exp.If(this=exp.Literal.string(k), true=exp.Literal.string(v)) for k, v in sorted(table.items())],
                default=known,
            )
        if name == "utc":
            return self.render(args[0])
        path = self.path(args[0]) if args else None
        if name in ("m2o_id", "m2o_name") and path is not None:
            return self.extract([*path, 0 if name == "m2o_id" else 1])
        if name == "odoo_null" and path is not None:
            value = self.extract(list(path))
            if self.dialect == "sqlite":
                kind = exp.Anonymous(
                    this="json_type", expressions=[exp.column(PAYLOAD), exp.Literal.string("$." + ".".join(path))]
                )
                return exp.Case(
                    ifs=[exp.If(this=exp.EQ(this=kind, expression=exp.Literal.string("false")), true=exp.Null())],
                    default=value,
                )
            return exp.Nullif(this=value, expression=exp.Literal.string("false"))
        raise MappingError(f"{name}() cannot be pushed down")


def rule_sql(rule: FieldRule, mapping: Mapping, dialect: str, stores: StoreMap | None = None) -> str:
    """One field's expression as SQL over a row whose payload is the column ``p``."""
    if rule.tree is None:
        raise MappingError(f"{rule.target}: no parsed expression")
    return _Renderer(dialect, mapping, stores or load_stores()).render(rule.tree).sql(dialect=dialect)


def select_sql(mapping: Mapping, dialect: str, *, stores: StoreMap | None = None, table: str = "source_records") -> str:
    """``SELECT id, <field> AS "<target>", …`` over the mapping's stream in ``table``, with bind
    parameters ``:source`` (the connector name) and ``:stream``. The hub's own ``source_records``
    seals its payloads (hub.privacy), which SQL cannot read: give a table of plain JSON payloads
    with the same ``id, source, stream, payload`` columns."""
    renderer = _Renderer(dialect, mapping, stores or load_stores())
    columns = [exp.column("id")]
    for rule in mapping.fields:
        if rule.tree is None:
            raise MappingError(f"{rule.target}: no parsed expression")
        columns.append(exp.alias_(renderer.render(rule.tree), rule.target, quoted=True))
    payload = "CAST(payload AS JSONB)" if dialect == "postgres" else "payload"
    fields = ", ".join(c.sql(dialect=dialect) for c in columns)
    # The one parse of each payload happens in the subquery; bind parameters stay in :name form
    # for SQLAlchemy's text() on every backend.
    return (
        f"SELECT {fields} FROM (SELECT id, {payload} AS {PAYLOAD} FROM {exp.to_identifier(table).sql(dialect=dialect)} "
        "WHERE source = :source AND stream = :stream) AS r"
    )


def pushable(mapping: Mapping) -> list[str]:
    """The targets whose expressions cannot be pushed down (empty: all can)."""
    failing = []
    renderer = _Renderer("sqlite", mapping, load_stores())
    for rule in mapping.fields:
        try:
            renderer.render(rule.tree) if rule.tree is not None else None
        except MappingError:
            failing.append(rule.target)
    return failing


def kinds_of(mapping: Mapping) -> dict[str, str]:
    """target -> inferred kind, to convert SQL results back (e.g. text to Decimal)."""
    return {rule.target: rule.kind if rule.kind != ANY else TEXT for rule in mapping.fields}


__all__ = ["DIALECTS", "kinds_of", "pushable", "rule_sql", "select_sql"]
