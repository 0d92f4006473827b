"""The HubSpot connector against its simulator over real HTTP: full and incremental reads, the search
cap, auth failures, rate limits and transport faults, the contacts mapping for a whole world, and
write-back with partial failure and persistence."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import WritebackUpdate, connector_for
from connectors.hubspot import HubSpotConnector, Throttle
from connectors.simulators import TOKENS
from connectors.simulators._world import generate_world
from connectors.simulators.hubspot import HubSpotSimulator
from mappings import load_mapping
from mappings.engine import MAPPINGS_DIR
from schemas import ConnectorConfig, Member
from schemas.errors import FatalError

PEOPLE = 120


@pytest.fixture(scope="module")
def world():
    return generate_world(PEOPLE, 31, systems=("hubspot",))


def simulator(world, **options) -> HubSpotSimulator:
    sim = HubSpotSimulator(world, token=TOKENS["hubspot"], **options)
    sim.start()
    return sim


@pytest.fixture
def sim(world):
    with simulator(world) as running:
        yield running


@pytest.fixture(scope="module")
def reader(world):
    with simulator(world) as running:
        yield running


def connect(sim, *, token=None, page_size=25, **options) -> HubSpotConnector:
    config = ConnectorConfig(kind="hubspot", base_url=sim.base_url, token=token or sim.token, page_size=page_size)
    return HubSpotConnector("crm", config, **options)


def quick(connector: HubSpotConnector) -> HubSpotConnector:
    """Retry after at most 50 ms instead of the production backoff, to keep the tests fast."""
    connector._client.max_wait = 0.05
    return connector


def read_all(connector, since=None):
    pages = list(connector.read("contacts", since))
    return pages, [record for page in pages for record in page.records]


def modified(record):
    return datetime.fromisoformat(record["properties"]["lastmodifieddate"].replace("Z", "+00:00"))


def test_the_registry_builds_it(reader):
    config = ConnectorConfig(kind="hubspot", base_url=reader.base_url, token=reader.token)
    with connector_for("crm", config) as connector:
        assert isinstance(connector, HubSpotConnector) and [s.name for s in connector.streams] == ["contacts"]


def test_a_full_read_yields_every_contact_once_and_only_the_last_page_a_cursor(reader):
    with connect(reader) as connector:
        pages, records = read_all(connector)
    assert Counter(r["id"] for r in records) == Counter(list(reader.truth()))
    assert len(pages) == 5 and all(p.cursor is None for p in pages[:-1])
    assert pages[-1].cursor == max(modified(r) for r in records).isoformat()
    assert {"email", "lastmodifieddate", "hs_object_id"} <= set(records[0]["properties"])


def test_an_incremental_read_searches_from_since_in_order(reader):
    with connect(reader) as connector:
        _, everything = read_all(connector)
        stamps = sorted(modified(r) for r in everything)
        since = stamps[70]
        pages, records = read_all(connector, since.astimezone(UTC).isoformat())
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in everything if modified(r) >= since)
    assert [modified(r) for r in records] == sorted(modified(r) for r in records)
    for page in pages:
        assert page.cursor == modified(page.records[-1]).isoformat()
    assert reader.requests["POST /crm/v3/objects/contacts/search"] >= 2


def test_the_search_cap_moves_the_window_and_skips_what_was_read(world):
    """25 contacts share one instant across the point where the search restarts: each is still
    yielded exactly once."""
    sim = simulator(world, search_cap=30)
    try:
        instant = datetime(2025, 8, 1, tzinfo=UTC)
        for contact in sorted(sim.truth())[:25]:
            sim.touch(contact, instant)
        with quick(connect(sim, page_size=20, search_cap=30)) as connector:
            _, everything = read_all(connector)
            before = sorted(modified(r) for r in everything if modified(r) < instant)
            since = before[-15]  # 15 contacts, then the 25 tied ones: the cap falls among the ties
            _, records = read_all(connector, since.isoformat())
        expected = [r["id"] for r in everything if modified(r) >= since]
        assert len(expected) > 60
        assert Counter(r["id"] for r in records) == Counter(expected)
        assert sim.requests["POST /crm/v3/objects/contacts/search"] > len(expected) // 20 + 1
    finally:
        sim.stop()


def test_more_ties_than_one_search_can_hold_is_a_clear_error(world):
    sim = simulator(world, search_cap=30)
    try:
        for contact in sorted(sim.truth())[:35]:
            sim.touch(contact, datetime(2025, 8, 1, tzinfo=UTC))
        with (
            quick(connect(sim, page_size=20, search_cap=30)) as connector,
            pytest.raises(FatalError, match="full sync"),
        ):
            read_all(connector, "2025-08-01T00:00:00+00:00")
    finally:
        sim.stop()


def test_a_wrong_token_is_a_fatal_error_that_says_what_to_fix(reader):
    with connect(reader, token="pat-na1-wrong") as connector, pytest.raises(FatalError) as caught:
        read_all(connector)
    assert "401" in str(caught.value) and "access token" in str(caught.value)
    assert "INVALID_AUTHENTICATION" in str(caught.value)


def test_check_explains_each_step(reader):
    with connect(reader) as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reachable", True), ("authenticated", True), ("sample read", True)]
    assert f"{PEOPLE} contacts" in steps[-1].detail
    with connect(reader, token="wrong") as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reachable", True), ("authenticated", False)]
    assert "access token" in steps[-1].detail


def test_check_reports_an_unreachable_server():
    config = ConnectorConfig(kind="hubspot", base_url="http://127.0.0.1:9", token="x", timeout_seconds=1)
    with HubSpotConnector("crm", config) as connector:
        steps = connector.check()
    assert [(s.name, s.ok) for s in steps] == [("reachable", False)]


@pytest.mark.parametrize(
    "fault", [{"rate_limit": 2}, {"errors": 3}, {"errors": 2, "error_status": 503}, {"malformed": 2}, {"reset": 2}]
)
def test_retriable_faults_are_retried_and_nothing_is_lost(sim, fault):
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    with quick(connect(sim)) as connector:
        _, records = read_all(connector)
        _, searched = read_all(connector, "2025-01-01T00:00:00Z")
    assert Counter(r["id"] for r in records) == Counter(list(sim.truth()))
    assert len(searched) == len({r["id"] for r in searched})
    assert sim.faults.rate_limit == sim.faults.errors == sim.faults.malformed == sim.faults.reset == 0


def test_a_real_rolling_window_is_respected_or_retried(world):
    sim = simulator(world, rate_limit=2, rate_window=0.3)
    try:
        # the throttle keeps a margin over the server's window: the two clocks never agree exactly
        with connect(sim, page_size=40, requests_per_window=2, window_seconds=0.4) as careful:
            _, records = read_all(careful)
        assert len(records) == PEOPLE and sim.refused == 0
        with connect(sim, page_size=40, requests_per_window=1000) as hasty:
            _, records = read_all(hasty)
        assert len(records) == PEOPLE and sim.refused > 0
    finally:
        sim.stop()


def test_the_throttle_waits_for_the_oldest_call_to_leave_the_window():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(2, 10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        throttle.wait()
        now[0] += 1.0
    assert slept == [8.0]


def test_every_contact_maps_to_a_valid_member(world, reader):
    mapping = load_mapping(MAPPINGS_DIR / "hubspot" / "contacts.yaml")
    with connect(reader, page_size=100) as connector:
        _, records = read_all(connector)
    members = [Member(**mapping.apply(record)) for record in records]
    people = {p.person_id: p for p in world.people}
    truth = reader.truth()
    for member in members:
        person = people[truth[member.source_id]]
        assert member.channel == "crm" and member.updated_at is not None and member.updated_at.tzinfo
        assert member.phone or member.email
        if member.email:
            assert member.email.lower() == person.email.lower()
    assert sum(m.birthday is not None for m in members) > PEOPLE // 2


# ----------------------------------------------------------------------------------- write-back
def update(contact, points, tier="gold", label="金卡", member=None):
    return WritebackUpdate(
        member_id=member or f"M-{contact}", external_id=contact, points=points, tier=tier, tier_label=label
    )


def test_push_creates_the_properties_once_and_writes_points_and_tier(sim):
    contacts = sorted(sim.truth())
    with connect(sim) as connector:
        results = connector.push([update(c, 100 + i, "silver", "银卡") for i, c in enumerate(contacts[:3])])
        assert all(r.ok for r in results) and [r.external_id for r in results] == contacts[:3]
        assert sim.requests["POST /crm/v3/properties/contacts"] == 3
        connector.push([update(contacts[0], 5000, "gold", "金卡")])
        assert sim.requests["POST /crm/v3/properties/contacts"] == 3
        assert sim.requests["PATCH /crm/v3/properties/contacts/(?P<name>[^/]+)"] == 1  # gold became an option
    shown = sim.loyalty()
    assert shown[contacts[0]] == (5000, "gold") and shown[contacts[1]] == (101, "silver")
    assert shown[contacts[3]] == (None, None)
    assert sim.contact(contacts[1])["loyalty_member_id"] == f"M-{contacts[1]}"
    with connect(sim) as fresh:  # another run: the properties exist (409), nothing is lost
        assert all(r.ok for r in fresh.push([update(contacts[2], 7, "silver", "银卡")]))
    assert sim.loyalty()[contacts[2]] == (7, "silver")


def test_more_than_a_hundred_updates_go_in_batches(sim):
    contacts = sorted(sim.truth())
    with connect(sim) as connector:
        results = connector.push([update(c, i) for i, c in enumerate(contacts)])
    assert len(results) == PEOPLE and all(r.ok for r in results)
    assert sim.requests["POST /crm/v3/objects/contacts/batch/update"] == 2
    assert sim.loyalty()[contacts[-1]] == (PEOPLE - 1, "gold")


def test_a_partial_failure_is_reported_per_row(sim):
    first, second, third = sorted(sim.truth())[:3]
    updates = [
        update(first, 10, member="M-1"),
        update("999999", 10, member="M-2"),
        update(second, 20, member="M-1"),  # the member id is unique: first holds it
        update(third, 30, member="M-3"),
    ]
    with connect(sim) as connector:
        results = connector.push(updates)
    assert [r.ok for r in results] == [True, False, False, True]
    assert "OBJECT_NOT_FOUND" in results[1].error
    assert "ALREADY_HAS_UNIQUE_VALUE" in results[2].error
    assert sim.loyalty()[first] == (10, "gold") and sim.loyalty()[second] == (None, None)


def test_pushed_values_come_back_on_the_next_incremental_read(sim):
    sim.bump_modified = True  # HubSpot moves lastmodifieddate on every write
    contact = sorted(sim.truth())[0]
    started = datetime.now(UTC) - timedelta(seconds=1)
    with connect(sim) as connector:
        connector.push([update(contact, 42)])
        _, records = read_all(connector, started.isoformat())
    assert [r["id"] for r in records] == [contact]
    assert records[0]["properties"]["lastmodifieddate"] == sim.contact(contact)["lastmodifieddate"]


def test_written_values_survive_a_simulator_restart(world, tmp_path: Path):
    sim = simulator(world, state_dir=tmp_path)
    contact = sorted(sim.truth())[4]
    with connect(sim) as connector:
        assert connector.push([update(contact, 321, "diamond", "钻石")])[0].ok
    sim.stop()
    again = simulator(world, state_dir=tmp_path)
    try:
        assert again.loyalty()[contact] == (321, "diamond")
        with connect(again) as connector:
            assert connector.push([update(contact, 322, "diamond", "钻石")])[0].ok
        assert again.requests["PATCH /crm/v3/properties/contacts/(?P<name>[^/]+)"] == 0
    finally:
        again.stop()
