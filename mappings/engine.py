"""Declarative mappings: canonical field ← SQL expression over a source record's fields.

Each YAML file maps one source stream. Expressions are parsed by sqlglot once, checked against a
table of known functions and canonical targets, and compiled into plain Python closures that run
per record. Nested source fields are dotted column paths (``customer.id``, ``properties.email``);
dotted target names build nested values (``total.amount``).
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import ParseError

from schemas.errors import MappingError

MAPPINGS_DIR = Path(__file__).resolve().parent
Row = dict[str, Any]
Compiled = Callable[[Row], Any]

TARGET_FIELDS = {
    "member": {
        "source_id",
        "channel",
        "full_name",
        "given_name",
        "family_name",
        "phone",
        "email",
        "birthday",
        "gender",
        "city",
        "store_code",
        "marketing_consent",
        "created_at",
        "updated_at",
    },
    "order": {
        "source_id",
        "member_source_id",
        "store_code",
        "channel",
        "status",
        "total.amount",
        "total.currency",
        "refunded.amount",
        "refunded.currency",
        "ordered_at",
        "updated_at",
    },
}
LINE_FIELDS = {"sku", "title", "quantity", "unit_price.amount", "unit_price.currency"}


@dataclass(frozen=True)
class Where:
    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def _fail(where: Where, message: str, *, name: str = "", choices: set[str] | list[str] = ()) -> MappingError:
    hint = ""
    if name and choices:
        close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(choices))}"
    return MappingError(f"{where}: {message}{hint}")


# ------------------------------------------------------------------------------ functions
def _m2o(value: Any, index: int) -> Any:
    if isinstance(value, list | tuple) and len(value) == 2:
        return value[index]
    return None


def _utc(value: Any) -> Any:
    """A naive time string (Odoo's UTC) or datetime becomes an aware UTC datetime."""
    if value in (None, False, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _substr(value: Any, start: Any, length: Any = None) -> Any:
    if value is None:
        return None
    begin = int(start) - 1
    return str(value)[begin:] if length is None else str(value)[begin : begin + int(length)]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": lambda v: None if v is None else str(v).lower(),
    "upper": lambda v: None if v is None else str(v).upper(),
    "length": lambda v: None if v is None else len(str(v)),
    "replace": lambda v, a, b: None if v is None else str(v).replace(str(a), str(b)),
    "substr": _substr,
    "m2o_id": lambda v: _m2o(v, 0),
    "m2o_name": lambda v: _m2o(v, 1),
    "odoo_null": lambda v: None if v is False else v,
    "utc": _utc,
}
"""Functions a mapping may call, beyond SQL's own coalesce, trim, nullif, cast, case and operators.
``store(code)`` is resolved per source from mappings/stores.yaml."""

_BINARY: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
}


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str):
        return Decimal(value)
    return value


def _cast(value: Any, kind: exp.DataType.Type) -> Any:
    if value is None:
        return None
    types = exp.DataType.Type
    try:
        if kind in (types.DECIMAL, types.DOUBLE, types.FLOAT, types.BIGDECIMAL):
            return _number(value) if not isinstance(value, bool) else Decimal(int(value))
        if kind in (types.INT, types.BIGINT, types.SMALLINT, types.TINYINT):
            number = _number(value)
            if number != int(number):
                raise ValueError(f"{value!r} is not a whole number")
            return int(number)
        if kind in (types.TEXT, types.VARCHAR, types.CHAR):
            return str(value)
        if kind == types.DATE:
            return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        if kind in (types.TIMESTAMP, types.TIMESTAMPTZ, types.DATETIME):
            return _utc(value)
        if kind == types.BOOLEAN:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "y", "t")
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise ValueError(f"cannot cast {value!r} to {kind.value.lower()}") from exc
    raise ValueError(f"unsupported cast to {kind.value.lower()}")


