"""One database connection per web worker for the tills' lookup.

The lookup runs on the worker's event loop (hub.web.api), one at a time, so one connection serves
it: no pool checkout and no liveness ping before each query, just the query. Its statements are
compiled by SQLAlchemy once and then executed on the driver's own cursor, which PostgreSQL's driver
prepares after a few runs: per request that leaves the driver's work and the server's, a fraction of
what a Session and SQLAlchemy's execution context cost. The connection is read only and in
autocommit, so it never holds a transaction open. A connection the server dropped is replaced once,
on the spot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from hub.db import engine_for


@dataclass(frozen=True)
class _Statement:
    sql: str
    constants: dict[str, Any]
    """the values SQLAlchemy bound for literals in the statement (a LIMIT 1, a status)"""
    order: tuple[str, ...] | None
    """parameter names in order, for drivers that take them by position (SQLite)"""

    def bind(self, params: dict[str, Any]) -> Any:
        merged = {**self.constants, **params}
        return merged if self.order is None else tuple(merged[name] for name in self.order)


class LookupLine:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._connection: Connection | None = None
        self._cursor: Any = None
        self._statements: dict[int, tuple[Select, _Statement]] = {}

    def fetch(self, query: Select, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of ``query`` (built once and kept, e.g. by functools.cache) as plain tuples:
        no type processing, so sealed columns come sealed."""
        for attempt in (1, 2):
            connection = self._connection or self._open()
            statement = self._compiled(query, connection)
            try:
                self._cursor.execute(statement.sql, statement.bind(params))
                return self._cursor.fetchall()
            except connection.dialect.loaded_dbapi.Error as exc:
                gone = connection.dialect.is_disconnect(exc, connection.connection.dbapi_connection, self._cursor)
                self.close()
                if not gone or attempt == 2:
                    raise DBAPIError.instance(statement.sql, None, exc, connection.dialect.loaded_dbapi.Error) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the same connection, for the rare read that is not worth a compiled statement."""
        connection = self._connection or self._open()
        with Session(bind=connection) as session:
            yield session

    def _compiled(self, query: Select, connection: Connection) -> _Statement:
        kept = self._statements.get(id(query))
        if kept is None or kept[0] is not query:
            compiled = query.compile(dialect=connection.dialect)
            order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            kept = self._statements[id(query)] = (query, _Statement(compiled.string, dict(compiled.params), order))
        return kept[1]

    def _open(self) -> Connection:
        connection = engine_for(self.database_url).connect().execution_options(isolation_level="AUTOCOMMIT")
        self._connection, self._cursor = connection, connection.connection.dbapi_connection.cursor()
        return connection

    def close(self) -> None:
        connection, self._connection, self._cursor = self._connection, None, None
        if connection is not None:
            with suppress(DBAPIError):  # already gone
                connection.invalidate()
                connection.close()
