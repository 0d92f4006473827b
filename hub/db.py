"""Connecting to the hub database and bringing its schema up to date with Alembic."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, bindparam, create_engine, event, insert, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from hub.config import default_database_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


_ENGINES: dict[str, Engine] = {}
FEW_ROWS = 8
"""Up to this many rows, ``insert_many`` sends an INSERT rather than a COPY."""


def engine_for(url: str | None = None) -> Engine:
    """One pooled engine per URL, kept for the life of the process."""
    url = url or default_database_url()
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = _create_engine(url)
    return engine


def dispose_engines(*, close: bool = True) -> None:
    """Close every pooled connection this process opened (the tests do it after each test).
    ``close=False`` in a forked child: drop the parent's pools without closing their connections,
    which the parent is still using (SQLAlchemy's advice for os.fork)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose(close=close)


def _create_engine(url: str) -> Engine:
    """SQLite gets its directory, WAL and enforced foreign keys; servers get pre-ping."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "heads") -> None:
    """Create or migrate the schema (``memberhub db upgrade``)."""
    url = url or default_database_url()
    engine = engine_for(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    factory = sessionmaker(engine_for(url), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def insert_many(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows that all have the same keys, converted by the columns' own types (sealing, JSON,
    UTC times) exactly as a Core insert would, but handed to the driver in one call: COPY on
    PostgreSQL, executemany on SQLite. (Core's executemany costs more per row than staging the
    record did; the ORM's bulk path would also fetch generated keys row by row.) A few rows go as
    an INSERT on PostgreSQL too: a COPY waits for the server twice."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    if dialect.name not in ("postgresql", "sqlite") or any(list(row) != names for row in rows):
        session.execute(insert(table), rows)
        return
    columns = [table.c[name] for name in names]
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    converters = [
        (i, _remembered(p) if isinstance(getattr(c.type, "impl", c.type), sa.Date | sa.DateTime) else p)
        for i, (c, p) in enumerate(zip(columns, processors, strict=True))
        if p is not None
    ]
    tuples = []
    for row in rows:
        values = list(row.values())
        for i, convert in converters:
            values[i] = convert(values[i])
        tuples.append(values)
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    target = dialect.identifier_preparer.format_table(table)
    cursor = connection.connection.driver_connection.cursor()
    try:
        if dialect.name == "postgresql" and len(tuples) > FEW_ROWS:
            with cursor.copy(f"COPY {target} ({quoted}) FROM STDIN") as copy:
                for values in tuples:
                    copy.write_row(values)
        else:
            marks = ", ".join(("%s" if dialect.name == "postgresql" else "?") for _name in names)
            cursor.executemany(f"INSERT INTO {target} ({quoted}) VALUES ({marks})", tuples)
    finally:
        cursor.close()


def update_many(session: Session, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> None:
    """UPDATE the rows whose ``key`` column has each row's ``key`` value, with the row's other values
    (all rows with the same keys), converted by the columns' own types. On PostgreSQL one
    ``UPDATE … FROM unnest(…)`` with an array per column (an executemany sent every row as a
    statement of its own); executemany elsewhere, the driver's own when no value needs converting."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    if dialect.name != "postgresql":
        values = {name: bindparam(f"v_{name}") for name in names if name != key}
        statement = update(table).where(table.c[key] == bindparam(f"v_{key}")).values(values)
        compiled = statement.compile(dialect=dialect)
        plain = all(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) is None for name in names)
        if plain and compiled.positional:  # the driver's executemany: a third of Core's cost per row
            order = [param[2:] for param in compiled.positiontup or ()]
            connection.exec_driver_sql(str(compiled), [tuple(row[name] for name in order) for row in rows])
        else:
            connection.execute(statement, [{f"v_{name}": value for name, value in row.items()} for row in rows])
        return
    arrays, casts = [], []
    for name in names:
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, sa.JSON):  # as text, cast by the server
            values = [None if value is None else json.dumps(value) for value in values]
        else:
            convert = column.type.dialect_impl(dialect).bind_processor(dialect)
            values = values if convert is None else [convert(value) for value in values]
        arrays.append(values)
        casts.append(f"%b::{column.type.compile(dialect=dialect)}[]")  # binary: no text escaping
    quote = dialect.identifier_preparer.quote
    sets = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in names if name != key)
    sql = (
        f"UPDATE {dialect.identifier_preparer.format_table(table)} AS t SET {sets} "
        f"FROM unnest({', '.join(casts)}) AS v({', '.join(quote(name) for name in names)}) "
        f"WHERE t.{quote(key)} = v.{quote(key)}"
    )
    connection.exec_driver_sql(sql, tuple(arrays))


def _remembered(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A date or time column's conversion, done once per distinct value of a batch (the time of
    staging is the same for every row, and SQLite's datetime formatting costs microseconds). Only
    for values that are pure data: sealed columns get a fresh nonce for each value."""
    seen: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            done = seen[value] = convert(value)
            return done

    return remembered