# ------------------------------------------------------------------------------ compiler
class _Compiler:
    def __init__(self, where: Where, store: Callable[[Any], Any]) -> None:
        self.where = where
        self.store = store
        self.fields: set[str] = set()

    def compile(self, node: exp.Expression) -> Compiled:
        method = getattr(self, f"_{type(node).__name__.lower()}", None)
        if method is not None:
            return method(node)
        op = _BINARY.get(type(node))
        if op is not None:
            left, right = self.compile(node.this), self.compile(node.expression)
            numeric = isinstance(node, exp.Add | exp.Sub | exp.Mul)

            def binary(row: Row) -> Any:
                a, b = left(row), right(row)
                if a is None or b is None:
                    return None
                if numeric:
                    a, b = _number(a), _number(b)
                return op(a, b)

            return binary
        raise _fail(self.where, f"unsupported expression {node.sql()!r} ({type(node).__name__})")

    def _column(self, node: exp.Column) -> Compiled:
        path = [part.name for part in node.parts]
        self.fields.add(".".join(path))

        def column(row: Row) -> Any:
            value: Any = row
            for key in path:
                if not isinstance(value, dict):
                    return None
                value = value.get(key)
            return value

        return column

    def _paren(self, node: exp.Paren) -> Compiled:
        return self.compile(node.this)

    def _literal(self, node: exp.Literal) -> Compiled:
        value: Any = node.this if node.is_string else Decimal(node.this)
        if isinstance(value, Decimal) and value == value.to_integral_value() and "." not in node.this:
            value = int(value)
        return lambda row: value

    def _boolean(self, node: exp.Boolean) -> Compiled:
        value = bool(node.this)
        return lambda row: value

    def _null(self, node: exp.Null) -> Compiled:
        return lambda row: None

    def _neg(self, node: exp.Neg) -> Compiled:
        inner = self.compile(node.this)
        return lambda row: None if (v := inner(row)) is None else -_number(v)

    def _div(self, node: exp.Div) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)

        def divide(row: Row) -> Any:
            a, b = left(row), right(row)
            if a is None or b is None or _number(b) == 0:
                return None
            return Decimal(_number(a)) / Decimal(_number(b))

        return divide

    def _dpipe(self, node: exp.DPipe) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        return lambda row: None if (a := left(row)) is None or (b := right(row)) is None else f"{a}{b}"

    def _coalesce(self, node: exp.Coalesce) -> Compiled:
        parts = [self.compile(node.this), *(self.compile(e) for e in node.expressions)]

        def coalesce(row: Row) -> Any:
            for part in parts:
                value = part(row)
                if value is not None and value != "":
                    return value
            return None

        return coalesce

    def _trim(self, node: exp.Trim) -> Compiled:
        inner = self.compile(node.this)
        return lambda row: None if (v := inner(row)) is None else (str(v).strip() or None)

    def _nullif(self, node: exp.Nullif) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        return lambda row: None if (a := left(row)) == right(row) else a

    def _cast(self, node: exp.Cast) -> Compiled:
        inner, kind = self.compile(node.this), node.to.this
        return lambda row: _cast(inner(row), kind)

    def _trycast(self, node: exp.TryCast) -> Compiled:
        return self._cast(node)

    def _is(self, node: exp.Is) -> Compiled:
        if not isinstance(node.expression, exp.Null):
            raise _fail(self.where, "only IS NULL and IS NOT NULL are supported")
        inner = self.compile(node.this)
        return lambda row: inner(row) is None

    def _not(self, node: exp.Not) -> Compiled:
        inner = self.compile(node.this)
        return lambda row: None if (v := inner(row)) is None else not v

    def _and(self, node: exp.And) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        return lambda row: bool(left(row)) and bool(right(row))

    def _or(self, node: exp.Or) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        return lambda row: bool(left(row)) or bool(right(row))

    def _in(self, node: exp.In) -> Compiled:
        inner = self.compile(node.this)
        options = [self.compile(e) for e in node.expressions]
        return lambda row: None if (v := inner(row)) is None else v in {o(row) for o in options}

    def _case(self, node: exp.Case) -> Compiled:
        subject = self.compile(node.this) if node.this else None
        branches = [(self.compile(i.this), self.compile(i.args["true"])) for i in node.args.get("ifs", [])]
        default = self.compile(node.args["default"]) if node.args.get("default") else (lambda row: None)

        def case(row: Row) -> Any:
            value = subject(row) if subject else None
            for test, result in branches:
                outcome = test(row)
                if (subject is not None and outcome == value) or (subject is None and outcome):
                    return result(row)
            return default(row)

        return case

    def _anonymous(self, node: exp.Anonymous) -> Compiled:
        name = str(node.this).lower()
        args = [self.compile(e) for e in node.expressions]
        if name == "store":
            if len(args) != 1:
                raise _fail(self.where, "store() takes one argument: the system's own store code")
            return lambda row: self.store(args[0](row))
        function = FUNCTIONS.get(name)
        if function is None:
            raise _fail(self.where, f"unknown function {name}()", name=name, choices={*FUNCTIONS, "store"})
        return lambda row: function(*(a(row) for a in args))

    def _lower(self, node: exp.Lower) -> Compiled:
        return self._call("lower", node.this)

    def _upper(self, node: exp.Upper) -> Compiled:
        return self._call("upper", node.this)

    def _length(self, node: exp.Length) -> Compiled:
        return self._call("length", node.this)

    def _substring(self, node: exp.Substring) -> Compiled:
        parts = [self.compile(node.this), self.compile(node.args["start"])]
        if node.args.get("length"):
            parts.append(self.compile(node.args["length"]))
        return lambda row: _substr(*(p(row) for p in parts))

    def _call(self, name: str, *nodes: exp.Expression) -> Compiled:
        args = [self.compile(n) for n in nodes]
        function = FUNCTIONS[name]
        return lambda row: function(*(a(row) for a in args))


