"""Quarantine on SQLite and PostgreSQL: a batch with 5 % garbage stages every good record and
quarantines every bad one with a reason, counts reconcile exactly, and retry releases records once
the mapping (or the source) is fixed."""

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from connectors import Page
from hub import quarantine, staging
from hub.cli import app
from hub.db import engine_for
from hub.ingest import store_page
from hub.tables import AuditLog, QuarantineRow, SourceRecordRow, StagedMember, StagedOrder
from mappings import load_mapping
from schemas.errors import HubError

MEMBERS = """\
source: testpos
stream: members
target: member
required: [phone]
fields:
  source_id: id
  channel: "'pos'"
  family_name: surname
  given_name: name
  phone: mobile
  email: {email}
  birthday: born
  gender: sex
  resident_id: id_number
  address: address
  updated_at: utc(changed)
"""
ORDERS = """\
source: testpos
stream: orders
target: order
fields:
  source_id: id
  member_source_id: member
  store_code: store(shop)
  channel: "'pos'"
  status: "'paid'"
  total.amount: cast(total as {kind})
  total.currency: "'CNY'"
  ordered_at: utc(at)
"""
GOOD_ID = "11010519491231002X"


@pytest.fixture
def sessions(database_url, monkeypatch):
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", "test-key-of-32-characters-long!!")
    yield sessionmaker(engine_for(database_url), expire_on_commit=False)
    engine_for(database_url).dispose()  # each test has its own database: keep no idle connections


def mappings_for(tmp_path, email="mail", kind="decimal"):
    (tmp_path / "members.yaml").write_text(MEMBERS.format(email=email))
    (tmp_path / "orders.yaml").write_text(ORDERS.format(kind=kind))
    return {("testpos", s): load_mapping(tmp_path / f"{s}.yaml") for s in ("members", "orders")}


def member(i, **overrides):
    record = {
        "id": str(i),
        "surname": "王",
        "name": "芳",
        "mobile": f"138{i:08d}",
        "mail": f"m{i}@qq.com",
        "born": "1990/2/3",
        "sex": "女",
        "id_number": None,
        "address": "上海市徐汇区漕溪北路88号",
        "changed": "2025-03-01 08:00:00",
    }
    return {**record, **overrides}


# Every kind of garbage the issue names, with the field and reason each must be quarantined with.
GARBAGE = {
    7: ("wrong type: email is a number", member(7, mail=12345), "email", "email: 12345: value is not a valid email"),
    23: ("wrong type: time", member(23, changed="yesterday"), "updated_at", "updated_at: Invalid isoformat string"),
    41: (
        "wrong type: surname is a list",
        member(41, surname=["王"]),
        "family_name",
        "family_name: Input should be a valid string",
    ),
    55: ("missing id", {k: v for k, v in member(55).items() if k != "id"}, "id", "no id: the record has no 'id' field"),
    88: ("empty id", member(88, id=""), "id", "id is empty"),
    102: (
        "invalid phone",
        member(102, mobile="12345"),
        "phone",
        "phone: '12345' is not a valid phone number (default region CN) (required by members.yaml)",
    ),
    130: ("no phone", member(130, mobile=None), "phone", "phone: missing (required by members.yaml)"),
    151: (
        "bad JSON",
        '{"id": "151", "surname": "王", ',
        None,
        "not valid JSON: Expecting property name enclosed in double quotes",
    ),
    170: ("not an object", ["151", "王"], None, "not a JSON object but list"),
    199: ("id is an object", member(199, id={"value": 199}), "id", 'id is dict {"value": 199}, not an id'),
}


def batch():
    """200 records, 10 of them garbage (5 %), in four pages as a connector would hand them over."""
    records = [GARBAGE[i][1] if i in GARBAGE else member(i) for i in range(200)]
    return [records[i : i + 50] for i in range(0, 200, 50)]


