"""One database connection per web worker for the tills' lookup.

The lookup runs on the worker's event loop (hub.web.api.lookup), one at a time, so one connection
serves it: no pool checkout and no liveness ping before each query, just the query — half the
round trips. It is read only and in autocommit, so it never holds a transaction open. A connection
the server dropped is replaced once, on the spot.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from hub.db import engine_for

T = TypeVar("T")


class LookupLine:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._connection: Connection | None = None

    def run(self, read: Callable[[Session], T]) -> T:
        for attempt in (1, 2):
            connection = self._connection or self._open()
            try:
                with Session(bind=connection) as session:
                    return read(session)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
                self.close()
        raise AssertionError("unreachable")

    def _open(self) -> Connection:
        self._connection = engine_for(self.database_url).connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(DBAPIError):  # already gone
                connection.close()
