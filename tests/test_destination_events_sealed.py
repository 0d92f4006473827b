"""A destination's event (a till redemption, a CRM change) is kept sealed: its payload can name the
customer's phone or e-mail, and a dump of the hub database shows neither — for new rows and for rows
stored in plaintext before the migration — while the hub reads the payload back as it was."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from test_privacy_pipeline import dump

from hub.db import engine_for, session_scope, upgrade
from hub.tables import DestinationEventRow

PHONE, EMAIL = "+8613800138000", "wang.fang@example.com"
PAYLOAD = {"id": "ev-1", "kind": "redeem", "points": -100, "detail": f"redeemed by {PHONE} / {EMAIL}"}


def _plaintext_in(database_url: str) -> list[str]:
    text_of_database = dump(database_url)
    return [value for value in (PHONE, PHONE.removeprefix("+86"), EMAIL) if value in text_of_database]


def test_a_new_event_payload_is_sealed_and_read_back(database_url):
    with session_scope(database_url) as session:
        session.add(DestinationEventRow(destination="square", event_id="ev-1", occurred_at=datetime.now(UTC),
                                        kind="redeem", points=-100, outcome="imported", payload=PAYLOAD))  # fmt: skip
    assert _plaintext_in(database_url) == []
    with session_scope(database_url) as session:
        assert session.get(DestinationEventRow, ("square", "ev-1")).payload == PAYLOAD


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_before_sealing(request, tmp_path):
    """A database whose destination_events were written in plaintext (the schema of 0005)."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url, "0005")
    with engine_for(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO destination_events (destination, event_id, occurred_at, kind, points, outcome, payload, "
                "recorded_at) VALUES ('square', 'ev-1', :at, 'redeem', -100, 'imported', :payload, :at)"
            ),
            {"at": "2025-01-01 00:00:00", "payload": '{"id": "ev-1", "kind": "redeem", "points": -100, '
                                                     f'"detail": "redeemed by {PHONE} / {EMAIL}"}}'},
        )  # fmt: skip
    assert _plaintext_in(url)  # the dump does show them: the check can fail
    return url


def test_the_migration_seals_events_stored_in_plaintext(database_before_sealing):
    url = database_before_sealing
    upgrade(url)
    assert _plaintext_in(url) == []
    with session_scope(url) as session:
        assert session.get(DestinationEventRow, ("square", "ev-1")).payload == PAYLOAD
    upgrade(url)  # again: nothing sealed twice
    with session_scope(url) as session:
        assert session.get(DestinationEventRow, ("square", "ev-1")).payload == PAYLOAD