def test_a_batch_with_5_percent_garbage_stages_every_good_record_and_quarantines_every_bad_one(sessions, tmp_path):
    pages = batch()
    synced = []
    for page in pages:
        with sessions() as session, session.begin():
            synced.append(store_page(session, "testpos", "members", "id", Page(page)))
    with sessions() as session, session.begin():
        staged = staging.stage(session, mappings_for(tmp_path), {})

    pulled = sum(c.pulled for c in synced)
    at_ingest = sum(c.quarantined for c in synced)
    assert pulled == 200 and sum(c.new for c in synced) == 200 - at_ingest
    assert (staged.members, staged.quarantined) == (190, 10 - at_ingest)
    assert staged.members + staged.quarantined + at_ingest == pulled  # reconciles exactly
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(StagedMember)) == 190
        assert session.scalar(select(func.count()).select_from(SourceRecordRow)) == 200 - at_ingest
        entries = list(session.scalars(select(QuarantineRow)))
    assert len(entries) == 10
    unmatched = list(entries)
    for number, (what, _, field, reason) in GARBAGE.items():
        match = next((e for e in unmatched if e.field == field and reason in e.reason), None)
        assert match is not None, (what, [(e.field, e.reason) for e in unmatched])
        assert match.external_id in (str(number), None)
        unmatched.remove(match)
    assert unmatched == []


def test_the_same_garbage_sent_again_is_not_duplicated(sessions):
    bad = [member(1, id=None), "not json"]
    for _ in range(3):
        with sessions() as session, session.begin():
            counts = store_page(session, "testpos", "members", "id", Page(bad))
        assert (counts.pulled, counts.quarantined, counts.new) == (2, 2, 0)
    with sessions() as session:
        assert [e.attempts for e in session.scalars(select(QuarantineRow).order_by(QuarantineRow.id))] == [3, 3]


def test_flagged_values_do_not_quarantine_a_member(sessions, tmp_path):
    records = [
        member(1, born="0000-09-21", sex="Q", id_number="110105194912310021"),
        member(2, born=None, sex=None, id_number=GOOD_ID, address="广东省广州市天河区天河路208号"),
    ]
    with sessions() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page(records))
        staged = staging.stage(session, mappings_for(tmp_path), {})
    assert (staged.members, staged.quarantined, staged.flagged) == (2, 0, 1)
    with sessions() as session:
        first, second = session.scalars(select(StagedMember).order_by(StagedMember.source_id))
    assert first.flags == {
        "birthday": "'0000-09-21': has a month and day but no year",
        "gender": "gender code 'Q' is not recognised",
        "resident_id": "resident ID check digit does not match (typo or made-up number)",
    }
    assert (first.birthday, first.gender, first.resident_id_hash, first.phone) == (None, None, None, "+8613800000001")
    assert (first.name_pinyin, first.name_key, first.province, first.city, first.district) == (
        "wang fang",
        "王芳",
        "上海市",
        "上海市",
        "徐汇区",
    )
    assert second.flags == {} and len(second.resident_id_hash) == 64
    assert (str(second.birthday), second.gender) == ("1949-12-31", "female")  # from the ID number
    assert (second.province, second.city, second.district) == ("广东省", "广州市", "天河区")


def test_retry_releases_records_once_the_mapping_is_fixed(sessions, tmp_path):
    with sessions() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page([member(1), member(2)]))
        store_page(
            session,
            "testpos",
            "orders",
            "id",
            Page([{"id": "o1", "member": "1", "shop": "SH01", "total": "99.90", "at": "2025-03-01 08:00:00"}]),
        )
        broken = mappings_for(tmp_path, email="mobile", kind="int")  # email from the phone field; int for money
        first = staging.stage(session, broken, {})
    assert (first.members, first.orders, first.quarantined) == (0, 0, 3)
    with sessions() as session:
        reasons = {q.external_id: (q.field, q.reason) for q in session.scalars(select(QuarantineRow))}
        ids = {q.external_id: q.id for q in session.scalars(select(QuarantineRow))}
    assert reasons["o1"][0] == "total.amount" and "cannot cast '99.90' to int" in reasons["o1"][1]
    assert reasons["1"][0] == "email"

    with sessions() as session, session.begin():
        still = quarantine.retry(session, broken, {}, ids=[ids["o1"]])
    assert (still.retried, still.released, len(still.still_failing)) == (1, 0, 1)
    assert still.still_failing[0]["attempts"] == 2

    fixed = mappings_for(tmp_path)
    with sessions() as session, session.begin():
        one = quarantine.retry(session, fixed, {}, ids=[ids["o1"]])
        rest = quarantine.retry(session, fixed, {}, everything=True, stream="members", actor="steward")
    assert (one.released, rest.retried, rest.released, rest.still_failing) == (1, 2, 2, [])
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(QuarantineRow)) == 0
        assert session.scalar(select(func.count()).select_from(StagedOrder)) == 1
        assert session.scalar(select(func.count()).select_from(StagedMember)) == 2
        audit = session.scalar(select(AuditLog).where(AuditLog.actor == "steward"))
        assert (audit.action, audit.after["released"]) == ("quarantine_retry", 2)
    with sessions() as session, session.begin():  # nothing left to do: staging again changes nothing
        again = staging.stage(session, fixed, {})
    assert (again.members, again.orders, again.quarantined) == (0, 0, 0)


