"""Encryption at rest: keys, sealing and rotation, blind indexes, and the migration that seals an
existing database — on SQLite and PostgreSQL."""

import base64
import json
import logging
import os
import re
import stat

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from hub.db import engine_for, upgrade
from hub.privacy import PrivacyError, blind_index, keyring
from hub.privacy.crypto import Keyring, add_file_key, key_file, parse_keys
from hub.privacy.rotation import rotate, status
from hub.tables import AuditLog, GoldenMember, SourceRecordRow, StagedMember

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()
OTHER = base64.b64encode(b"x" * 32).decode()
INDEX = "an index secret of at least thirty-two characters"


@pytest.fixture
def env_keys(monkeypatch):
    def use(keys: str, index: str = INDEX) -> None:
        monkeypatch.setenv("MEMBERHUB_ENCRYPTION_KEYS", keys)
        monkeypatch.setenv("MEMBERHUB_HASH_KEY", index)

    return use


def raw_values(url, table, column):
    with engine_for(url).connect() as connection:
        return [v for (v,) in connection.execute(text(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))]


# ------------------------------------------------------------------------------------------ keys
def test_values_round_trip_and_carry_their_key_version(env_keys):
    env_keys(f"2:{NEW},1:{OLD}")
    ring = keyring()
    sealed = ring.encrypt("+8613800138000")
    assert sealed.startswith("v2:") and "13800138000" not in sealed
    assert ring.encrypt("+8613800138000") != sealed  # a fresh nonce each time
    assert ring.decrypt(sealed) == "+8613800138000"
    assert Keyring({1: b"o" * 32}, INDEX).encrypt("中文 ok").startswith("v1:")
    assert ring.decrypt(Keyring({1: b"o" * 32}, INDEX).encrypt("中文 ok")) == "中文 ok"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("2", "is not VERSION:BASE64KEY"),
        ("x:abc", "is not VERSION:BASE64KEY"),
        (f"1:{OLD},1:{NEW}", "key version 1 is given twice"),
        ("1:" + base64.b64encode(b"short").decode(), "is 5 bytes; AES-256 needs 32"),
        (" , ", "is empty"),
    ],
)
def test_malformed_keys_are_refused_with_the_reason(env_keys, keys, message):
    env_keys(keys)
    with pytest.raises(PrivacyError, match=message):
        keyring()


def test_keys_in_the_environment_need_the_hash_key_too(monkeypatch):
    monkeypatch.setenv("MEMBERHUB_ENCRYPTION_KEYS", f"1:{OLD}")
    monkeypatch.delenv("MEMBERHUB_HASH_KEY", raising=False)
    with pytest.raises(PrivacyError, match="MEMBERHUB_HASH_KEY is not"):
        keyring()


def test_a_wrong_or_missing_key_is_a_clear_error(env_keys):
    env_keys(f"1:{OLD}")
    sealed = keyring().encrypt("someone@example.com")
    env_keys(f"1:{OTHER}")
    with pytest.raises(PrivacyError, match="is not the one it was sealed with"):
        keyring().decrypt(sealed)
    env_keys(f"2:{NEW}")
    with pytest.raises(PrivacyError, match=r"key version 1, which the keyring .* does not hold"):
        keyring().decrypt(sealed)
    with pytest.raises(PrivacyError, match="not sealed"):
        keyring().decrypt("someone@example.com")
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    env_keys(f"1:{OLD}")
    with pytest.raises(PrivacyError, match="or the value was altered"):
        keyring().decrypt(tampered)


