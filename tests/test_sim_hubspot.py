"""The HubSpot simulator over real HTTP: paging, search and its 10,000 cap, the rolling rate limit,
properties, batch writes with partial failure, persistence — every answer checked against HubSpot's
own OpenAPI schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import pytest

from connectors.simulators import TOKENS
from connectors.simulators._world import generate_world
from connectors.simulators.hubspot import HubSpotSimulator

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
CONTACTS = "/crm/v3/objects/contacts"


def _spec(name: str) -> dict:
    path = SPECS / name
    if not path.exists():
        pytest.fail(f"the official HubSpot spec {path} is missing: it belongs beside API_NOTES.md in shared/specs")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def specs() -> dict[str, dict]:
    return {
        "contacts": _spec("hubspot-crm-contacts-v3.openapi.json"),
        "properties": _spec("hubspot-crm-properties-v3.openapi.json"),
    }


def conforms(specs: dict[str, dict], spec: str, schema: str, document: object) -> None:
    """``document`` is valid against ``#/components/schemas/<schema>`` of the named official spec."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": specs[spec]["components"]}
    jsonschema.validate(document, root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def world():
    return generate_world(120, 21, systems=("hubspot",))


def started(world, **options) -> HubSpotSimulator:
    sim = HubSpotSimulator(world, token=TOKENS["hubspot"], **options)
    sim.start()
    return sim


@pytest.fixture
def sim(world):
    running = started(world)
    yield running
    running.stop()


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}) as client:
        yield client


@pytest.fixture(scope="module")
def reader(world):
    """One simulator for the tests that only read."""
    running = started(world)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def read(reader):
    with httpx.Client(base_url=reader.base_url, headers={"Authorization": f"Bearer {reader.token}"}) as client:
        yield client


def all_pages(http, params):
    pages, after = [], None
    while True:
        response = http.get(CONTACTS, params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200
        pages.append(response.json())
        paging = response.json().get("paging")
        if not paging:
            return pages
        after = paging["next"]["after"]


def search(http, body):
    return http.post(f"{CONTACTS}/search", json=body)


def since_query(ms, after="0", limit=50, **extra):
    return {
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(ms)}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email", "lastmodifieddate"],
        "limit": limit,
        "after": after,
        **extra,
    }