def test_show_is_audited_and_unknown_ids_are_explained(sessions, tmp_path):
    with sessions() as session, session.begin():
        store_page(session, "testpos", "members", "id", Page([member(1, mobile="1")]))
        staging.stage(session, mappings_for(tmp_path), {})
        entry_id = session.scalar(select(QuarantineRow.id))
    with sessions() as session, session.begin():
        shown = quarantine.show(session, entry_id, actor="alice", mappings=mappings_for(tmp_path), kinds={})
        with pytest.raises(HubError, match="no quarantined record 999"):
            quarantine.show(session, 999, actor="alice")
    assert shown["payload"]["mobile"] == "1" and shown["field"] == "phone" and shown["replayable"]
    assert shown["mapping_changed_since"] is False
    with sessions() as session:
        audit = session.scalar(select(AuditLog).where(AuditLog.entity == "quarantine"))
        assert (audit.actor, audit.action, audit.entity_id) == ("alice", "read", str(entry_id))
        assert quarantine.summary(session) == [{"source": "testpos", "stream": "members", "field": "phone", "count": 1}]


SHOPIFY_CUSTOMER = {
    "id": 42,
    "email": "not-an-email",
    "first_name": "Fang",
    "last_name": "Wang",
    "phone": "+8613812345678",
    "created_at": "2025-03-01T08:00:00+08:00",
    "updated_at": "2025-03-01T08:00:00+08:00",
}


def test_quarantine_commands(sessions, database_url, monkeypatch):
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    from mappings import load_mappings

    with sessions() as session, session.begin():
        store_page(session, "shopify", "customers", "id", Page([SHOPIFY_CUSTOMER, {"email": "x@y.com"}]))
        staging.stage(session, load_mappings(), {})
    runner = CliRunner()
    listed = runner.invoke(app, ["quarantine", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.output)["entries"]
    by_field = {e["field"]: e for e in entries}
    assert set(by_field) == {"email", "id"} and not by_field["id"]["replayable"]

    shown = runner.invoke(app, ["quarantine", "show", str(by_field["email"]["id"])])
    assert shown.exit_code == 0 and "not-an-email" in shown.output and "shopify/customers.yaml" in shown.output

    retried = runner.invoke(app, ["quarantine", "retry", "--all", "--json"])
    assert json.loads(retried.output)["released"] == 0
    assert json.loads(retried.output)["not_replayable"] == [by_field["id"]["id"]]

    with sessions() as session, session.begin():  # the source fixes the address; no staging run yet
        store_page(session, "shopify", "customers", "id", Page([{**SHOPIFY_CUSTOMER, "email": "fang@qq.com"}]))
    released = runner.invoke(app, ["quarantine", "retry", str(by_field["email"]["id"])])
    assert released.exit_code == 0 and "1 staged" in released.output
    assert "quarantine is empty" not in runner.invoke(app, ["quarantine", "list"]).output  # the id-less one stays

    nothing = runner.invoke(app, ["quarantine", "retry"])
    assert nothing.exit_code != 0


def test_a_source_id_already_taken_is_quarantined_not_a_crash(sessions, tmp_path):
    mappings = mappings_for(tmp_path)
    mappings[("testpos", "members2")] = mappings[("testpos", "members")]
    with sessions() as session, session.begin():  # the same source_id in two streams, one run
        store_page(session, "testpos", "members", "id", Page([member(1)]))
        store_page(session, "testpos", "members2", "id", Page([member(1, name="芬")]))
        first = staging.stage(session, mappings, {})
    with sessions() as session, session.begin():  # and again in a later run, found in the database
        store_page(session, "testpos", "members3", "id", Page([member(1, name="芳芳")]))
        mappings[("testpos", "members3")] = mappings[("testpos", "members")]
        later = staging.stage(session, mappings, {})
    assert (first.members, first.quarantined, later.members, later.quarantined) == (1, 1, 0, 1)
    with sessions() as session:
        reasons = sorted((q.stream, q.field, q.reason.split(" of ")[0]) for q in session.scalars(select(QuarantineRow)))
    assert reasons == [
        ("members2", "source_id", "source_id: '1' is already the id"),
        ("members3", "source_id", "source_id: '1' is already the id"),
    ]
