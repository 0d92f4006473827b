"""Staging over several worker processes gives exactly what one process gives: the same staged
rows, quarantine entries and reasons, counts and discovered fields, on the 5 %-garbage batch."""

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import sessionmaker
from test_quarantine import batch, mappings_for, member

from connectors import Page
from hub import staging, staging_parallel
from hub.db import engine_for, upgrade
from hub.ingest import store_page
from hub.tables import QuarantineRow, SourceRecordRow, StagedMember, StagedOrder, StreamField


@pytest.fixture
def sessions(postgres_url, monkeypatch):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "test-key-of-32-characters-long!!")
    upgrade(postgres_url)
    yield sessionmaker(engine_for(postgres_url), expire_on_commit=False)
    engine_for(postgres_url).dispose()


def load(sessions):
    """The garbage batch, orders (one that fails its cast), and two records of another page whose
    mapped ids are taken by records of the first: one claim settled across the workers' slices."""
    pages = batch()
    orders = [
        {"id": f"o{i}", "member": str(i), "shop": "SH01", "total": "12.50", "at": "2025-03-01T08:00:00Z"}
        for i in range(40)
    ]
    orders[5]["total"] = "twelve"
    with sessions() as session, session.begin():
        for page in pages:
            store_page(session, "testpos", "members", "id", Page(page))
        store_page(session, "testpos", "orders", "id", Page(orders))
        store_page(
            session, "testpos", "members", "key", Page([{**member(3), "key": "k3"}, {**member(150), "key": "k150"}])
        )


def run(sessions, tmp_path, workers):
    seen = []
    with sessions() as session, session.begin():
        counts = staging.stage(
            session, mappings_for(tmp_path), {}, options=staging.StageOptions(workers=workers), on_batch=seen.append
        )
    return counts, seen


def contents(sessions):
    def rows(model, skip):
        columns = [c for c in model.__table__.columns if c.name not in skip]
        with sessions() as session:
            found = session.execute(select(*columns).order_by(model.source_record_id, model.id)).all()
        return [dict(r._mapping) for r in found]

    with sessions() as session:
        fields = session.execute(
            select(
                StreamField.stream,
                StreamField.path,
                StreamField.json_type,
                StreamField.record_count,
                StreamField.last_seen_seq,
            ).order_by(StreamField.stream, StreamField.path, StreamField.json_type)
        ).all()
        marked = session.execute(
            select(SourceRecordRow.id, SourceRecordRow.staged_hash).order_by(SourceRecordRow.id)
        ).all()
    return {
        "members": rows(StagedMember, {"id", "staged_at"}),
        "orders": rows(StagedOrder, {"id", "staged_at"}),
        "quarantine": rows(QuarantineRow, {"id", "created_at", "last_attempt_at"}),
        "fields": fields,
        "marked": marked,
    }


def forget_staging(sessions):
    with sessions() as session, session.begin():
        for model in (StagedMember, StagedOrder, StreamField):
            session.execute(delete(model))
        session.execute(delete(QuarantineRow).where(QuarantineRow.source_record_id.is_not(None)))  # not ingest's
        session.execute(update(SourceRecordRow).values(staged_hash=None))


