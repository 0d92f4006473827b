"""Shared fixtures. The store, ledger and resolution tests run on SQLite and on PostgreSQL alike:
``database_url`` is parametrised, and each PostgreSQL test gets a schema of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hub.db import dispose_engines, upgrade

POSTGRES_URL = os.environ.get("MEMBERHUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("MEMBERHUB_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test does touches the developer's own .memberhub/ or DAGSTER_HOME."""
    monkeypatch.setenv("MEMBERHUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEMBERHUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    """Each test's pooled connections are closed after it, so a long run never exhausts the server."""
    yield
    dispose_engines()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # a missing service is a failure, never a skip
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); `make test` starts it")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    dispose_engines()
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated hub database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url