def test_without_keys_a_private_key_file_is_generated_once(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("MEMBERHUB_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MEMBERHUB_HASH_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="hub.privacy.crypto"):
        sealed = keyring().encrypt("+8613800138000")
    path = key_file()
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [r.message for r in caplog.records if "generated the key file" in r.message]
    first = blind_index("phone", "+8613800138000")
    monkeypatch.setenv("MEMBERHUB_HOME", str(tmp_path / "elsewhere"))  # another hub: keys of its own
    assert blind_index("phone", "+8613800138000") != first
    with pytest.raises(PrivacyError):
        keyring().decrypt(sealed)
    monkeypatch.setenv("MEMBERHUB_HOME", str(path.parent))
    assert keyring().decrypt(sealed) == "+8613800138000" and blind_index("phone", "+8613800138000") == first


def test_blind_indexes_are_keyed_and_separate_per_kind(env_keys):
    env_keys(f"1:{OLD}")
    phone = blind_index("phone", "+8613800138000")
    assert len(phone) == 32 and phone == blind_index("phone", "+8613800138000")
    assert phone != blind_index("email", "+8613800138000")
    assert blind_index("phone", None) is None and blind_index("phone", "") is None
    env_keys(f"1:{OLD}", index="another index secret of thirty-two characters")
    assert blind_index("phone", "+8613800138000") != phone


def test_parse_keys_accepts_urlsafe_and_unpadded_base64():
    raw = bytes(range(200, 232))
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_keys(f"3:{urlsafe}") == {3: raw}


# ------------------------------------------------------------------------------------------ the store
def add_member(session, source_id="1", phone="+8613800138000", email="wang@example.com"):
    record = SourceRecordRow(
        source="shop",
        stream="customers",
        external_id=source_id,
        payload={"phone": phone, "email": email},
        content_hash="h" + source_id,
    )
    session.add(record)
    session.flush()
    staged = StagedMember(
        source_record_id=record.id,
        source="shop",
        source_id=source_id,
        channel="online",
        phone=phone,
        phone_raw=phone,
        email=email,
        flags={"phone": f"{phone!r} kept"},
    )
    session.add(staged)
    session.add(GoldenMember(seq=int(source_id), member_id=f"MH{int(source_id):08d}", phone=phone, email=email))
    session.add(AuditLog(actor="t", action="pin_field", entity="golden_member", entity_id="x", after={"phone": phone}))
    session.flush()
    return staged


def test_sealed_columns_hold_ciphertext_and_read_back_plain(database_url, env_keys):
    env_keys(f"1:{OLD}")
    sessions = sessionmaker(engine_for(database_url))
    with sessions() as session, session.begin():
        add_member(session)
    for table, column in [
        ("staged_members", "phone"),
        ("staged_members", "email"),
        ("staged_members", "phone_raw"),
        ("staged_members", "flags"),
        ("golden_members", "phone"),
        ("golden_members", "email"),
        ("source_records", "payload"),
        ("audit_log", "after"),
    ]:
        values = raw_values(database_url, table, column)
        assert values and all(v.startswith("v1:") for v in values), (table, column, values)
    with sessions() as session:
        staged = session.scalar(select(StagedMember))
        golden = session.scalar(select(GoldenMember))
        assert (staged.phone, staged.email, staged.flags) == (
            "+8613800138000",
            "wang@example.com",
            {"phone": "'+8613800138000' kept"},
        )
        assert session.scalar(select(SourceRecordRow.payload))["email"] == "wang@example.com"
        # found by blind index, on both tables; the sealed column itself refuses to be compared
        key = blind_index("phone", "+8613800138000")
        assert staged.phone_bidx == golden.phone_bidx == key
        assert session.scalar(select(StagedMember.id).where(StagedMember.phone_bidx == key)) == staged.id
        assert (
            session.scalar(
                select(GoldenMember.member_id).where(
                    GoldenMember.email_bidx == blind_index("email", "wang@example.com")
                )
            )
            == "MH00000001"
        )
        with pytest.raises(PrivacyError, match="cannot be compared in SQL"):
            select(StagedMember.id).where(StagedMember.phone == "+8613800138000")
        assert session.scalar(select(StagedMember.id).where(StagedMember.email.is_not(None))) == staged.id
        golden.phone = None  # an ORM write keeps the index in step
        assert golden.phone_bidx is None


def test_rotation_reseals_with_the_newest_key(database_url, env_keys):
    env_keys(f"1:{OLD}")
    sessions = sessionmaker(engine_for(database_url))
    with sessions() as session, session.begin():
        for i in range(1, 4):
            add_member(session, str(i), phone=f"+861380013800{i}", email=f"p{i}@example.com")
    env_keys(f"2:{NEW},1:{OLD}")
    with sessions() as session:
        before = status(session)
    assert before["current_version"] == 2 and before["columns"]["staged_members.phone"] == {"sealed": 3, "older_key": 3}
    done = rotate(sessions)
    assert done["staged_members.phone"] == 3 and done["golden_field_pins.value"] == 0
    with sessions() as session:
        assert all(f["older_key"] == 0 for f in status(session)["columns"].values())
    assert all(v.startswith("v2:") for v in raw_values(database_url, "golden_members", "email"))
    assert rotate(sessions)["staged_members.phone"] == 0  # nothing left: a second run is a no-op
    env_keys(f"2:{NEW}")  # the old key can go now
    with sessions() as session:
        assert sorted(session.scalars(select(StagedMember.phone))) == [f"+861380013800{i}" for i in range(1, 4)]


def test_a_new_key_in_the_key_file_seals_new_values(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMBERHUB_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MEMBERHUB_HASH_KEY", raising=False)
    first = keyring().encrypt("a")
    index = blind_index("email", "a@example.com")
    assert add_file_key() == 2
    assert keyring().encrypt("a").startswith("v2:") and keyring().decrypt(first) == "a"
    assert blind_index("email", "a@example.com") == index  # the index secret stays


# ------------------------------------------------------------------------------------------ migration
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_database(request, tmp_path):
    """A database at the schema before encryption (0001-0004), with plaintext rows."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    for revision in ("0002", "0003", "0004"):
        upgrade(url, revision)
    with engine_for(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO source_records (id, source, stream, external_id, payload, content_hash, first_seen_at, "
                "last_seen_at) VALUES (1, 'shop', 'customers', '1', :payload, 'h', :at, :at)"
            ),
            {"payload": '{"phone": "138 0013 8000", "email": "Wang@Example.com"}', "at": "2025-01-01 00:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO staged_members (id, source_record_id, source, source_id, channel, phone_raw, phone, "
                "email, flags, staged_at) VALUES (1, 1, 'shop', '1', 'online', '138 0013 8000', '+8613800138000', "
                "'wang@example.com', '{}', :at)"
            ),
            {"at": "2025-01-01 00:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO golden_members (seq, member_id, status, phone, email, lineage, created_at, updated_at) "
                "VALUES (1, 'MH00000001', 'active', '+8613800138000', 'wang@example.com', '{}', :at, :at)"
            ),
            {"at": "2025-01-01 00:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, entity, entity_id, before, after) VALUES "
                "(:at, 'steward', 'pin_field', 'golden_member', 'MH00000001', :before, NULL)"
            ),
            {"at": "2025-01-01 00:00:00", "before": '{"phone": "+8613800138000"}'},
        )
    return url


def test_the_migration_seals_an_existing_database(old_database, env_keys):
    env_keys(f"1:{OLD}")
    upgrade(old_database)
    for table, column in [
        ("source_records", "payload"),
        ("staged_members", "phone"),
        ("staged_members", "phone_raw"),
        ("staged_members", "email"),
        ("staged_members", "flags"),
        ("golden_members", "phone"),
        ("audit_log", "before"),
    ]:
        values = raw_values(old_database, table, column)
        assert values and all(v.startswith("v1:") for v in values), (table, column, values)
    sessions = sessionmaker(engine_for(old_database))
    with sessions() as session:
        staged = session.scalar(select(StagedMember))
        assert (staged.phone, staged.phone_raw, staged.email, staged.flags) == (
            "+8613800138000",
            "138 0013 8000",
            "wang@example.com",
            {},
        )
        assert staged.phone_bidx == blind_index("phone", "+8613800138000")
        golden = session.scalar(
            select(GoldenMember).where(GoldenMember.email_bidx == blind_index("email", "wang@example.com"))
        )
        assert golden.member_id == "MH00000001" and golden.phone == "+8613800138000"
        assert session.scalar(select(SourceRecordRow.payload)) == {
            "phone": "138 0013 8000",
            "email": "Wang@Example.com",
        }
        assert session.scalar(select(AuditLog.before)) == {"phone": "+8613800138000"}
    upgrade(old_database)  # nothing left to do: a second upgrade changes nothing
    with sessions() as session:
        assert session.scalar(select(StagedMember.email)) == "wang@example.com"


def test_keys_commands_add_a_version_and_rotate_to_it(database_url, monkeypatch):
    from typer.testing import CliRunner

    from hub.cli import app

    monkeypatch.delenv("MEMBERHUB_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MEMBERHUB_HASH_KEY", raising=False)
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    with sessionmaker(engine_for(database_url))() as session, session.begin():
        add_member(session)
    cli = CliRunner()
    added = cli.invoke(app, ["keys", "new"])
    assert added.exit_code == 0 and "key version 2 added" in added.output
    before = json.loads(cli.invoke(app, ["keys", "status", "--json"]).output)
    assert before["current_version"] == 2 and before["columns"]["golden_members.email"] == {"sealed": 1, "older_key": 1}
    rotated = cli.invoke(app, ["keys", "rotate", "--json"])
    assert rotated.exit_code == 0 and json.loads(rotated.output)["staged_members.phone_raw"] == 1
    after = json.loads(cli.invoke(app, ["keys", "status", "--json"]).output)
    assert sum(c["older_key"] for c in after["columns"].values()) == 0
    monkeypatch.setenv("MEMBERHUB_ENCRYPTION_KEYS", f"1:{OLD}")
    monkeypatch.setenv("MEMBERHUB_HASH_KEY", INDEX)
    printed = cli.invoke(app, ["keys", "new"])
    assert re.search(r"^2:[A-Za-z0-9+/]{43}=$", printed.output, re.MULTILINE), printed.output
    wrong = cli.invoke(app, ["keys", "status"])  # the data is sealed with version 2, which this keyring lacks
    assert wrong.exit_code == 0  # status reads prefixes only
    export = cli.invoke(app, ["privacy", "export", "MH00000001"])
    assert export.exit_code == 1 and "key version 2, which the keyring" in str(export.exception)


def test_tombstones_withhold_the_person_but_not_a_relative_sharing_the_phone(database_url, env_keys):
    from hub.privacy.guard import protect_members, tombstone_keys
    from hub.tables import PrivacyTombstone

    env_keys(f"1:{OLD}")
    ring = keyring()
    forgotten = {"source": "shop", "source_id": "7", "phone": "+8613800138000", "email": "a@example.com"}
    sessions = sessionmaker(engine_for(database_url))
    with sessions() as session, session.begin():
        for kind, key in tombstone_keys(ring, {**forgotten, "email_bidx": blind_index("email", "a@example.com")}):
            session.add(PrivacyTombstone(kind=kind, key=key, member_id="MH00000007", created_by="dpo"))
        records = {}
        for i, values in enumerate(
            [
                {**forgotten, "email": None},  # the shop sends them again, without the e-mail now
                {"source": "pos", "source_id": "70", "phone": None, "email": "a@example.com"},  # signs up at a till
                {"source": "pos", "source_id": "71", "phone": "+8613800138000", "email": "b@example.com"},  # a relative
            ],
            start=1,
        ):
            row = SourceRecordRow(
                source=values["source"],
                stream="customers",
                external_id=values["source_id"],
                payload={"mobile": values["phone"], "mail": values["email"]},
                content_hash=f"h{i}",
            )
            session.add(row)
            session.flush()
            records[row.id] = dict(values)
        withheld = protect_members(session, records)
        assert len(withheld) == 2 and [v["source_id"] for v in records.values()] == ["71"]
        assert records[next(iter(records))]["phone_bidx"] == blind_index("phone", "+8613800138000")
        payloads = dict(session.execute(select(SourceRecordRow.id, SourceRecordRow.payload)).all())
        assert [payloads[i] for i in withheld] == [{}, {}] and payloads[next(iter(records))]["mail"] == "b@example.com"