def epoch_ms(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


# ----------------------------------------------------------------------------------- reading
def test_list_pages_every_contact_once_and_the_last_page_has_no_paging(specs, reader, read):
    pages = all_pages(read, {"limit": 25, "properties": "email,firstname,lastmodifieddate"})
    for page in pages:
        conforms(specs, "contacts", "CollectionResponseSimplePublicObjectWithAssociationsForwardPaging", page)
    ids = [r["id"] for page in pages for r in page["results"]]
    assert sorted(ids) == sorted(reader.truth()) and len(ids) == len(set(ids)) == 120
    assert len(pages) == 5 and "paging" not in pages[-1]
    assert pages[0]["paging"]["next"]["link"].startswith(reader.base_url)
    assert set(pages[0]["results"][0]["properties"]) <= {"email", "firstname", "lastmodifieddate"}


def test_list_without_properties_returns_hubspots_default_set(read):
    contact = read.get(CONTACTS, params={"limit": 1}).json()["results"][0]
    assert set(contact["properties"]) <= {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert contact["properties"]["hs_object_id"] == contact["id"]
    assert contact["updatedAt"] == contact["properties"]["lastmodifieddate"]


@pytest.mark.parametrize("params", [{"limit": 101}, {"limit": 0}, {"after": "abc"}])
def test_list_refuses_bad_paging_with_hubspots_error(specs, read, params):
    response = read.get(CONTACTS, params=params)
    assert response.status_code == 400
    conforms(specs, "contacts", "Error", response.json())
    assert response.json()["category"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token"])
def test_a_missing_or_wrong_token_is_401_invalid_authentication(specs, reader, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{reader.base_url}{CONTACTS}", headers=headers)
    assert response.status_code == 401
    conforms(specs, "contacts", "Error", response.json())
    assert response.json()["category"] == "INVALID_AUTHENTICATION"


def test_search_filters_on_lastmodifieddate_and_sorts_ascending(specs, reader, read):
    everything = [
        r for page in all_pages(read, {"limit": 100, "properties": "lastmodifieddate"}) for r in page["results"]
    ]
    stamps = sorted(epoch_ms(r["properties"]["lastmodifieddate"]) for r in everything)
    middle = stamps[60]
    response = search(read, since_query(middle, limit=200))
    assert response.status_code == 200
    body = response.json()
    conforms(specs, "contacts", "CollectionResponseWithTotalSimplePublicObject", body)
    got = [epoch_ms(r["properties"]["lastmodifieddate"]) for r in body["results"]]
    assert got == sorted(got) and min(got) >= middle
    assert body["total"] == len(got) == sum(1 for s in stamps if s >= middle)
    assert "paging" not in body


def test_search_pages_by_offset_and_ands_filters_within_a_group(read):
    first = search(read, since_query(0, limit=50)).json()
    assert first["total"] == 120 and first["paging"]["next"]["after"] == "50"
    second = search(read, since_query(0, after="50", limit=50)).json()
    assert {r["id"] for r in first["results"]}.isdisjoint({r["id"] for r in second["results"]})
    email = first["results"][0]["properties"]["email"]
    both = since_query(0)
    both["filterGroups"][0]["filters"].append({"propertyName": "email", "operator": "EQ", "value": email.upper()})
    assert [r["id"] for r in search(read, both).json()["results"]] == [first["results"][0]["id"]]


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 201},
        {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]},
        {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "SOUNDS_LIKE", "value": "x"}]}]},
        {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "soon"}]}]},
        {"sorts": ["email", "lastmodifieddate"]},
    ],
)
def test_search_refuses_what_hubspot_refuses(specs, read, change):
    response = search(read, {**since_query(0), **change})
    assert response.status_code == 400
    conforms(specs, "contacts", "Error", response.json())


def test_search_stops_at_its_cap_with_a_400(specs, world):
    sim = started(world, search_cap=30)
    try:
        with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}) as http:
            page = search(http, since_query(0, after="20", limit=20)).json()
            assert len(page["results"]) == 10 and page["paging"]["next"]["after"] == "30"
            beyond = search(http, since_query(0, after="30", limit=20))
            assert beyond.status_code == 400
            conforms(specs, "contacts", "Error", beyond.json())
            assert "30" in beyond.json()["message"]
    finally:
        sim.stop()


