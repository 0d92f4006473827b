"""The incremental path through the database, on SQLite and PostgreSQL: triggers queue what changed,
a run reads only that and the clusters it touches, a run with nothing new reads and writes nothing,
and an index that may be stale (a rolled-back run, another process's run) is rebuilt."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.orm import sessionmaker
from test_resolution_store import golden_of, run, stage

from hub import resolve
from hub.db import engine_for
from hub.privacy import requests as privacy
from hub.resolution import steward
from hub.tables import (
    GoldenFieldPin,
    GoldenMember,
    MatchConstraint,
    MemberLink,
    ResolutionQueueRow,
    ResolutionState,
    ReviewQueueItem,
    StagedMember,
)

FAMILY = "赵钱孙李周吴郑冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红波辉"


@pytest.fixture
def sessions(database_url):
    resolve.forget_index()
    yield sessionmaker(engine_for(database_url), expire_on_commit=False)
    resolve.forget_index()


def person(i: int, source_id: str, **extra) -> dict:
    """Person ``i`` of 30 clearly different people."""
    family, given = FAMILY[i], GIVEN[i] + GIVEN[(i + 7) % 30]
    return {
        "source_id": source_id,
        "family_name": family,
        "given_name": given,
        "full_name": family + given,
        "phone": f"+86138{i:04d}{i:04d}",
        **extra,
    }


def queued(sessions) -> set[int]:
    with sessions() as session:
        return set(session.scalars(select(ResolutionQueueRow.staged_member_id)))


def generation(sessions) -> int:
    with sessions() as session:
        return session.get(ResolutionState, 1).generation


class Statements:
    """The SQL an engine runs while the block is open."""

    def __init__(self, engine) -> None:
        self.engine, self.sql = engine, []

    def _record(self, _conn, _cursor, statement, *_args) -> None:
        self.sql.append(" ".join(statement.split()).lower())

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def test_every_change_is_queued_in_its_own_transaction_and_a_run_takes_the_queue(sessions):
    a, b = stage(sessions, [person(1, "1"), person(2, "2")])
    assert queued(sessions) == {a, b}
    run(sessions)
    assert queued(sessions) == set()
    with sessions() as session, session.begin():
        session.get(StagedMember, a).city = "上海"
    assert queued(sessions) == {a}
    run(sessions)
    member_id = golden_of(sessions, b)
    with sessions() as session, session.begin():
        session.add(GoldenFieldPin(member_id=member_id, field="city", value="北京", pinned_by="steward:li"))
    assert queued(sessions) == {b}  # a pin queues the records of its golden member
    run(sessions)
    with sessions() as session:
        golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == member_id))
        assert golden.city == "北京" and golden.lineage["city"]["rule"] == "steward_pin"
    with sessions() as session, session.begin():
        steward.reject_pair(session, a, b, actor="steward:li")  # queues both and resolves at once
    assert queued(sessions) == set()
    with sessions() as session, session.begin():  # what an erasure does (hub.privacy)
        for model in (ReviewQueueItem, MatchConstraint):
            session.execute(delete(model).where(model.staged_member_a == a))
        session.execute(delete(MemberLink).where(MemberLink.staged_member_id == a))
        session.execute(delete(StagedMember).where(StagedMember.id == a))
    assert a in queued(sessions)  # a deleted member stays queued: the run forgets it
    run(sessions)
    (index,) = resolve._INDEXES.values()
    assert index.resolver.clusters() == {b: b} and queued(sessions) == set()


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
def test_a_run_with_nothing_new_reads_nothing_and_writes_nothing(sessions, cold):
    stage(sessions, [person(i, str(i)) for i in range(6)] + [person(3, "3b", email="p3@qq.com")])
    first = run(sessions)
    before = generation(sessions)
    if cold:
        resolve.forget_index()  # a process that starts with nothing in memory
    with Statements(sessions.kw["bind"]) as seen:
        again = run(sessions)
    assert (again.golden, again.created, again.linked, again.relinked) == (first.golden, 0, 0, 0)
    writes = [s for s in seen.sql if s.startswith(("insert", "update", "delete"))]
    assert writes == [next(s for s in writes if s.startswith("delete from resolution_queue"))]
    assert not [s for s in seen.sql if "staged_members" in s or "member_links" in s]
    assert generation(sessions) == before


def test_an_incremental_run_reads_and_decides_only_what_the_new_record_touches(sessions, monkeypatch):
    ids = stage(sessions, [person(i, str(i)) for i in range(30)])
    run(sessions)
    with sessions() as session:
        stamps = {g.member_id: g.updated_at for g in session.scalars(select(GoldenMember))}
    target = golden_of(sessions, ids[5])
    read, scoped = [], []
    match_records, load_scope = resolve._match_records, resolve._load_scope

    def spy_records(session, ids=None):
        read.append(None if ids is None else set(ids))
        return match_records(session, ids)

    def spy_scope(session, resolver, scope):
        found = load_scope(session, resolver, scope)
        scoped.append((scope, set(found[0]), set(found[1])))
        return found

    monkeypatch.setattr(resolve, "_match_records", spy_records)
    monkeypatch.setattr(resolve, "_load_scope", spy_scope)
    (new,) = stage(sessions, [person(5, "web-5", source="web", email="p5@qq.com")])
    counts = run(sessions)
    assert counts.linked == 1 and counts.created == 0 and golden_of(sessions, new) == target
    assert counts.golden == 30
    assert read == [{new}]  # only the new record's values are read
    ((scope, links, golden),) = scoped
    assert scope == {new, ids[5]} and links == {ids[5]} and golden == {target}
    with sessions() as session:
        after = {g.member_id: g.updated_at for g in session.scalars(select(GoldenMember))}
    assert {m for m in stamps if after[m] != stamps[m]} == {target}


def test_a_rolled_back_run_leaves_no_index_behind(sessions):
    (a,) = stage(sessions, [person(1, "1")])
    run(sessions)
    (b,) = stage(sessions, [person(1, "1b", email="p1@qq.com")])
    with pytest.raises(RuntimeError), sessions() as session, session.begin():
        resolve.resolve(session)
        raise RuntimeError("the caller failed after resolving")
    assert not resolve._INDEXES  # the index that run changed is gone with its transaction
    assert golden_of(sessions, b) is None and queued(sessions) == {b}
    run(sessions)
    assert golden_of(sessions, b) == golden_of(sessions, a)


def test_an_index_another_process_has_overtaken_is_rebuilt(sessions):
    (a,) = stage(sessions, [person(1, "1")])
    run(sessions)
    stale = dict(resolve._INDEXES)
    resolve.forget_index()
    (b,) = stage(sessions, [person(2, "2")])
    run(sessions)  # "another process": this process's old index has not seen b
    resolve._INDEXES.update(stale)
    (c,) = stage(sessions, [person(2, "2b", email="p2@qq.com", updated_at=datetime(2025, 9, 1, tzinfo=UTC))])
    run(sessions)
    assert golden_of(sessions, c) == golden_of(sessions, b) != golden_of(sessions, a)


def test_an_erasure_makes_every_process_rebuild_its_index_and_count(sessions):
    """Another process's index still holds the erased person and counts them as an active member."""
    a, _ = stage(sessions, [person(1, "1"), person(2, "2")])
    assert run(sessions).golden == 2
    elsewhere = dict(resolve._INDEXES)
    before = generation(sessions)
    with sessions() as session, session.begin():
        privacy.forget(session, golden_of(sessions, a), actor="test")
    assert generation(sessions) == before + 1
    resolve._INDEXES.update(elsewhere)
    assert run(sessions).golden == 1  # the erased member's record leaves the queue
    resolve._INDEXES.update(elsewhere)  # a process that did not take part in that run either
    assert run(sessions).golden == 1  # nothing new: its kept count is of an older generation
