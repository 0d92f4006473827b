"""Declarative mappings: canonical field ← SQL expression over a source record's fields.

Each YAML file maps one source stream. Expressions are parsed by sqlglot once, checked (known
functions, canonical targets, source fields when discovery has seen the stream, and types), and
compiled into plain Python closures that run per record. Nested source fields are dotted column
paths (``customer.id``, ``properties.email``); dotted target names build nested values
(``total.amount``). The same parsed expressions can be rendered as SQL over the stored raw records
(``mappings.pushdown``).

A file::

    source: shopify            # the system kind (connector kind), not a connector's name
    stream: customers
    target: member             # member | order
    description: optional text for people
    required: [phone]          # optional: canonical fields without which a record is quarantined
    fields:
      source_id: id
      phone: coalesce(mobile, phone)
    lines:                     # orders only: one canonical line per item of a list field
      from: line_items
      fields:
        sku: upper(sku)

Every problem names the file, line and column of the offending token, and the closest valid name.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from schemas import Channel, OrderStatus
from schemas.errors import MappingError

MAPPINGS_DIR = Path(__file__).resolve().parent
Row = dict[str, Any]
Compiled = Callable[[Row], Any]

# ------------------------------------------------------------------------------ types
# The kinds an expression can have. ``any`` is a source field whose type is not known statically;
# ``null`` is the NULL literal. Both are compatible with everything.
TEXT, NUMBER, BOOLEAN, DATE, TIMESTAMP, OBJECT, ARRAY, NULL, ANY = (
    "text",
    "number",
    "boolean",
    "date",
    "timestamp",
    "object",
    "array",
    "null",
    "any",
)
_SCALARS = frozenset({TEXT, NUMBER, BOOLEAN, DATE, TIMESTAMP, NULL, ANY})
_ID = frozenset({TEXT, NUMBER})
_TIME = frozenset({TIMESTAMP, DATE, TEXT, NUMBER})
_NAME = frozenset({TEXT})

TARGET_TYPES: dict[str, dict[str, frozenset[str]]] = {
    "member": {
        "source_id": _ID,
        "channel": frozenset({ANY}),  # checked by value: a literal must be a known channel
        "full_name": _NAME,
        "given_name": _NAME,
        "family_name": _NAME,
        "phone": frozenset({TEXT, NUMBER}),
        "email": frozenset({TEXT}),
        "birthday": frozenset({DATE, TIMESTAMP, TEXT, NUMBER}),
        "gender": frozenset({TEXT, NUMBER}),
        "city": _NAME,
        "store_code": frozenset({TEXT}),
        "marketing_consent": frozenset({BOOLEAN, TEXT, NUMBER}),
        "created_at": _TIME,
        "updated_at": _TIME,
        "resident_id": frozenset({TEXT, NUMBER}),
        "address": frozenset({TEXT}),
        "province": frozenset({TEXT}),
        "district": frozenset({TEXT}),
    },
    "order": {
        "source_id": _ID,
        "member_source_id": _ID,
        "store_code": frozenset({TEXT}),
        "channel": frozenset({ANY}),
        "status": frozenset({TEXT}),
        "total.amount": frozenset({NUMBER, TEXT}),
        "total.currency": frozenset({TEXT}),
        "refunded.amount": frozenset({NUMBER, TEXT}),
        "refunded.currency": frozenset({TEXT}),
        "ordered_at": _TIME,
        "updated_at": _TIME,
    },
}
"""Canonical fields each target takes, with the kinds of expression each accepts. ``resident_id``,
``address``, ``province`` and ``district`` are normalised at staging (a keyed hash, a split address)
rather than carried on the canonical Member."""
LINE_TYPES: dict[str, frozenset[str]] = {
    "sku": frozenset({TEXT, NUMBER}),
    "title": frozenset({TEXT}),
    "quantity": frozenset({NUMBER, TEXT}),
    "unit_price.amount": frozenset({NUMBER, TEXT}),
    "unit_price.currency": frozenset({TEXT}),
}
TARGET_FIELDS = {target: set(types) for target, types in TARGET_TYPES.items()}
LINE_FIELDS = set(LINE_TYPES)

_CURRENCY = re.compile(r"[A-Z]{3}")
LITERAL_VALUES: dict[str, Callable[[str], str | None]] = {
    "channel": lambda v: None if v in Channel.__members__ else _choices("channel", v, Channel.__members__),
    "status": lambda v: None if v in OrderStatus.__members__ else _choices("order status", v, OrderStatus.__members__),
    "total.currency": lambda v: None if _CURRENCY.fullmatch(v) else f"{v!r} is not an ISO 4217 code such as 'CNY'",
    "refunded.currency": lambda v: None if _CURRENCY.fullmatch(v) else f"{v!r} is not an ISO 4217 code such as 'CNY'",
    "unit_price.currency": lambda v: None if _CURRENCY.fullmatch(v) else f"{v!r} is not an ISO 4217 code such as 'CNY'",
}
"""When a target's whole expression is a constant, the constant is checked at validation time."""


def _choices(what: str, value: str, valid: Iterable[str]) -> str:
    return f"unknown {what} {value!r}{_hint(value, valid)}"


def _hint(name: str, choices: Iterable[str]) -> str:
    options = sorted(set(choices))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    if options and len(options) <= 12:
        return f"; valid: {', '.join(options)}"
    return ""


