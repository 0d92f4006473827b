"""SQL written once (DuckDB's dialect, which reads closest to the standard) and rendered by sqlglot for
the hub database's own dialect. Two small dialect classes add what sqlglot leaves out: whole epoch
seconds of a timestamp (``EPOCH(x)``) on SQLite and PostgreSQL alike, and ``//`` as whole-number
division (its operands here are always whole numbers)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlglot
from sqlalchemy.orm import Session
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite

READ = "duckdb"


class HubSQLite(SQLite):
    class Generator(SQLite.Generator):
        TRANSFORMS = {  # noqa: RUF012 - sqlglot reads generator settings as class attributes
            **SQLite.Generator.TRANSFORMS,
            exp.TimeToUnix: lambda self, e: f"CAST(STRFTIME('%s', {self.sql(e, 'this')}) AS INTEGER)",
            exp.Collate: lambda self, e: f"{self.sql(e, 'this')} COLLATE BINARY",  # SQLite's byte order is C's
        }


class HubPostgres(Postgres):
    class Generator(Postgres.Generator):
        TRANSFORMS = {  # noqa: RUF012
            **Postgres.Generator.TRANSFORMS,
            # date_part is a double: exact to the microsecond for any date in use, and far cheaper than
            # EXTRACT's numeric on a million rows
            exp.TimeToUnix: lambda self, e: f"CAST(FLOOR(DATE_PART('epoch', {self.sql(e, 'this')})) AS BIGINT)",
            # ``//`` divides whole numbers here (day counts from epoch seconds): BIGINT division, which
            # truncates as DIV does, without DIV's detour through numeric
            exp.IntDiv: lambda self, e: f"({self.sql(e, 'this')} / {self.sql(e, 'expression')})",
        }


DIALECTS: dict[str, type[sqlglot.Dialect]] = {"sqlite": HubSQLite, "postgresql": HubPostgres}


def dialect_of(session: Session) -> type[sqlglot.Dialect]:
    name = session.get_bind().dialect.name
    if name not in DIALECTS:
        raise NotImplementedError(f"segments and analytics run on SQLite and PostgreSQL, not {name}")
    return DIALECTS[name]


def render(sql: str | exp.Expression, session: Session) -> str:
    """``sql`` (DuckDB dialect, or a parsed tree) as the session's database writes it."""
    tree = sqlglot.parse_one(sql, read=READ) if isinstance(sql, str) else sql
    return tree.sql(dialect=dialect_of(session))


def timestamp(moment: datetime, session: Session) -> str:
    """A UTC instant as a SQL literal (DuckDB dialect) that the session's database compares with its
    stored timestamps: SQLite keeps naive UTC text, PostgreSQL ``timestamptz``."""
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if session.get_bind().dialect.name == "sqlite":
        return f"'{stamp}'"
    return f"CAST('{stamp}+00:00' AS TIMESTAMPTZ)"


def text(value: str | None) -> str:
    return exp.Literal.string(value).sql() if value is not None else "NULL"
