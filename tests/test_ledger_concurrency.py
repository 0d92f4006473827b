"""Concurrent redemptions against one balance, from real threads on connections of their own:
the member's account row is locked (SELECT ... FOR UPDATE on PostgreSQL, the write lock on SQLite)
before lots are read, so the balance never goes below zero."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from hub import ledger
from hub.db import engine_for, upgrade
from hub.tables import LedgerEntryRow
from schemas import EntryKind, LedgerEntry

T0 = datetime(2025, 3, 1, tzinfo=UTC)
THREADS = 50


def race(url: str, member: str, amount: int, threads: int = THREADS) -> list[str]:
    """``threads`` redemptions of ``amount`` at once, each in its own transaction and connection."""
    sqlite = url.startswith("sqlite")  # WAL is already on in the file; wait for the write lock like the hub does
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60} if sqlite else {})
    sessions = sessionmaker(engine, expire_on_commit=False)
    start = threading.Barrier(threads, timeout=120)
    outcomes: list[str] = []

    def redeem(i: int) -> None:
        with sessions() as session:
            try:
                connect(session)  # before the start line, so the race is on the lock
                start.wait()
                ledger.redeem(session, member, amount, source="pos", document=f"race:{i}", at=T0)
                session.commit()
                outcomes.append("ok")
            except ledger.InsufficientPoints:
                session.rollback()
                outcomes.append("refused")
            except Exception as exc:  # anything else is a failure the assertion shows
                session.rollback()
                outcomes.append(repr(exc))

    workers = [threading.Thread(target=redeem, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    engine.dispose()
    return outcomes


def connect(session: Any) -> None:
    """Connect, waiting for a free server slot: the database is shared with other test runs."""
    for attempt in range(60):
        try:
            session.connection()
            return
        except OperationalError as exc:
            if "too many clients" not in str(exc) or attempt == 59:
                raise
            session.rollback()
            time.sleep(1)


def seed(url: str, member: str, points: int) -> None:
    with sessionmaker(engine_for(url))() as session, session.begin():
        ledger.post(
            session,
            LedgerEntry(
                member_id=member, kind=EntryKind.earn, points=points, source="pos", document="order:1", occurred_at=T0
            ),
            now=T0,
        )


def check(url: str, member: str) -> tuple[int, int]:
    with sessionmaker(engine_for(url))() as session:
        assert ledger.reconcile(session) == []
        redemptions = session.scalar(
            select(func.count()).where(LedgerEntryRow.member_id == member, LedgerEntryRow.kind == "redeem")
        )
        return ledger.balance(session, member), redemptions


@pytest.fixture
def migrated_postgres(postgres_url):
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(params=["postgres", "sqlite"])
def url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("migrated_postgres")
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    return url


@pytest.mark.postgres
def test_fifty_concurrent_redemptions_of_the_whole_balance_on_postgresql_one_succeeds(migrated_postgres):
    seed(migrated_postgres, "MH1", 1000)
    outcomes = race(migrated_postgres, "MH1", 1000)
    assert sorted(outcomes) == ["ok"] + ["refused"] * (THREADS - 1)
    assert check(migrated_postgres, "MH1") == (0, 1)


def test_concurrent_partial_redemptions_never_overdraw(url):
    seed(url, "MH1", 1000)
    outcomes = race(url, "MH1", 30)
    assert sorted(outcomes) == ["ok"] * 33 + ["refused"] * (THREADS - 33)
    assert check(url, "MH1") == (10, 33)


def test_sqlite_serialises_whole_balance_redemptions_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    seed(url, "MH1", 1000)
    outcomes = race(url, "MH1", 1000, threads=20)
    assert sorted(outcomes) == ["ok"] + ["refused"] * 19
    assert check(url, "MH1") == (0, 1)