# ------------------------------------------------------------------------------ problems
@dataclass(frozen=True)
class Where:
    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a mapping file, where it is, and what to do."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class MappingFileError(MappingError):
    """A mapping file has problems; ``problems`` lists every one, the message prints them a line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _fail(where: Where, message: str, *, name: str = "", choices: Iterable[str] = ()) -> MappingError:
    return MappingFileError([Problem(where, message + (_hint(name, choices) if name else ""))])


class _ExprError(Exception):
    """A problem inside one expression, at ``node``; turned into a positioned Problem by the caller."""

    def __init__(self, node: exp.Expression | None, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def _offset(node: exp.Expression | None, text: str) -> int:
    """Where ``node`` starts in ``text``. sqlglot records positions on identifiers, literals and
    named functions only; a node without one starts at its first operand, less the keywords and
    parentheses written before it (``cast(``, ``case when``, ``not``, ``(``)."""
    if node is None:
        return 0
    from sqlglot.tokens import Tokenizer

    try:
        starts = [t.start for t in Tokenizer().tokenize(text)]
    except SqlglotError:
        starts = []
    return _start(node, starts)


def _start(node: exp.Expression, starts: list[int]) -> int:
    if node.meta and "start" in node.meta:
        return int(node.meta["start"])
    children = [_start(c, starts) for c in node.iter_expressions() if not isinstance(c, exp.DataType)]
    first = min(children) if children else 0
    if isinstance(node, exp.Cast | exp.If) or (isinstance(node, exp.Func) and not isinstance(node, exp.Anonymous)):
        prefix = 2  # name (
    elif isinstance(node, exp.Case):
        prefix = 1 if node.this is not None else 2
    elif isinstance(node, exp.Paren | exp.Neg) or (isinstance(node, exp.Not) and not isinstance(node.this, exp.Is)):
        prefix = 1
    else:
        prefix = 0
    index = bisect.bisect_left(starts, first)
    return starts[max(0, index - prefix)] if starts and prefix else first


# ------------------------------------------------------------------------------ functions
def _m2o(value: Any, index: int) -> Any:
    if isinstance(value, list | tuple) and len(value) == 2:
        return value[index]
    return None


def _utc(value: Any) -> Any:
    """A naive time string (Odoo's UTC) or datetime becomes an aware UTC datetime."""
    if type(value) is str and value:  # timestamps repeat (a batch imported at one moment): read each once
        return _utc_text(value)
    if value in (None, False, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@lru_cache(maxsize=16384)
def _utc_text(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _substr(value: Any, start: Any, length: Any = None) -> Any:
    if value is None:
        return None
    begin = int(start) - 1
    return str(value)[begin:] if length is None else str(value)[begin : begin + int(length)]


@dataclass(frozen=True)
class Function:
    """A function mappings may call: its Python implementation, the kinds each argument accepts, and
    the kind it returns (``"same"``: the kind of its first argument)."""

    call: Callable[..., Any]
    args: tuple[frozenset[str], ...]
    returns: str
    optional: int = 0  # trailing arguments that may be left out
    doc: str = ""


_SCALAR_ARG = _SCALARS
FUNCTIONS: dict[str, Function] = {
    "lower": Function(lambda v: None if v is None else str(v).lower(), (_SCALAR_ARG,), TEXT, doc="lower case"),
    "upper": Function(lambda v: None if v is None else str(v).upper(), (_SCALAR_ARG,), TEXT, doc="upper case"),
    "length": Function(lambda v: None if v is None else len(str(v)), (_SCALAR_ARG,), NUMBER, doc="characters"),
    "replace": Function(
        lambda v, a, b: None if v is None else str(v).replace(str(a), str(b)),
        (_SCALAR_ARG, _SCALAR_ARG, _SCALAR_ARG),
        TEXT,
        doc="replace(text, old, new)",
    ),
    "substr": Function(
        _substr, (_SCALAR_ARG, frozenset({NUMBER, ANY, NULL}), frozenset({NUMBER, ANY, NULL})), TEXT, optional=1
    ),
    "m2o_id": Function(lambda v: _m2o(v, 0), (frozenset({ARRAY, ANY, BOOLEAN, NULL}),), ANY, doc="Odoo [id, name]"),
    "m2o_name": Function(lambda v: _m2o(v, 1), (frozenset({ARRAY, ANY, BOOLEAN, NULL}),), TEXT, doc="Odoo [id, name]"),
    "odoo_null": Function(lambda v: None if v is False else v, (frozenset({*_SCALARS, ARRAY, OBJECT}),), "same"),
    "utc": Function(_utc, (frozenset({TEXT, TIMESTAMP, DATE, ANY, NULL}),), TIMESTAMP, doc="naive time as UTC"),
}
"""Functions a mapping may call, beyond SQL's own coalesce, trim, nullif, cast, case and operators.
``store(code)`` is resolved per source from mappings/stores.yaml."""
_ALL_FUNCTIONS = {*FUNCTIONS, "store", "coalesce", "trim", "nullif", "cast", "try_cast"}
SQL_ALTERNATIVES = {
    "concat": "write a || b",
    "concat_ws": "write a || ' ' || b",
    "ifnull": "write coalesce(a, b)",
    "nvl": "write coalesce(a, b)",
    "isnull": "write coalesce(a, b)",
    "date": "write cast(x as date)",
    "to_date": "write cast(x as date)",
    "str_to_date": "write cast(x as date)",
    "strftime": "write cast(x as date) or utc(x)",
    "to_timestamp": "write utc(x)",
    "left": "write substr(x, 1, n)",
    "substring": "write substr(x, start, length)",
    "json_extract": "write the field as a dotted name: a.b",
    "now": "mappings are deterministic: the time of staging is not a source value",
    "current_timestamp": "mappings are deterministic: the time of staging is not a source value",
    "current_date": "mappings are deterministic: the time of staging is not a source value",
}
"""SQL functions people reach for, and what a mapping writes instead."""

_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}
_ARITHMETIC: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Mod: operator.mod,
}


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str):
        return Decimal(value)
    return value


_TYPES = exp.DataType.Type
CAST_KINDS: dict[exp.DataType.Type, str] = {
    _TYPES.DECIMAL: NUMBER,
    _TYPES.DOUBLE: NUMBER,
    _TYPES.FLOAT: NUMBER,
    _TYPES.BIGDECIMAL: NUMBER,
    _TYPES.INT: NUMBER,
    _TYPES.BIGINT: NUMBER,
    _TYPES.SMALLINT: NUMBER,
    _TYPES.TINYINT: NUMBER,
    _TYPES.TEXT: TEXT,
    _TYPES.VARCHAR: TEXT,
    _TYPES.CHAR: TEXT,
    _TYPES.DATE: DATE,
    _TYPES.TIMESTAMP: TIMESTAMP,
    _TYPES.TIMESTAMPTZ: TIMESTAMP,
    _TYPES.DATETIME: TIMESTAMP,
    _TYPES.BOOLEAN: BOOLEAN,
}
_CASTABLE = {
    NUMBER: {TEXT, NUMBER, BOOLEAN},
    TEXT: {TEXT, NUMBER, BOOLEAN, DATE, TIMESTAMP},
    DATE: {TEXT, DATE, TIMESTAMP},
    TIMESTAMP: {TEXT, DATE, TIMESTAMP},
    BOOLEAN: {BOOLEAN, TEXT, NUMBER},
}


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


def _unify(kinds: list[str], nodes: list[exp.Expression], what: str) -> str:
    """The one kind of several alternatives (CASE branches, coalesce arguments); a mismatch is
    reported at the first alternative that disagrees with the ones before it."""
    known = {k for k in kinds if k not in (ANY, NULL)}
    if not known:
        return ANY if ANY in kinds else NULL
    if len(known) == 1:
        return known.pop()
    if known <= {DATE, TIMESTAMP}:
        return TIMESTAMP
    first = next(k for k in kinds if k not in (ANY, NULL))
    culprit = next(n for k, n in zip(kinds, nodes, strict=True) if k not in (ANY, NULL, first))
    raise _ExprError(culprit, f"type mismatch: {what} mixes {first} and {kinds[nodes.index(culprit)]}")


def _comparable(a: str, b: str) -> bool:
    if ANY in (a, b) or NULL in (a, b) or a == b:
        return True
    temporal = {TEXT, DATE, TIMESTAMP}
    return a in temporal and b in temporal


def _expect(kind: str, accepted: Iterable[str], node: exp.Expression, what: str) -> None:
    if kind in (ANY, NULL) or kind in accepted:
        return
    wanted = " or ".join(sorted(set(accepted) - {ANY, NULL}))
    raise _ExprError(node, f"type mismatch: {what} takes {wanted}, but {node.sql()} is {kind}")


# ------------------------------------------------------------------------------ compiler
Fields = dict[str, set[str]]
"""Discovered source fields: path -> the JSON types seen for it (string, number, boolean, object,
array, null)."""


class _Compiler:
    """Turns one parsed expression into a closure and infers its kind, checking as it goes."""

    def __init__(self, store: Callable[[Any], Any], source: str, known: Fields | None, label: str, stores: Any) -> None:
        self.store = store
        self.source = source
        self.known = known
        self.label = label
        self.stores = stores
        self.fields: set[str] = set()

    def compile(self, node: exp.Expression) -> tuple[Compiled, str]:
        method = getattr(self, f"_{type(node).__name__.lower()}", None)
        if method is not None:
            return method(node)
        if type(node) in _COMPARE:
            return self._compare(node)
        if type(node) in _ARITHMETIC:
            return self._arithmetic(node)
        if isinstance(node, exp.Func):
            return self._unknown(node, node.sql_name().lower())
        if isinstance(node, exp.Alias):
            raise _ExprError(
                node.args.get("alias"),
                f"unexpected {node.alias!r} after {node.this.sql()!r}: a missing operator or comma?",
            )
        raise _ExprError(node, f"unsupported expression {node.sql()!r} ({type(node).__name__})")

    # leaves ----------------------------------------------------------------------------------
    def _column(self, node: exp.Column) -> tuple[Compiled, str]:
        return self._path(node, [part.name for part in node.parts])

    def _dot(self, node: exp.Dot) -> tuple[Compiled, str]:
        parts: list[str] = []
        current: exp.Expression = node
        while isinstance(current, exp.Dot):
            parts.insert(0, current.expression.name)
            current = current.this
        if not isinstance(current, exp.Column):
            raise _ExprError(node, f"unsupported expression {node.sql()!r} (Dot)")
        return self._path(node, [p.name for p in current.parts] + parts)

    def _path(self, node: exp.Expression, path: list[str]) -> tuple[Compiled, str]:
        dotted = ".".join(path)
        kind = ANY
        if self.known is not None:
            if dotted not in self.known:
                raise _ExprError(
                    node, f"unknown source field {dotted!r} (not seen in {self.label}){_hint(dotted, self.known)}"
                )
            seen = self.known[dotted] - {"null"}
            if seen == {"object"}:
                kind = OBJECT
            elif seen == {"array"}:
                kind = ARRAY
        self.fields.add(dotted)
        if len(path) == 1:
            key = path[0]
            return (lambda row: row.get(key)), kind

        def column(row: Row) -> Any:
            value: Any = row
            for part in path:
                if not isinstance(value, dict):
                    return None
                value = value.get(part)
            return value

        return column, kind

    def _literal(self, node: exp.Literal) -> tuple[Compiled, str]:
        if node.is_string:
            text = node.this
            return (lambda row: text), TEXT
        value: Any = Decimal(node.this)
        if value == value.to_integral_value() and "." not in node.this and "e" not in node.this.lower():
            value = int(value)
        return (lambda row: value), NUMBER

    def _boolean(self, node: exp.Boolean) -> tuple[Compiled, str]:
        value = bool(node.this)
        return (lambda row: value), BOOLEAN

    def _null(self, node: exp.Null) -> tuple[Compiled, str]:
        return (lambda row: None), NULL

    def _paren(self, node: exp.Paren) -> tuple[Compiled, str]:
        return self.compile(node.this)

    # operators -------------------------------------------------------------------------------
    def _numeric(self, node: exp.Expression, what: str) -> Compiled:
        compiled, kind = self.compile(node)
        _expect(kind, {NUMBER}, node, what)
        return compiled

    def _arithmetic(self, node: exp.Expression) -> tuple[Compiled, str]:
        symbol = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Mod: "%"}[type(node)]
        op = _ARITHMETIC[type(node)]
        left = self._numeric(node.this, f"arithmetic ({symbol})")
        right = self._numeric(node.expression, f"arithmetic ({symbol})")

        def arithmetic(row: Row) -> Any:
            a, b = left(row), right(row)
            if a is None or b is None:
                return None
            return op(_number(a), _number(b))

        return arithmetic, NUMBER

    def _neg(self, node: exp.Neg) -> tuple[Compiled, str]:
        inner = self._numeric(node.this, "negation (-)")
        return (lambda row: None if (v := inner(row)) is None else -_number(v)), NUMBER

    def _div(self, node: exp.Div) -> tuple[Compiled, str]:
        left = self._numeric(node.this, "arithmetic (/)")
        right = self._numeric(node.expression, "arithmetic (/)")

        def divide(row: Row) -> Any:
            a, b = left(row), right(row)
            if a is None or b is None or _number(b) == 0:
                return None
            return Decimal(_number(a)) / Decimal(_number(b))

        return divide, NUMBER

    def _compare(self, node: exp.Expression) -> tuple[Compiled, str]:
        op = _COMPARE[type(node)]
        (left, a), (right, b) = self.compile(node.this), self.compile(node.expression)
        if not _comparable(a, b):
            raise _ExprError(node, f"type mismatch: {node.sql()} compares {a} with {b}")

        def compare(row: Row) -> Any:
            x, y = left(row), right(row)
            if x is None or y is None:
                return None
            if (isinstance(x, Decimal | int | float) and isinstance(y, str)) or (
                isinstance(y, Decimal | int | float) and isinstance(x, str)
            ):
                try:
                    x, y = _number(x), _number(y)
                except InvalidOperation:
                    return False
            return op(x, y)

        return compare, BOOLEAN

    def _between(self, node: exp.Between) -> tuple[Compiled, str]:
        inner, kind = self.compile(node.this)
        (low, a), (high, b) = self.compile(node.args["low"]), self.compile(node.args["high"])
        if not (_comparable(kind, a) and _comparable(kind, b)):
            raise _ExprError(node, f"type mismatch: {node.sql()!r} compares {kind} with {a} and {b}")

        def between(row: Row) -> Any:
            v, lo, hi = inner(row), low(row), high(row)
            if v is None or lo is None or hi is None:
                return None
            if isinstance(v, str) and isinstance(lo, Decimal | int):
                v = _number(v)
            return lo <= v <= hi

        return between, BOOLEAN

    def _dpipe(self, node: exp.DPipe) -> tuple[Compiled, str]:
        (left, a), (right, b) = self.compile(node.this), self.compile(node.expression)
        for kind, part in ((a, node.this), (b, node.expression)):
            _expect(kind, _SCALARS, part, "|| (concatenation)")
        return (lambda row: None if (x := left(row)) is None or (y := right(row)) is None else f"{x}{y}"), TEXT

    def _boolean_operand(self, node: exp.Expression, what: str) -> Compiled:
        compiled, kind = self.compile(node)
        _expect(kind, {BOOLEAN}, node, what)
        return compiled

    def _not(self, node: exp.Not) -> tuple[Compiled, str]:
        inner = self._boolean_operand(node.this, "NOT")
        return (lambda row: None if (v := inner(row)) is None else not v), BOOLEAN

    def _and(self, node: exp.And) -> tuple[Compiled, str]:
        left, right = self._boolean_operand(node.this, "AND"), self._boolean_operand(node.expression, "AND")
        return (lambda row: bool(left(row)) and bool(right(row))), BOOLEAN

    def _or(self, node: exp.Or) -> tuple[Compiled, str]:
        left, right = self._boolean_operand(node.this, "OR"), self._boolean_operand(node.expression, "OR")
        return (lambda row: bool(left(row)) or bool(right(row))), BOOLEAN

    def _is(self, node: exp.Is) -> tuple[Compiled, str]:
        if not isinstance(node.expression, exp.Null):
            raise _ExprError(node, "only IS NULL and IS NOT NULL are supported")
        inner, _ = self.compile(node.this)
        return (lambda row: inner(row) is None), BOOLEAN

    def _in(self, node: exp.In) -> tuple[Compiled, str]:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise _ExprError(node, "IN takes a list of values: a in ('x', 'y')")
        inner, kind = self.compile(node.this)
        options = []
        for option in node.expressions:
            compiled, option_kind = self.compile(option)
            if not _comparable(kind, option_kind):
                raise _ExprError(option, f"type mismatch: IN compares {kind} with {option_kind} {option.sql()!r}")
            options.append(compiled)
        return (lambda row: None if (v := inner(row)) is None else v in {o(row) for o in options}), BOOLEAN

    # SQL functions ---------------------------------------------------------------------------
    def _coalesce(self, node: exp.Coalesce) -> tuple[Compiled, str]:
        arguments = [node.this, *node.expressions]
        compiled = [self.compile(a) for a in arguments]
        parts = [c for c, _ in compiled]
        kind = _unify([k for _, k in compiled], arguments, "coalesce()")

        def coalesce(row: Row) -> Any:
            blank = None
            for part in parts:
                value = part(row)
                if value is not None and value != "":
                    return value
                if value == "":
                    blank = ""
            # An empty string counts as missing, but when nothing better is found it is the result:
            # coalesce(last_name, '') || ' ' || first_name still works for a member without a last name.
            return blank

        return coalesce, kind

    def _trim(self, node: exp.Trim) -> tuple[Compiled, str]:
        if node.args.get("expression") is not None or node.args.get("position"):
            raise _ExprError(node, "trim() takes one argument and trims whitespace")
        inner, kind = self.compile(node.this)
        _expect(kind, _SCALARS, node.this, "trim()")
        return (lambda row: None if (v := inner(row)) is None else (str(v).strip() or None)), TEXT

    def _nullif(self, node: exp.Nullif) -> tuple[Compiled, str]:
        (left, a), (right, b) = self.compile(node.this), self.compile(node.expression)
        if not _comparable(a, b):
            raise _ExprError(node, f"type mismatch: nullif() compares {a} with {b}")
        return (lambda row: None if (x := left(row)) == right(row) else x), a

    def _cast(self, node: exp.Cast) -> tuple[Compiled, str]:
        inner, source_kind = self.compile(node.this)
        type_ = node.to.this
        kind = CAST_KINDS.get(type_)
        if kind is None:
            valid = ("int", "bigint", "decimal", "double", "text", "varchar", "date", "timestamp", "boolean")
            raise _ExprError(node, f"unsupported cast to {type_.value.lower()}{_hint(type_.value.lower(), valid)}")
        if source_kind not in (ANY, NULL) and source_kind not in _CASTABLE[kind]:
            raise _ExprError(node, f"type mismatch: cannot cast {node.this.sql()} ({source_kind}) to {kind}")
        return (lambda row: _cast(inner(row), type_)), kind

    def _trycast(self, node: exp.TryCast) -> tuple[Compiled, str]:
        return self._cast(node)

    def _case(self, node: exp.Case) -> tuple[Compiled, str]:
        subject, subject_kind = self.compile(node.this) if node.this else (None, ANY)
        branches, kinds, results = [], [], []
        for branch in node.args.get("ifs", []):
            test, test_kind = self.compile(branch.this)
            if subject is None:
                _expect(test_kind, {BOOLEAN}, branch.this, "CASE WHEN")
            elif not _comparable(subject_kind, test_kind):
                raise _ExprError(branch.this, f"type mismatch: CASE compares {subject_kind} with {test_kind}")
            result, kind = self.compile(branch.args["true"])
            branches.append((test, result))
            kinds.append(kind)
            results.append(branch.args["true"])
        if node.args.get("default") is not None:
            default, kind = self.compile(node.args["default"])
            kinds.append(kind)
            results.append(node.args["default"])
        else:
            default = _none
        kind = _unify(kinds, results, "CASE")

        def case(row: Row) -> Any:
            value = subject(row) if subject else None
            for test, result in branches:
                outcome = test(row)
                if (subject is not None and outcome == value) or (subject is None and outcome):
                    return result(row)
            return default(row)

        return case, kind

    def _if(self, node: exp.If) -> tuple[Compiled, str]:
        test = self._boolean_operand(node.this, "if()")
        (yes, a) = self.compile(node.args["true"])
        (no, b) = self.compile(node.args["false"]) if node.args.get("false") is not None else (_none, NULL)
        kind = _unify([a, b], [node.args["true"], node.args.get("false") or node], "if()")
        return (lambda row: yes(row) if test(row) else no(row)), kind

    def _lower(self, node: exp.Lower) -> tuple[Compiled, str]:
        return self._call(node, "lower", [node.this])

    def _upper(self, node: exp.Upper) -> tuple[Compiled, str]:
        return self._call(node, "upper", [node.this])

    def _length(self, node: exp.Length) -> tuple[Compiled, str]:
        return self._call(node, "length", [node.this])

    def _replace(self, node: exp.Replace) -> tuple[Compiled, str]:
        return self._call(node, "replace", [node.this, node.expression, node.args.get("replacement")])

    def _substring(self, node: exp.Substring) -> tuple[Compiled, str]:
        return self._call(node, "substr", [node.this, node.args.get("start"), node.args.get("length")])

    def _anonymous(self, node: exp.Anonymous) -> tuple[Compiled, str]:
        name = str(node.this).lower()
        if name == "store":
            return self._store(node)
        if name not in FUNCTIONS:
            return self._unknown(node, name)
        return self._call(node, name, list(node.expressions))

    def _unknown(self, node: exp.Expression, name: str) -> tuple[Compiled, str]:
        instead = SQL_ALTERNATIVES.get(name)
        hint = f"; {instead}" if instead else _hint(name, _ALL_FUNCTIONS)
        raise _ExprError(node, f"unknown function {name}(){hint}")

    def _call(self, node: exp.Expression, name: str, arguments: list[exp.Expression | None]) -> tuple[Compiled, str]:
        function = FUNCTIONS[name]
        given = [a for a in arguments if a is not None]
        least, most = len(function.args) - function.optional, len(function.args)
        if not least <= len(given) <= most:
            expected = str(most) if least == most else f"{least} to {most}"
            raise _ExprError(node, f"{name}() takes {expected} argument{'s' if most > 1 else ''}, got {len(given)}")
        args, kinds = [], []
        for position, (argument, accepted) in enumerate(zip(given, function.args, strict=False), start=1):
            compiled, kind = self.compile(argument)
            _expect(kind, accepted, argument, f"argument {position} of {name}()")
            args.append(compiled)
            kinds.append(kind)
        call = function.call
        kind = kinds[0] if function.returns == "same" else function.returns
        if len(args) == 1:
            only = args[0]
            return (lambda row: call(only(row))), kind
        return (lambda row: call(*(a(row) for a in args))), kind

    def _store(self, node: exp.Anonymous) -> tuple[Compiled, str]:
        if len(node.expressions) != 1:
            raise _ExprError(node, "store() takes one argument: the system's own store code")
        argument = node.expressions[0]
        inner, kind = self.compile(argument)
        _expect(kind, {TEXT, NUMBER}, argument, "store()")
        if isinstance(argument, exp.Literal):
            try:
                self.store(argument.this)
            except ValueError:
                known = {*self.stores.systems.get(self.source, {}), *self.stores.stores}
                raise _ExprError(
                    argument,
                    f"store code {argument.this!r} of {self.source} is not in mappings/stores.yaml"
                    f"{_hint(argument.this, known)}",
                ) from None
        store = self.store
        return (lambda row: store(inner(row))), TEXT


def _none(row: Row) -> Any:
    return None


# ------------------------------------------------------------------------------ mapping files
@dataclass
class FieldRule:
    target: str
    expression: str
    compiled: Compiled
    where: Where
    tree: exp.Expression | None = None
    kind: str = ANY
    fields: frozenset[str] = frozenset()  # the source fields this expression reads

    def __post_init__(self) -> None:
        self.head, _, self.tail = self.target.partition(".")


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
    required: tuple[str, ...] = ()
    fingerprint: str = ""  # sha256 of the file: which version of the mapping a result came from
    description: str = ""

    def apply(self, record: Row) -> dict[str, Any]:
        """The canonical values for one raw record (not yet validated). Raises MappingError naming
        the field whose expression failed, so the record can be quarantined with that reason."""
        values = {"source": self.source, **_evaluate(self.fields, record)}
        if self.lines_from is not None:
            items = record.get(self.lines_from) or []
            values["lines"] = [_evaluate(self.line_fields, item) for item in items if isinstance(item, dict)]
        return values

    def explain(self, record: Row) -> list[dict[str, Any]]:
        """Each field's expression, the source values it read and its result (or error), for
        ``memberhub mappings preview``. Never raises on a bad record."""
        rows = []
        for rule in self.fields:
            rows.append(_explain(rule, record, rule.target))
        if self.lines_from is not None:
            items = record.get(self.lines_from) or []
            for index, item in enumerate(items if isinstance(items, list) else []):
                for rule in self.line_fields:
                    rows.append(_explain(rule, item if isinstance(item, dict) else {}, f"lines[{index}].{rule.target}"))
        return rows

    def reads(self, path: str) -> list[str]:
        """The canonical targets whose expressions read the source field ``path``."""
        found = [r.target for r in self.fields if path in r.fields]
        if self.lines_from and path.startswith(f"{self.lines_from}[]."):
            inner = path[len(self.lines_from) + 3 :]
            found += [f"lines.{r.target}" for r in self.line_fields if inner in r.fields]
        return found


def _read(record: Any, path: str) -> Any:
    value = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _explain(rule: FieldRule, record: Row, label: str) -> dict[str, Any]:
    sources = {path: _read(record, path) for path in sorted(rule.fields)}
    try:
        return {"target": label, "expression": rule.expression, "source": sources, "value": rule.compiled(record)}
    except (ValueError, TypeError, ArithmeticError) as exc:
        return {"target": label, "expression": rule.expression, "source": sources, "value": None, "error": str(exc)}


def _evaluate(rules: list[FieldRule], record: Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rule = None
    try:
        for rule in rules:
            if rule.tail:
                nested = out.get(rule.head)
                if nested is None:
                    nested = out[rule.head] = {}
                nested[rule.tail] = rule.compiled(record)
            else:
                out[rule.target] = rule.compiled(record)
    except (ValueError, TypeError, ArithmeticError) as exc:
        assert rule is not None
        raise MappingError(f"{rule.target}: {exc} (mapping {rule.where})") from exc
    for key, value in out.items():
        if type(value) is dict and value.get("amount") is None:
            out[key] = None  # a money value with no amount is absent, whatever its currency
    return out


class _File:
    """The text of a mapping file, to turn an offset inside an expression into a line and column."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def where(self, node: yaml.Node) -> Where:
        return Where(self.path, node.start_mark.line + 1, node.start_mark.column + 1)

    def locate(self, node: yaml.ScalarNode, expression: str, offset: int) -> Where:
        """The file position of ``expression[offset]``: the YAML scalar may be quoted, folded over
        lines or a block, so characters are matched one by one against the raw text."""
        raw = self.text[node.start_mark.index : node.end_mark.index]
        j = 0
        if node.style in ('"', "'"):
            j = 1
        elif node.style in ("|", ">"):
            j = raw.find("\n") + 1
        for i in range(min(offset, len(expression))):
            ch = expression[i]
            while j < len(raw) and raw[j] != ch and not (ch.isspace() and raw[j].isspace()):
                j += 1
            j += 1
            if ch.isspace() and i + 1 < len(expression) and not expression[i + 1].isspace():
                while j < len(raw) and raw[j].isspace():
                    j += 1
        while j < len(raw) and raw[j].isspace() and node.style in ("|", ">", None):
            j += 1  # a block's indentation, or space before the first token
        index = node.start_mark.index + min(j, len(raw))
        line = self.text.count("\n", 0, index) + 1
        column = index - (self.text.rfind("\n", 0, index) + 1) + 1
        return Where(self.path, line, column)


def _check_parentheses(text: str) -> None:
    """sqlglot forgives some unclosed parentheses (``trim(a || b``); a mapping should not."""
    from sqlglot.tokens import Tokenizer, TokenType

    opened: list[int] = []
    for token in Tokenizer().tokenize(text):
        if token.token_type == TokenType.L_PAREN:
            opened.append(token.start)
        elif token.token_type == TokenType.R_PAREN:
            if not opened:
                raise _ExprError(_at(token.start), "unmatched ')'")
            opened.pop()
    if opened:
        raise _ExprError(_at(opened[-1]), "'(' is never closed")


def _at(offset: int) -> exp.Expression:
    node = exp.Null()
    node.meta["start"] = offset
    return node


def _parse(text: str, file: _File, node: yaml.ScalarNode, target: str) -> exp.Expression:
    if not text.strip():
        raise MappingFileError([Problem(file.where(node), f"{target}: empty expression; write NULL for no value")])
    try:
        _check_parentheses(text)
        return sqlglot.parse_one(text)
    except _ExprError as exc:
        offset = exc.node.meta.get("start", 0) if exc.node is not None else 0
        raise MappingFileError(
            [Problem(file.locate(node, text, offset), f"{target}: cannot parse {text!r}: {exc.message}")]
        ) from None
    except ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        line, col = int(detail.get("line", 1)), int(detail.get("col", 1))
        lines = text.split("\n")
        offset = sum(len(x) + 1 for x in lines[: line - 1]) + max(0, col - 1)
        description = detail.get("description") or str(exc).split("\n")[0]
        raise MappingFileError(
            [Problem(file.locate(node, text, offset), f"{target}: cannot parse {text!r}: {description}")]
        ) from exc
    except SqlglotError as exc:
        raise MappingFileError([Problem(file.where(node), f"{target}: cannot parse {text!r}: {exc}")]) from exc


def _compile_rules(
    node: yaml.Node,
    file: _File,
    types: dict[str, frozenset[str]],
    compiler: Callable[[], _Compiler],
    problems: list[Problem],
) -> list[FieldRule]:
    if not isinstance(node, yaml.MappingNode):
        problems.append(Problem(file.where(node), "fields must be a mapping of canonical field: expression"))
        return []
    rules, seen = [], set()
    for key_node, value_node in node.value:
        target = str(key_node.value)
        where = file.where(key_node)
        if target not in types:
            problems.append(Problem(where, f"unknown canonical field {target!r}{_hint(target, types)}"))
            continue
        if target in seen:
            problems.append(Problem(where, f"{target}: mapped twice"))
            continue
        seen.add(target)
        if not isinstance(value_node, yaml.ScalarNode):
            problems.append(
                Problem(file.where(value_node), f"{target}: the expression must be text, e.g. coalesce(a, b)")
            )
            continue
        text = str(value_node.value)
        try:
            tree = _parse(text, file, value_node, target)
            worker = compiler()
            compiled, kind = worker.compile(tree)
            _check_target(target, kind, tree, types[target])
        except MappingFileError as exc:
            problems.extend(exc.problems)
            continue
        except _ExprError as exc:
            problems.append(Problem(file.locate(value_node, text, _offset(exc.node, text)), f"{target}: {exc.message}"))
            continue
        rules.append(FieldRule(target, text, compiled, file.where(value_node), tree, kind, frozenset(worker.fields)))
    return rules


def _check_target(target: str, kind: str, tree: exp.Expression, accepted: frozenset[str]) -> None:
    if ANY not in accepted and kind not in (ANY, NULL) and kind not in accepted:
        wanted = " or ".join(sorted(accepted))
        raise _ExprError(tree, f"type mismatch: the expression gives {kind}, {target} takes {wanted}")
    check = LITERAL_VALUES.get(target)
    if check is not None and isinstance(tree, exp.Literal) and tree.is_string:
        problem = check(tree.this)
        if problem:
            raise _ExprError(tree, problem)


TOP_LEVEL = ("source", "stream", "target", "description", "required", "fields", "lines")


def check_mapping(
    path: Path, stores: StoreMap | None = None, *, fields: Fields | None = None, fields_label: str = ""
) -> tuple[Mapping | None, list[Problem]]:
    """Parse, check and compile one mapping file; every problem is returned, not just the first.
    With ``fields`` (discovered source field paths and their JSON types), each source field an
    expression reads must be among them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(Where(path, 1, 1), f"cannot read the file: {exc.strerror}")]
    file = _File(path, text)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Where(path, mark.line + 1, mark.column + 1) if mark else Where(path, 1, 1)
        return None, [Problem(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
    if not isinstance(root, yaml.MappingNode):
        return None, [
            Problem(Where(path, 1, 1), "a mapping file is a YAML mapping with source, stream, target, fields")
        ]
    problems: list[Problem] = []
    nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in root.value:
        name = str(key.value)
        if name not in TOP_LEVEL:
            problems.append(Problem(file.where(key), f"unknown key {name!r}{_hint(name, TOP_LEVEL)}"))
        else:
            nodes[name] = (key, value)
    missing = [k for k in ("source", "stream", "target", "fields") if k not in nodes]
    if missing:
        problems.append(
            Problem(
                Where(path, 1, 1),
                f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}",
            )
        )
        return None, problems
    source, stream, target = (str(nodes[k][1].value) for k in ("source", "stream", "target"))
    if target not in TARGET_TYPES:
        problems.append(
            Problem(file.where(nodes["target"][1]), f"unknown target {target!r}{_hint(target, TARGET_TYPES)}")
        )
        return None, problems
    try:
        stores = stores or load_stores()
    except MappingError as exc:
        return None, [*problems, Problem(Where(MAPPINGS_DIR / "stores.yaml", 1, 1), str(exc))]
    store = stores.resolver(source)
    label = fields_label or f"{source}.{stream}"
    all_fields: set[str] = set()

    def compiler(known: Fields | None, prefix: str = "") -> Callable[[], _Compiler]:
        def make() -> _Compiler:
            worker = _Compiler(store, source, known, label, stores)
            made.append((worker, prefix))
            return worker

        return make

    made: list[tuple[_Compiler, str]] = []
    rules = _compile_rules(nodes["fields"][1], file, TARGET_TYPES[target], compiler(fields), problems)
    lines_from, line_rules = None, []
    if "lines" in nodes:
        lines_from, line_rules = _lines(nodes["lines"], file, target, fields, label, compiler, problems)
    required = _required(nodes.get("required"), file, TARGET_TYPES[target], problems)
    description = str(nodes["description"][1].value) if "description" in nodes else ""
    for worker, prefix in made:
        all_fields |= {f"{prefix}{f}" for f in worker.fields}
    if problems:
        return None, problems
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    return (
        Mapping(
            path, source, stream, target, rules, lines_from, line_rules, all_fields, required, fingerprint, description
        ),
        [],
    )


def _lines(
    nodes: tuple[yaml.Node, yaml.Node],
    file: _File,
    target: str,
    fields: Fields | None,
    label: str,
    compiler: Callable[..., Callable[[], _Compiler]],
    problems: list[Problem],
) -> tuple[str | None, list[FieldRule]]:
    key, node = nodes
    if target != "order":
        problems.append(Problem(file.where(key), "lines: only order mappings have lines"))
        return None, []
    if not isinstance(node, yaml.MappingNode):
        problems.append(Problem(file.where(node), "lines must be a mapping with from and fields"))
        return None, []
    inner = {str(k.value): (k, v) for k, v in node.value}
    for name, (k, _) in inner.items():
        if name not in ("from", "fields"):
            problems.append(
                Problem(file.where(k), f"unknown key {name!r} under lines{_hint(name, ('from', 'fields'))}")
            )
    if "from" not in inner or "fields" not in inner:
        problems.append(Problem(file.where(key), "lines needs both from (the list field) and fields"))
        return None, []
    lines_from = str(inner["from"][1].value)
    known = None
    if fields is not None:
        if lines_from not in fields:
            problems.append(
                Problem(
                    file.where(inner["from"][1]),
                    f"unknown source field {lines_from!r} (not seen in {label}){_hint(lines_from, fields)}",
                )
            )
        prefix = f"{lines_from}[]."
        known = {p[len(prefix) :]: t for p, t in fields.items() if p.startswith(prefix)}
    rules = _compile_rules(inner["fields"][1], file, LINE_TYPES, compiler(known, f"{lines_from}[]."), problems)
    return lines_from, rules


def _required(
    nodes: tuple[yaml.Node, yaml.Node] | None, file: _File, types: dict[str, frozenset[str]], problems: list[Problem]
) -> tuple[str, ...]:
    if nodes is None:
        return ()
    _, node = nodes
    items = node.value if isinstance(node, yaml.SequenceNode) else None
    if items is None or not all(isinstance(i, yaml.ScalarNode) for i in items):
        problems.append(Problem(file.where(node), "required must be a list of canonical fields, e.g. [phone]"))
        return ()
    names = []
    for item in items:
        name = str(item.value)
        if name not in types:
            problems.append(
                Problem(file.where(item), f"required: unknown canonical field {name!r}{_hint(name, types)}")
            )
        names.append(name)
    return tuple(names)


def load_mapping(path: Path, stores: StoreMap | None = None, *, fields: Fields | None = None) -> Mapping:
    """Parse, check and compile one mapping file; errors name the file, line and column."""
    mapping, problems = check_mapping(path, stores, fields=fields)
    if problems or mapping is None:
        raise MappingFileError(problems)
    return mapping


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
                raise MappingError(
                    f"{path}: {system} code {code!r} maps to unknown store {chain!r}{_hint(chain, stores)}"
                )
    return StoreMap(stores, systems)


def mapping_files(root: Path = MAPPINGS_DIR) -> list[Path]:
    return sorted(p for p in root.glob("*/*.yaml"))


def load_mappings(root: Path = MAPPINGS_DIR) -> dict[tuple[str, str], Mapping]:
    """Every mapping under ``root``, keyed by (source kind, stream). Two files for one stream are
    an error, never a silent override."""
    mappings: dict[tuple[str, str], Mapping] = {}
    for path in mapping_files(root):
        mapping = load_mapping(path)
        key = (mapping.source, mapping.stream)
        if key in mappings:
            raise MappingError(f"{path}: {mapping.source}.{mapping.stream} is already mapped by {mappings[key].path}")
        mappings[key] = mapping
    return mappings


__all__ = [
    "FUNCTIONS",
    "LINE_TYPES",
    "TARGET_TYPES",
    "FieldRule",
    "Function",
    "Mapping",
    "MappingFileError",
    "Problem",
    "StoreMap",
    "Where",
    "check_mapping",
    "load_mapping",
    "load_mappings",
    "load_stores",
    "mapping_files",
]