# ----------------------------------------------------------------------------------- rate limit
def test_rolling_window_answers_429_with_hubspots_body_and_headers(world):
    sim = started(world, rate_limit=3, rate_window=60.0)
    try:
        with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}) as http:
            answers = [http.get(CONTACTS, params={"limit": 1}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        for answer in answers:
            assert answer.headers["X-HubSpot-RateLimit-Max"] == "3"
            assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "60000"
            assert "X-HubSpot-RateLimit-Daily-Remaining" in answer.headers
        body = answers[-1].json()
        assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert "Retry-After" not in answers[-1].headers
        assert sim.refused == 1
    finally:
        sim.stop()


def test_the_rate_limit_fault_answers_429(sim, http):
    sim.faults.rate_limit = 1
    assert http.get(CONTACTS).status_code == 429
    assert http.get(CONTACTS).status_code == 200


# ----------------------------------------------------------------------------------- properties
TIER = {
    "name": "loyalty_tier",
    "label": "Loyalty tier",
    "type": "enumeration",
    "fieldType": "select",
    "groupName": "contactinformation",
    "options": [
        {"label": "普通", "value": "regular", "hidden": False},
        {"label": "金卡", "value": "gold", "hidden": False},
    ],
}
POINTS = {
    "name": "loyalty_points",
    "label": "Points",
    "type": "number",
    "fieldType": "number",
    "groupName": "contactinformation",
}
MEMBER = {
    "name": "loyalty_member_id",
    "label": "Member",
    "type": "string",
    "fieldType": "text",
    "groupName": "contactinformation",
    "hasUniqueValue": True,
}


def create_properties(http):
    for spec in (TIER, POINTS, MEMBER):
        assert http.post("/crm/v3/properties/contacts", json=spec).status_code == 201


def test_a_property_is_created_once_then_409(specs, http):
    created = http.post("/crm/v3/properties/contacts", json=TIER)
    assert created.status_code == 201
    conforms(specs, "properties", "Property", created.json())
    again = http.post("/crm/v3/properties/contacts", json=TIER)
    assert again.status_code == 409
    conforms(specs, "properties", "Error", again.json())
    assert again.json()["category"] == "OBJECT_ALREADY_EXISTS"
    fetched = http.get("/crm/v3/properties/contacts/loyalty_tier")
    assert fetched.status_code == 200 and [o["value"] for o in fetched.json()["options"]] == ["regular", "gold"]
    conforms(specs, "properties", "Property", fetched.json())
    listed = http.get("/crm/v3/properties/contacts").json()
    conforms(specs, "properties", "CollectionResponsePropertyNoPaging", listed)
    assert http.get("/crm/v3/properties/contacts/nope").status_code == 404


@pytest.mark.parametrize(
    "change",
    [{"type": "money"}, {"fieldType": "slider"}, {"name": "Loyalty Points"}, {"options": []}, {"label": ""}],
)
def test_property_create_validates_its_body(specs, http, change):
    response = http.post("/crm/v3/properties/contacts", json={**TIER, **change})
    assert response.status_code == 400
    conforms(specs, "properties", "Error", response.json())


# ----------------------------------------------------------------------------------- batch writes
def test_batch_update_writes_strings_and_moves_lastmodifieddate(specs, sim, http):
    sim.bump_modified = True  # as HubSpot itself does
    create_properties(http)
    contact = sorted(sim.truth())[0]
    before = sim.contact(contact)["lastmodifieddate"]
    inputs = [
        {"id": contact, "properties": {"loyalty_points": "1250", "loyalty_tier": "gold", "loyalty_member_id": "M1"}}
    ]
    response = http.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})
    assert response.status_code == 200
    conforms(specs, "contacts", "BatchResponseSimplePublicObject", response.json())
    assert sim.loyalty()[contact] == (1250, "gold")
    after = sim.contact(contact)["lastmodifieddate"]
    assert after > before
    found = search(http, since_query(epoch_ms(after))).json()["results"]
    assert contact in [r["id"] for r in found]


def test_batch_update_partial_failure_is_207_with_one_error_per_row(specs, sim, http):
    create_properties(http)
    first, second, third = sorted(sim.truth())[:3]
    inputs = [
        {"id": first, "properties": {"loyalty_points": "10", "loyalty_member_id": "M1"}},
        {"id": "999999", "properties": {"loyalty_points": "10"}},
        {"id": second, "properties": {"loyalty_tier": "platinum"}},
        {"id": third, "properties": {"loyalty_member_id": "M1"}},  # unique: first holds it already
    ]
    response = http.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    body = response.json()
    conforms(specs, "contacts", "BatchResponseSimplePublicObjectWithErrors", body)
    assert body["numErrors"] == 3 and [r["id"] for r in body["results"]] == [first]
    failed = {e["context"]["ids"][0]: e for e in body["errors"]}
    assert failed["999999"]["category"] == "OBJECT_NOT_FOUND"
    assert "INVALID_OPTION" in failed[second]["message"]
    assert "ALREADY_HAS_UNIQUE_VALUE" in failed[third]["message"]
    assert sim.loyalty()[second] == (None, None)


