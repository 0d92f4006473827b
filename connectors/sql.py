"""Any database SQLAlchemy can reach — a legacy POS or ERP on MySQL, MariaDB, SQL Server, PostgreSQL —
read table by table, or query by query, with keyset paging. Read only: nothing is written back.

Streams are declared in the connector's configuration (``schemas.config.SqlStream``)::

    streams:
      members: {table: pos_member, id: member_id, cursor: updated_at}
      orders: {query: "select s.*, t.code as store from pos_sale s join pos_store t on ...",
               kind: orders, id: sale_no, cursor: changed_at}

Each page is one short statement, ``... WHERE cursor > :c OR (cursor = :c AND id > :i) ORDER BY
cursor, id LIMIT n``: an index walk however large the table, no server-side cursor held open while
the hub stores a page, and rows that share a cursor value (a batch job stamps thousands of rows
with one time) are neither lost nor read twice at page boundaries. The row-value form
``(cursor, id) > (:c, :i)`` is written out because SQL Server and SQLite before 3.15 lack it.

A row whose cursor is NULL is read, by id, on a full read only: an incremental read cannot know
whether it changed. A stream without a cursor is read whole every time; the hub's content hashes
make the unchanged rows cost nothing.

Values become JSON: Decimal → text (exact), a time → ISO 8601 with its offset. Legacy databases
store local times without an offset (DATETIME); they are read in the connector's ``timezone``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from schemas import Channel, ConnectorConfig
from schemas.config import SqlStream
from schemas.errors import ConnectorError, FatalError, RetriableError, closest

DEFAULT_PAGE = 1000
_FATAL_HINTS = ("access denied", "authentication failed", "permission denied", "password", "unknown database")
"""Words in an OperationalError that no retry fixes (the drivers raise the same class for a dropped
connection and for a wrong password)."""
_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")
"""What ``sqlalchemy.text`` would take for a bind parameter; a configured query has none."""


class SqlConnector(Connector):
    kind: ClassVar[str] = "sql"
    channel: ClassVar[Channel] = Channel.erp
    streams: ClassVar[tuple[Stream, ...]] = ()  # per instance, from the configuration

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        super().__init__(name, config)
        self.streams = tuple(Stream(n, s.kind, s.id) for n, s in config.streams.items())  # type: ignore[misc]
        self.zone = ZoneInfo(config.timezone)
        self.where = config.display_url() or "(no url)"
        self._engine: Engine | None = None
        self._sources: dict[str, sa.FromClause] = {}

    # ------------------------------------------------------------------------- plumbing
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if self.config.url is None:
                raise FatalError(f"{self.name}: no `url` configured")
            try:
                self._engine = sa.create_engine(self.config.url.get_secret_value(), pool_pre_ping=True)
            except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
                raise FatalError(f"{self.name}: cannot open {self.where}: {exc}; is its driver installed?") from None
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _fail(self, exc: sa_exc.SQLAlchemyError, what: str) -> ConnectorError:
        """The driver's error, translated: a dropped connection may be retried, a refusal may not."""
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        message = f"{self.name}: {what} on {self.where} failed: {reason}"
        dropped = isinstance(exc, sa_exc.OperationalError) or getattr(exc, "connection_invalidated", False)
        if dropped and not any(hint in reason.lower() for hint in _FATAL_HINTS):
            return RetriableError(message)
        return FatalError(message)

    def _rows(self, statement: sa.Executable, what: str) -> Sequence[sa.RowMapping]:
        try:
            with self.engine.connect() as connection:
                return connection.execute(statement).mappings().all()
        except sa_exc.SQLAlchemyError as exc:
            raise self._fail(exc, what) from exc

    def _source(self, stream: str) -> sa.FromClause:
        """The stream's rows as a selectable whose columns are known: a table, or the query as a subquery."""
        if stream not in self._sources:
            spec = self.config.streams[stream]
            probe = _selectable(spec, ())
            names = tuple(self._columns(probe, stream))
            for role, column in (("id", spec.id), ("cursor", spec.cursor)):
                if column is not None and column not in names:
                    close = closest(column, names, cutoff=0.6)
                    hint = f"did you mean {close!r}? " if close else ""
                    raise FatalError(
                        f"{self.name}: stream {stream} names {role} column {column!r}, which {_what(spec)} lacks; "
                        f"{hint}(columns: {', '.join(names)})"
                    )
            self._sources[stream] = _selectable(spec, names)
        return self._sources[stream]

    def _columns(self, probe: sa.FromClause, stream: str) -> list[str]:
        nothing = sa.select(sa.literal_column("*")).select_from(probe).where(sa.false())
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(nothing).keys())
        except sa_exc.SQLAlchemyError as exc:
            raise self._fail(exc, f"reading the columns of stream {stream}") from exc

    # ------------------------------------------------------------------------- read
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        spec = self.config.streams[stream]
        source = self._source(stream)
        size = spec.page_size or self.config.page_size or DEFAULT_PAGE
        key = source.c[spec.id]
        rows = sa.select(source)
        if spec.cursor is None:
            yield from self._walk(stream, rows, (key,), size, cursor=None)
            return
        mark = source.c[spec.cursor]
        if since is None:
            yield from self._walk(stream, rows.where(mark.is_(None)), (key,), size, cursor=None)
            rows = rows.where(mark.is_not(None))
        else:
            rows = rows.where(mark >= self._bound(stream, mark, since))
        yield from self._walk(stream, rows, (mark, key), size, cursor=spec.cursor)

    def _walk(
        self,
        stream: str,
        query: sa.Select[Any],
        order: tuple[sa.ColumnElement[Any], ...],
        size: int,
        cursor: str | None,
    ) -> Iterator[Page]:
        """Keyset pages of ``query`` in ``order``; each page starts after the last row of the one before."""
        last: tuple[Any, ...] | None = None
        while True:
            page = query if last is None else query.where(_after(order, last))
            rows = self._rows(page.order_by(*order).limit(size), f"reading stream {stream}")
            if not rows:
                return
            records = [{column: self._json(value) for column, value in row.items()} for row in rows]
            yield Page(records, cursor=self._moment(rows[-1][cursor], stream) if cursor else None)
            if len(rows) < size:
                return
            last = tuple(rows[-1][column.name] for column in order)

    def _bound(self, stream: str, mark: sa.ColumnElement[Any], since: str) -> Any:
        """``since`` as the cursor column holds its times: aware, local without an offset, a date or text."""
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=self.zone)
        sample = self._rows(sa.select(mark.label("v")).where(mark.is_not(None)).limit(1), f"sampling stream {stream}")
        held = sample[0]["v"] if sample else None
        local = moment.astimezone(self.zone).replace(tzinfo=None)
        if isinstance(held, datetime):
            return moment if held.tzinfo else local
        if isinstance(held, date):
            return local.date()
        if isinstance(held, str):
            return local.isoformat(sep=" ")
        return local

    # ------------------------------------------------------------------------- values
    def _moment(self, value: Any, stream: str) -> str:
        """A cursor value as the ISO 8601 time the hub stores."""
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = None
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime.combine(value, time())
        if not isinstance(value, datetime):
            column = self.config.streams[stream].cursor
            raise FatalError(
                f"{self.name}: stream {stream}'s cursor column {column} holds {type(value).__name__} values, not "
                "times; name a DATETIME, TIMESTAMP or DATE column, or drop `cursor` to read the stream whole"
            )
        return (value if value.tzinfo else value.replace(tzinfo=self.zone)).isoformat()

    def _json(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=self.zone)).isoformat()
        if isinstance(value, date | time):
            return value.isoformat()
        if isinstance(value, timedelta):  # MySQL TIME
            return str(value)
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.hex()
        if isinstance(value, dict):
            return {str(k): self._json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._json(v) for v in value]
        if isinstance(value, uuid.UUID):
            return str(value)
        return str(value)

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        try:
            with self.engine.connect() as connection:
                version = ".".join(map(str, connection.dialect.server_version_info or ())) or "version unknown"
                dialect = "mariadb" if getattr(connection.dialect, "is_mariadb", False) else connection.dialect.name
        except sa_exc.SQLAlchemyError as exc:
            return [CheckStep("connect", False, f"{self._fail(exc, 'connecting')}; check the url, network and login")]
        except ConnectorError as exc:
            return [CheckStep("connect", False, str(exc))]
        steps = [CheckStep("connect", True, f"connected to {self.where} ({dialect} {version})")]
        for name, spec in self.config.streams.items():
            exists = self._exists(name, spec)
            steps.append(exists)
            if exists.ok:
                steps.append(self._sample(name, spec))
        return steps

    def _exists(self, name: str, spec: SqlStream) -> CheckStep:
        """The table or view is there (a catalogue look-up, which needs no SELECT right), or the query
        compiles, and it has the id and cursor columns."""
        step = f"{name}: exists"
        try:
            if spec.table is not None:
                schema, _, table = spec.table.rpartition(".")
                with self.engine.connect() as connection:
                    if not sa.inspect(connection).has_table(table, schema=schema or None):
                        return CheckStep(step, False, f"no table or view {spec.table} in {self.where}")
            source = self._source(name)
        except sa_exc.SQLAlchemyError as exc:
            return CheckStep(step, False, str(self._fail(exc, f"looking up {_what(spec)}")))
        except ConnectorError as exc:
            return CheckStep(step, False, str(exc))
        keys = f"id {spec.id}" + (f", cursor {spec.cursor}" if spec.cursor else ", no cursor: read whole each sync")
        return CheckStep(step, True, f"{_what(spec)} has {len(source.c)} columns; {keys}")

    def _sample(self, name: str, spec: SqlStream) -> CheckStep:
        source = self._source(name)
        newest = source.c[spec.cursor].desc() if spec.cursor else source.c[spec.id].desc()
        try:
            rows = self._rows(sa.select(source).order_by(newest).limit(1), f"reading stream {name}")
        except ConnectorError as exc:
            return CheckStep(f"{name}: select", False, f"{exc}; the login needs SELECT on {_what(spec)}")
        if not rows:
            return CheckStep(f"{name}: select", True, f"SELECT allowed; {_what(spec)} is empty")
        row = rows[0]
        changed = f", changed {self._json(row[spec.cursor])}" if spec.cursor else ""
        return CheckStep(f"{name}: select", True, f"SELECT allowed; newest row id {row[spec.id]}{changed}")

    # ------------------------------------------------------------------------- write-back
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        raise FatalError(
            f"{self.name}: kind sql is read only — the hub does not write points or tiers into {self.where}; "
            "leave `writeback` unset for this connector"
        )


def _what(spec: SqlStream) -> str:
    return f"table {spec.table}" if spec.table is not None else "the query"


def _selectable(spec: SqlStream, columns: Sequence[str]) -> sa.FromClause:
    """The table (``schema.table``) or the query wrapped as ``(query) AS src``, with ``columns`` known."""
    declared = [sa.column(name) for name in columns]
    if spec.table is not None:
        schema, _, table = spec.table.rpartition(".")
        return sa.table(table, *declared, schema=schema or None)
    query = _BIND.sub(r"\\:", spec.query or "")
    return sa.text(query).columns(*declared).subquery("src")


def _after(order: Sequence[sa.ColumnElement[Any]], last: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows after ``last`` in ``order``: ``a > x OR (a = x AND (b > y OR ...))``, the portable row-value ``>``."""
    head, value = order[0], last[0]
    if len(order) == 1:
        return head > value
    return sa.or_(head > value, sa.and_(head == value, _after(order[1:], last[1:])))