@pytest.mark.postgres
@pytest.mark.parametrize(("workers", "batch_size"), [(2, 100), (2, 16), (3, 25)])
def test_parallel_staging_gives_what_one_process_gives(sessions, tmp_path, workers, batch_size, monkeypatch):
    monkeypatch.setattr(staging, "BATCH", batch_size)  # small: many rounds, claims settled across them
    coordinated = []
    original = staging_parallel._coordinate
    monkeypatch.setattr(staging_parallel, "_coordinate", lambda *a: coordinated.append(1) or original(*a))
    load(sessions)
    one, one_batches = run(sessions, tmp_path, 1)
    alone = contents(sessions)
    forget_staging(sessions)
    many, many_batches = run(sessions, tmp_path, workers)

    assert many == one and coordinated == [1]  # the second run was the parallel one
    again = contents(sessions)
    for name in alone:
        assert again[name] == alone[name], name
    assert sum(many_batches) == sum(one_batches) == len(alone["marked"])
    assert len(many_batches) == -(-len(alone["marked"]) // (workers * batch_size))  # one report a round
    assert one.quarantined >= 3 and one.orders == 39  # the garbage that reaches staging, the bad cast, taken ids
    owners = {m["source_id"]: m["source_record_id"] for m in alone["members"]}
    taken = [(q["external_id"], q["reason"]) for q in alone["quarantine"] if q["field"] == "source_id"]
    assert taken == [
        ("k3", f"source_id: '3' is already the id of source record {owners['3']}"),
        ("k150", f"source_id: '150' is already the id of source record {owners['150']}"),
    ]
    assert [q["field"] for q in alone["quarantine"] if q["stream"] == "orders"] == ["total.amount"]


@pytest.mark.postgres
def test_a_second_parallel_run_stages_only_what_changed(sessions, tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "BATCH", 50)
    load(sessions)
    first, _ = run(sessions, tmp_path, 2)
    with sessions() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page([member(8, name="丽"), member(9, name="娜"), member(10)]))
    monkeypatch.setattr(staging, "BATCH", 1)  # two changed records: more than one batch, so the workers restage them
    coordinated = []
    original = staging_parallel._coordinate
    monkeypatch.setattr(staging_parallel, "_coordinate", lambda *a: coordinated.append(1) or original(*a))
    again, seen = run(sessions, tmp_path, 2)
    assert first.members > 0 and (again.members, again.orders, again.quarantined, seen) == (2, 0, 0, [2])
    assert coordinated == [1]
    with sessions() as session:
        names = dict(session.execute(select(StagedMember.source_id, StagedMember.given_name)).all())
    assert (names["8"], names["9"]) == ("丽", "娜")


@pytest.mark.postgres
def test_a_transaction_that_wrote_records_is_staged_in_one_process(sessions, tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "BATCH", 2)  # more than one batch: only what it wrote keeps it in one process
    monkeypatch.setattr(staging_parallel, "_coordinate", lambda *a: pytest.fail("workers cannot see these records"))
    with sessions() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page([member(i) for i in range(5)]))
        counts = staging.stage(session, mappings_for(tmp_path), {}, options=staging.StageOptions(workers=2))
    assert counts.members == 5


@pytest.mark.postgres
def test_a_worker_that_fails_leaves_its_round_pending_and_the_run_raises(sessions, tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "BATCH", 20)
    load(sessions)
    with sessions() as session:
        doomed = session.scalars(select(SourceRecordRow.id).order_by(SourceRecordRow.id).offset(130).limit(1)).one()
    write_rows = staging.write_rows

    def failing(session, rows, *args):
        if any(row.id == doomed for row in rows):
            raise OSError("disk full")
        return write_rows(session, rows, *args)

    monkeypatch.setattr(staging, "write_rows", failing)  # the workers are forked with it
    with pytest.raises(RuntimeError, match="disk full"):
        run(sessions, tmp_path, 2)
    with sessions() as session:
        marked = set(session.scalars(select(SourceRecordRow.id).where(SourceRecordRow.staged_hash.is_not(None))))
        staged = set(session.scalars(select(StagedMember.source_record_id))) | set(
            session.scalars(select(StagedOrder.source_record_id))
        )
        quarantined = set(session.scalars(select(QuarantineRow.source_record_id)))
    assert doomed not in marked and marked and staged <= marked
    assert marked <= staged | quarantined  # marked only with the row it wrote
    monkeypatch.setattr(staging, "write_rows", write_rows)
    again, _ = run(sessions, tmp_path, 2)  # the rest is staged next time
    with sessions() as session:
        assert session.scalar(select(SourceRecordRow.id).where(staging.PENDING).limit(1)) is None
    assert again.members > 0


@pytest.mark.parametrize("workers", [None, 2])
def test_sqlite_is_staged_in_one_process_whatever_is_asked(tmp_path, monkeypatch, workers):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "test-key-of-32-characters-long!!")
    monkeypatch.setattr(staging_parallel, "stage_parallel", lambda *a, **k: pytest.fail("SQLite has one writer"))
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    lite = sessionmaker(engine_for(url), expire_on_commit=False)
    with lite() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page([member(i) for i in range(5)]))
    with lite() as session, session.begin():
        counts = staging.stage(session, mappings_for(tmp_path), {}, options=staging.StageOptions(workers=workers))
    assert counts.members == 5