# ------------------------------------------------------------------------------ mapping files
@dataclass
class FieldRule:
    target: str
    expression: str
    compiled: Compiled
    where: Where


@dataclass
class Mapping:
    """A compiled mapping for one source stream."""

    path: Path
    source: str
    stream: str
    target: str  # member | order
    fields: list[FieldRule]
    lines_from: str | None
    line_fields: list[FieldRule]
    source_fields: set[str]

    def apply(self, record: Row) -> dict[str, Any]:
        """The canonical values for one raw record (not yet validated). Raises MappingError naming
        the field whose expression failed, so the record can be quarantined with that reason."""
        values = {"source": self.source, **_evaluate(self.fields, record)}
        if self.lines_from is not None:
            items = record.get(self.lines_from) or []
            values["lines"] = [_evaluate(self.line_fields, item) for item in items if isinstance(item, dict)]
        return values


def _evaluate(rules: list[FieldRule], record: Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in rules:
        try:
            value = rule.compiled(record)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise MappingError(f"{rule.target}: {exc} (mapping {rule.where})") from exc
        head, _, tail = rule.target.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    for key, value in list(out.items()):
        if isinstance(value, dict) and all(v is None for k, v in value.items() if k == "amount"):
            out[key] = None  # a money value with no amount is absent, whatever its currency
    return out


def _compile_rules(
    node: yaml.MappingNode, path: Path, valid: set[str], store: Callable[[Any], Any]
) -> tuple[list[FieldRule], set[str]]:
    rules, fields = [], set()
    for key_node, value_node in node.value:
        target = key_node.value
        where = Where(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        if target not in valid:
            raise _fail(where, f"unknown canonical field {target!r}", name=target, choices=valid)
        text = str(value_node.value)
        value_where = Where(path, value_node.start_mark.line + 1, value_node.start_mark.column + 1)
        try:
            tree = sqlglot.parse_one(text)
        except ParseError as exc:
            detail = exc.errors[0] if exc.errors else {}
            column = value_where.column + max(0, int(detail.get("col", 1)) - 1)
            raise _fail(
                Where(path, value_where.line, column),
                f"{target}: cannot parse {text!r}: {detail.get('description', exc)}",
            ) from exc
        compiler = _Compiler(value_where, store)
        rules.append(FieldRule(target, text, compiler.compile(tree), value_where))
        fields |= compiler.fields
    return rules, fields


def load_mapping(path: Path, stores: StoreMap | None = None) -> Mapping:
    """Parse, check and compile one mapping file; errors name the file, line and column."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(root, yaml.MappingNode):
        raise MappingError(f"{path}:1:1: a mapping file is a YAML mapping with source, stream, target, fields")
    nodes = {k.value: (k, v) for k, v in root.value}
    top_level = {"source", "stream", "target", "fields", "lines"}
    for name, (key, _) in nodes.items():
        if name not in top_level:
            raise _fail(
                Where(path, key.start_mark.line + 1, key.start_mark.column + 1),
                f"unknown key {name!r}",
                name=name,
                choices=top_level,
            )
    for required in ("source", "stream", "target", "fields"):
        if required not in nodes:
            raise MappingError(f"{path}:1:1: missing required key {required!r}")
    source, stream, target = (nodes[k][1].value for k in ("source", "stream", "target"))
    target_key = nodes["target"][1]
    if target not in TARGET_FIELDS:
        raise _fail(
            Where(path, target_key.start_mark.line + 1, target_key.start_mark.column + 1),
            f"unknown target {target!r}",
            name=target,
            choices=set(TARGET_FIELDS),
        )
    stores = stores or load_stores()
    store = stores.resolver(source)
    rules, fields = _compile_rules(nodes["fields"][1], path, TARGET_FIELDS[target], store)
    lines_from, line_rules = None, []
    if "lines" in nodes:
        lines_node = nodes["lines"][1]
        inner = {k.value: v for k, v in lines_node.value}
        lines_from = inner["from"].value
        line_rules, line_fields = _compile_rules(inner["fields"], path, LINE_FIELDS, store)
        fields |= {f"{lines_from}[].{f}" for f in line_fields}
    return Mapping(path, source, stream, target, rules, lines_from, line_rules, fields)


@dataclass(frozen=True)
class StoreMap:
    stores: dict[str, dict[str, Any]]  # chain store code -> {name, city, timezone}
    systems: dict[str, dict[str, str]]  # source system -> {its code: chain code}

    def resolver(self, source: str) -> Callable[[Any], Any]:
        table = self.systems.get(source, {})

        def store(code: Any) -> Any:
            if code is None:
                return None
            key = str(code)
            if key in table:
                return table[key]
            if key in self.stores:
                return key
            raise ValueError(f"store code {key!r} of {source} is not in mappings/stores.yaml")

        return store


@cache
def load_stores(path: Path = MAPPINGS_DIR / "stores.yaml") -> StoreMap:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    stores = {entry["code"]: entry for entry in data.get("stores", [])}
    systems = {system: {str(k): v for k, v in codes.items()} for system, codes in data.get("systems", {}).items()}
    for system, codes in systems.items():
        for code, chain in codes.items():
            if chain not in stores:
                raise MappingError(f"{path}: {system} code {code!r} maps to unknown store {chain!r}")
    return StoreMap(stores, systems)


def mapping_files(root: Path = MAPPINGS_DIR) -> list[Path]:
    return sorted(p for p in root.glob("*/*.yaml"))


def load_mappings(root: Path = MAPPINGS_DIR) -> dict[tuple[str, str], Mapping]:
    """Every mapping under ``root``, keyed by (source kind, stream)."""
    mappings = {}
    for path in mapping_files(root):
        mapping = load_mapping(path)
        mappings[(mapping.source, mapping.stream)] = mapping
    return mappings