@pytest.mark.parametrize(
    "inputs",
    [
        [{"id": "1001", "properties": {"loyalty_points": 10}}],  # not a string
        [{"id": "1001", "properties": {"no_such_property": "x"}}],
        [{"id": "1001", "properties": {"email": "a@b.cn"}}] * 2,  # the same id twice
        [{"id": str(i), "properties": {"email": f"{i}@b.cn"}} for i in range(101)],
        [{"properties": {"email": "a@b.cn"}}],
    ],
)
def test_batch_update_refuses_a_malformed_body_whole(specs, http, inputs):
    create_properties(http)
    response = http.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})
    assert response.status_code == 400
    conforms(specs, "contacts", "Error", response.json())


def test_batch_upsert_by_email_updates_or_creates(specs, sim, http):
    create_properties(http)
    contact = sorted(sim.truth())[0]
    email = sim.contact(contact)["email"]
    inputs = [
        {"id": email.upper(), "idProperty": "email", "properties": {"loyalty_points": "7"}},
        {"id": "new.member@example.com", "idProperty": "email", "properties": {"loyalty_points": "3"}},
    ]
    response = http.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 200
    body = response.json()
    conforms(specs, "contacts", "BatchResponseSimplePublicUpsertObject", body)
    assert [r["new"] for r in body["results"]] == [False, True]
    assert body["results"][0]["id"] == contact and sim.loyalty()[contact] == (7, None)
    created = body["results"][1]["id"]
    assert sim.contact(created)["email"] == "new.member@example.com"

    bad = [{"id": "x@example.com", "idProperty": "email", "properties": {"loyalty_tier": "bronze"}}]
    partial = http.post(f"{CONTACTS}/batch/upsert", json={"inputs": bad + inputs[:1]})
    assert partial.status_code == 207
    conforms(specs, "contacts", "BatchResponseSimplePublicUpsertObjectWithErrors", partial.json())
    missing_id_property = http.post(f"{CONTACTS}/batch/upsert", json={"inputs": [{"id": "1", "properties": {}}]})
    assert missing_id_property.status_code == 400


def test_writes_survive_a_restart_with_the_same_state_dir(world, tmp_path):
    sim = started(world, state_dir=tmp_path, bump_modified=True)
    contact = sorted(sim.truth())[5]
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}) as http:
        create_properties(http)
        inputs = [{"id": contact, "properties": {"loyalty_points": "88", "loyalty_tier": "gold"}}]
        assert http.post(f"{CONTACTS}/batch/update", json={"inputs": inputs}).status_code == 200
    stamp = sim.contact(contact)["lastmodifieddate"]
    sim.stop()
    again = started(world, state_dir=tmp_path, bump_modified=True)
    try:
        assert again.loyalty()[contact] == (88, "gold")
        assert again.contact(contact)["lastmodifieddate"] == stamp
        with httpx.Client(base_url=again.base_url, headers={"Authorization": f"Bearer {again.token}"}) as http:
            assert http.post("/crm/v3/properties/contacts", json=TIER).status_code == 409
            found = search(http, since_query(epoch_ms(stamp))).json()["results"]
            assert contact in [r["id"] for r in found]
    finally:
        again.stop()


def test_ids_and_truth_are_deterministic(world):
    first, second = HubSpotSimulator(world, token="t"), HubSpotSimulator(world, token="t")
    assert first.truth() == second.truth()
    assert set(first.truth().values()) == {m.person_id for m in world.members["hubspot"]}
    assert all(value == (None, None) for value in first.loyalty().values())


def test_touch_pins_lastmodifieddate(sim):
    contact = sorted(sim.truth())[0]
    sim.touch(contact, datetime(2025, 7, 1, tzinfo=UTC), city="杭州")
    assert sim.contact(contact)["lastmodifieddate"] == "2025-07-01T00:00:00.000Z"
    assert sim.contact(contact)["city"] == "杭州"
