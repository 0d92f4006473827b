"""The Square simulator keeps the real API's contract, checked against Square's official OpenAPI
spec: every response below validates against its schema, strictly (no field the spec lacks)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft4Validator

from connectors.simulators import STORES, TOKENS, generate_world
from connectors.simulators.square import SquareSimulator, e164

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
SPEC = SPECS / "square-customers-orders-loyalty.openapi.json"


# ------------------------------------------------------------------------------ the official spec
def _convert(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema draft 4: ``nullable`` becomes a null type (or ``anyOf`` beside a
    ``$ref``), and an object that lists its properties admits no others (strict)."""
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "readOnly", "writeOnly", "example", "description") or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: _convert(schema) for name, schema in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _convert(value)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "$ref" in out:
            return {"anyOf": [{"$ref": out["$ref"]}, {"type": "null"}]}
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
    return out


@cache
def _components() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.fail(f"the official Square spec is missing: expected {SPEC} (shared/specs beside the repo)")
    spec = json.loads(SPEC.read_text())
    return {"schemas": {name: _convert(schema) for name, schema in spec["components"]["schemas"].items()}}


def conforms(name: str, body: Any) -> None:
    """Fail with every violation when ``body`` is not a valid ``components/schemas/{name}``."""
    validator = Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": _components()})
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:10])


def test_the_validator_is_strict():
    with pytest.raises(AssertionError, match="Additional properties"):
        conforms("Money", {"amount": 1, "currency": "CNY", "cents": 100})
    with pytest.raises(AssertionError):
        conforms("Error", {"category": "RATE_LIMIT_ERROR", "code": "SLOW_DOWN"})
    with pytest.raises(AssertionError, match="quantity"):  # through Order -> OrderLineItem
        conforms("SearchOrdersResponse", {"orders": [{"location_id": "L", "line_items": [{"quantity": 2}]}]})
    conforms("Customer", {"id": "X", "given_name": None})  # nullable


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world():
    return generate_world(260, seed=3)


@pytest.fixture
def sim(world):
    simulator = SquareSimulator(world, token=TOKENS["square"], enrolled_share=0.2)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def http(sim):
    headers = {"Authorization": f"Bearer {TOKENS['square']}", "Square-Version": "2025-08-20"}
    with httpx.Client(base_url=sim.base_url, headers=headers) as client:
        yield client


def refused(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    conforms("SearchOrdersResponse", body)  # any response's errors list has the same shape
    [error] = body["errors"]
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------ identity
def test_ids_are_square_shaped_and_stable(world, sim):
    again = SquareSimulator(world, token="x")
    assert list(again.customers) == list(sim.customers) and list(again.orders) == list(sim.orders)
    assert all(re.fullmatch(r"[A-Z0-9]{26}", cid) for cid in sim.customers)
    assert set(sim.truth().values()) == {m.person_id for m in world.members["square"]}
    other = SquareSimulator(generate_world(260, seed=4), token="x")
    assert not set(other.customers) & set(sim.customers)


def test_auth_errors_and_rate_limit_have_the_real_shape(sim, http):
    missing = httpx.get(f"{sim.base_url}/v2/customers")
    assert refused(missing, 401, "UNAUTHORIZED")["category"] == "AUTHENTICATION_ERROR"
    refused(http.get("/v2/customers", headers={"Authorization": "Bearer nope"}), 401, "UNAUTHORIZED")
    sim.faults.rate_limit = 1
    limited = http.get("/v2/customers")
    assert refused(limited, 429, "RATE_LIMITED")["category"] == "RATE_LIMIT_ERROR"
    assert "retry-after" not in limited.headers
    sim.faults.errors = 1
    refused(http.get("/v2/customers"), 500, "INTERNAL_SERVER_ERROR")
    refused(http.get("/v2/nothing-here"), 404, "NOT_FOUND")
    refused(http.post("/v2/customers/search", content=b"[1, 2"), 400, "EXPECTED_JSON_BODY")


def test_locations_are_the_five_stores(sim, http):
    body = http.get("/v2/locations").json()
    conforms("ListLocationsResponse", body)
    expected = [s.square_location for s in STORES if s.square_location]
    assert [loc["id"] for loc in body["locations"]] == expected == sim.connector_settings()["locations"]


# ------------------------------------------------------------------------------ customers
def test_customer_list_pages_through_everyone_once(sim, http):
    seen, cursor, pages = [], None, 0
    while True:
        body = http.get("/v2/customers", params={"limit": 9, **({"cursor": cursor} if cursor else {})}).json()
        conforms("ListCustomersResponse", body)
        seen += [c["id"] for c in body["customers"]]
        pages += 1
        cursor = body.get("cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted(sim.customers) and len(seen) == len(set(seen)) and pages > 5
    names = [(sim.customers[c].get("given_name", ""), sim.customers[c].get("family_name", "")) for c in seen]
    assert names == sorted(names)  # DEFAULT sort: given name, then family name


@pytest.mark.parametrize(("limit", "code"), [(0, "VALUE_TOO_LOW"), (101, "VALUE_TOO_HIGH")])
def test_customer_limit_outside_1_to_100_is_refused(http, limit, code):
    refused(http.get("/v2/customers", params={"limit": limit}), 400, code, "limit")


def test_customer_search_by_updated_at_sorted_by_creation(sim, http):
    times = sorted(moment(c["updated_at"]) for c in sim.customers.values())
    start = times[len(times) // 2]
    query = {"filter": {"updated_at": {"start_at": start.isoformat()}}, "sort": {"field": "CREATED_AT", "order": "ASC"}}
    request = {"limit": 7, "query": query}
    conforms("SearchCustomersRequest", request)
    found, cursor = [], None
    while True:
        body = http.post("/v2/customers/search", json={**request, **({"cursor": cursor} if cursor else {})}).json()
        conforms("SearchCustomersResponse", body)
        found += body.get("customers", [])
        cursor = body.get("cursor")
        if not cursor:
            break
    assert {c["id"] for c in found} == {c["id"] for c in sim.customers.values() if moment(c["updated_at"]) >= start}
    created = [moment(c["created_at"]) for c in found]
    assert created == sorted(created)


def test_empty_search_leaves_the_customers_key_out(http):
    body = http.post(
        "/v2/customers/search", json={"query": {"filter": {"updated_at": {"start_at": "2099-01-01T00:00:00Z"}}}}
    ).json()
    assert body == {}
    conforms("SearchCustomersResponse", body)


def test_a_cursor_only_works_with_its_own_query(http):
    first = http.post("/v2/customers/search", json={"limit": 5}).json()
    other = {"limit": 5, "cursor": first["cursor"], "query": {"sort": {"field": "CREATED_AT"}}}
    refused(http.post("/v2/customers/search", json=other), 400, "INVALID_CURSOR", "cursor")


def test_reference_id_can_be_written_and_is_kept(world, tmp_path):
    first = SquareSimulator(world, token="t", state_dir=tmp_path)
    first.start()
    cid = next(iter(first.customers))
    with httpx.Client(base_url=first.base_url, headers={"Authorization": "Bearer t"}) as client:
        body = client.put(f"/v2/customers/{cid}", json={"reference_id": "M-000042"}).json()
    conforms("RetrieveCustomerResponse", body)
    assert body["customer"]["reference_id"] == "M-000042" and body["customer"]["version"] >= 1
    first.stop()
    second = SquareSimulator(world, token="t", state_dir=tmp_path)
    second.start()
    try:
        assert second.customers[cid]["reference_id"] == "M-000042"
    finally:
        second.stop()


# ------------------------------------------------------------------------------ orders
def search_orders(http, body):
    found, cursor = [], None
    while True:
        answer = http.post("/v2/orders/search", json={**body, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        data = answer.json()
        conforms("SearchOrdersResponse", data)
        found += data.get("orders", [])
        cursor = data.get("cursor")
        if not cursor:
            return found


def test_orders_search_by_updated_at_ascending_over_locations(sim, http):
    times = sorted(moment(o["updated_at"]) for o in sim.orders.values())
    start = times[len(times) // 3]
    locations = sim.location_ids[:3]
    body = {
        "location_ids": locations,
        "limit": 11,
        "query": {
            "filter": {"date_time_filter": {"updated_at": {"start_at": start.isoformat()}}},
            "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"},
        },
    }
    conforms("SearchOrdersRequest", body)
    found = search_orders(http, body)
    expected = {
        o["id"] for o in sim.orders.values() if o["location_id"] in locations and moment(o["updated_at"]) >= start
    }
    assert [o["id"] for o in found if o["id"] in expected] == [o["id"] for o in found]
    assert {o["id"] for o in found} == expected and len(found) == len(expected)
    updated = [moment(o["updated_at"]) for o in found]
    assert updated == sorted(updated)


def test_order_shapes_money_quantities_refunds(sim):
    orders = list(sim.orders.values())
    for order in orders:
        assert isinstance(order["total_money"]["amount"], int) and order["total_money"]["currency"] == "CNY"
        assert all(isinstance(li["quantity"], str) for li in order["line_items"])
        assert order["total_money"]["amount"] == sum(
            li["base_price_money"]["amount"] * int(li["quantity"]) for li in order["line_items"]
        )
    assert {o["state"] for o in orders} == {"COMPLETED", "CANCELED"}
    refunded = [o for o in orders if "refunds" in o]
    assert refunded
    for order in refunded:
        back = order["return_amounts"]["total_money"]["amount"]
        assert back == sum(r["amount_money"]["amount"] for r in order["refunds"]) > 0
        assert order["net_amounts"]["total_money"]["amount"] == order["total_money"]["amount"] - back
    sample = orders[:20] + refunded + [o for o in orders if o["state"] == "CANCELED"]
    conforms("SearchOrdersResponse", {"orders": sample})


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"location_ids": None}, "MISSING_REQUIRED_PARAMETER", "location_ids"),
        ({"location_ids": ["L"] * 11}, "ARRAY_LENGTH_TOO_LONG", "location_ids"),
        ({"location_ids": ["LNOTOURS00000"]}, "INVALID_LOCATION", "location_ids"),
        ({"limit": 1001}, "VALUE_TOO_HIGH", "limit"),
        (
            {
                "query": {
                    "filter": {"date_time_filter": {"updated_at": {"start_at": "2025-01-01T00:00:00Z"}}},
                    "sort": {"sort_field": "CREATED_AT", "sort_order": "ASC"},
                }
            },
            "INVALID_VALUE",
            "query.sort.sort_field",
        ),
        ({"query": {"sort": {"sort_order": "ASC"}}}, "MISSING_REQUIRED_PARAMETER", "query.sort.sort_field"),
        (
            {
                "query": {
                    "filter": {"date_time_filter": {"updated_at": {"start_at": "yesterday"}}},
                    "sort": {"sort_field": "UPDATED_AT"},
                }
            },
            "INVALID_TIME",
            "query.filter.date_time_filter.updated_at.start_at",
        ),
    ],
)
def test_orders_search_refusals(sim, http, change, code, field):
    body = {"location_ids": sim.location_ids, "limit": 10, **change}
    refused(http.post("/v2/orders/search", json={k: v for k, v in body.items() if v is not None}), 400, code, field)


def test_orders_cursor_is_tied_to_its_query(sim, http):
    body = {"location_ids": sim.location_ids, "limit": 5}
    first = http.post("/v2/orders/search", json=body).json()
    moved = {**body, "location_ids": sim.location_ids[:2], "cursor": first["cursor"]}
    refused(http.post("/v2/orders/search", json=moved), 400, "INVALID_CURSOR", "cursor")


# ------------------------------------------------------------------------------ loyalty
def test_program_main(sim, http):
    body = http.get("/v2/loyalty/programs/main").json()
    conforms("RetrieveLoyaltyProgramResponse", body)
    assert body["program"]["status"] == "ACTIVE" and body["program"]["location_ids"] == sim.location_ids
    conforms("ListLoyaltyProgramsResponse", http.get("/v2/loyalty/programs").json())


def unenrolled_customer(sim) -> dict[str, Any]:
    enrolled = {a.get("customer_id") for a in sim.accounts.values()}
    return next(c for c in sim.customers.values() if c.get("phone_number") and c["id"] not in enrolled)


def test_enrol_search_and_adjust_with_idempotency(sim, http):
    customer = unenrolled_customer(sim)
    program = http.get("/v2/loyalty/programs/main").json()["program"]["id"]
    phone = e164(customer["phone_number"])
    request = {
        "loyalty_account": {"program_id": program, "mapping": {"phone_number": phone}},
        "idempotency_key": "enrol-1",
    }
    conforms("CreateLoyaltyAccountRequest", request)
    created = http.post("/v2/loyalty/accounts", json=request).json()
    conforms("CreateLoyaltyAccountResponse", created)
    account = created["loyalty_account"]
    assert account["customer_id"] == customer["id"] and account["balance"] == 0
    assert http.post("/v2/loyalty/accounts", json=request).json() == created  # same key, same answer
    conflict = {**request, "idempotency_key": "enrol-2"}
    refused(http.post("/v2/loyalty/accounts", json=conflict), 409, "CONFLICT")

    by_customer = http.post("/v2/loyalty/accounts/search", json={"query": {"customer_ids": [customer["id"]]}}).json()
    by_phone = http.post("/v2/loyalty/accounts/search", json={"query": {"mappings": [{"phone_number": phone}]}}).json()
    conforms("SearchLoyaltyAccountsResponse", by_customer)
    assert (
        [a["id"] for a in by_customer["loyalty_accounts"]]
        == [a["id"] for a in by_phone["loyalty_accounts"]]
        == [account["id"]]
    )

    adjust = {"idempotency_key": "adj-1", "adjust_points": {"points": 250, "reason": "hub"}}
    conforms("AdjustLoyaltyPointsRequest", adjust)
    first = http.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=adjust).json()
    conforms("AdjustLoyaltyPointsResponse", first)
    again = http.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=adjust).json()
    assert again == first and sim.accounts[account["id"]]["balance"] == 250  # applied once
    changed = {**adjust, "adjust_points": {"points": 300, "reason": "hub"}}
    refused(http.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=changed), 400, "IDEMPOTENCY_KEY_REUSED")
    overdraw = {"idempotency_key": "adj-2", "adjust_points": {"points": -251}}
    refused(http.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=overdraw), 400, "BAD_REQUEST")
    assert sim.loyalty()[customer["id"]] == (250, None)

    events = http.post(
        "/v2/loyalty/events/search",
        json={"query": {"filter": {"loyalty_account_filter": {"loyalty_account_id": account["id"]}}}},
    ).json()
    conforms("SearchLoyaltyEventsResponse", events)
    assert [(e["type"], e["adjust_points"]["points"]) for e in events["events"]] == [("ADJUST_POINTS", 250)]


def test_enrolment_refusals(sim, http):
    program = sim.program["id"]
    bad_phone = {
        "loyalty_account": {"program_id": program, "mapping": {"phone_number": "138 0000"}},
        "idempotency_key": "a",
    }
    refused(http.post("/v2/loyalty/accounts", json=bad_phone), 400, "INVALID_PHONE_NUMBER")
    no_key = {"loyalty_account": {"program_id": program, "mapping": {"phone_number": "+8613800000000"}}}
    refused(http.post("/v2/loyalty/accounts", json=no_key), 400, "MISSING_REQUIRED_PARAMETER", "idempotency_key")
    many = {"query": {"customer_ids": ["X"] * 31}}
    refused(http.post("/v2/loyalty/accounts/search", json=many), 400, "ARRAY_LENGTH_TOO_LONG")
    refused(
        http.post("/v2/loyalty/accounts/NOPE/adjust", json={"idempotency_key": "k", "adjust_points": {"points": 1}}),
        404,
        "NOT_FOUND",
    )


def test_till_enrolments_and_their_events(sim, http):
    assert sim.accounts, "some customers joined the programme at the till"
    account = next(a for a in sim.accounts.values() if a["balance"] > 0)
    events = http.post(
        "/v2/loyalty/events/search",
        json={"limit": 30, "query": {"filter": {"loyalty_account_filter": {"loyalty_account_id": account["id"]}}}},
    ).json()
    conforms("SearchLoyaltyEventsResponse", events)
    assert sum(e["accumulate_points"]["points"] for e in events["events"]) == account["balance"]
    assert sim.loyalty()[account["customer_id"]] == (account["balance"], None)


def test_tier_custom_attribute_upsert_and_read(sim, http):
    definition = {
        "custom_attribute_definition": {
            "key": "loyalty_tier",
            "name": "tier",
            "schema": {
                "$ref": "https://developer-production-s.squarecdn.com/schemas/v1/common.json#squareup.common.String"
            },
            "visibility": "VISIBILITY_READ_ONLY",
        },
        "idempotency_key": "def-1",
    }
    conforms("CreateCustomerCustomAttributeDefinitionRequest", definition)
    customers = list(sim.customers)[:3]
    early = {
        "values": {"a": {"customer_id": customers[0], "custom_attribute": {"key": "loyalty_tier", "value": "gold"}}}
    }
    assert (
        http.post("/v2/customers/custom-attributes/bulk-upsert", json=early).json()["values"]["a"]["errors"][0]["code"]
        == "NOT_FOUND"
    )
    made = http.post("/v2/customers/custom-attribute-definitions", json=definition).json()
    conforms("RetrieveCustomerCustomAttributeDefinitionResponse", made)

    values = {
        str(i): {
            "customer_id": cid,
            "custom_attribute": {"key": "loyalty_tier", "value": "gold"},
            "idempotency_key": f"t{i}",
        }
        for i, cid in enumerate(customers)
    }
    values["bad"] = {"customer_id": "NOPE", "custom_attribute": {"key": "loyalty_tier", "value": "gold"}}
    request = {"values": values}
    conforms("BulkUpsertCustomerCustomAttributesRequest", request)
    body = http.post("/v2/customers/custom-attributes/bulk-upsert", json=request).json()
    conforms("BulkUpsertCustomerCustomAttributesResponse", body)
    assert body["values"]["bad"]["errors"][0]["code"] == "NOT_FOUND"
    assert all(body["values"][str(i)]["custom_attribute"]["value"] == "gold" for i in range(3))
    del values["bad"]
    again = http.post("/v2/customers/custom-attributes/bulk-upsert", json={"values": values}).json()
    assert again["values"]["0"] == body["values"]["0"]  # same key: same version, not applied twice
    reused = {"0": {**values["0"], "custom_attribute": {"key": "loyalty_tier", "value": "silver"}}}
    answer = http.post("/v2/customers/custom-attributes/bulk-upsert", json={"values": reused}).json()
    assert answer["values"]["0"]["errors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"

    read = http.get(f"/v2/customers/{customers[0]}/custom-attributes/loyalty_tier").json()
    conforms("RetrieveCustomerCustomAttributeResponse", read)
    assert read["custom_attribute"]["value"] == "gold"
    refused(http.get(f"/v2/customers/{customers[0]}/custom-attributes/nothing"), 404, "NOT_FOUND")
    too_many = {"values": {str(i): values["0"] for i in range(26)}}
    refused(
        http.post("/v2/customers/custom-attributes/bulk-upsert", json=too_many), 400, "TOO_MANY_MAP_ENTRIES", "values"
    )
    assert sim.loyalty()[customers[1]][1] == "gold"


def test_loyalty_writes_survive_a_restart(world, tmp_path):
    first = SquareSimulator(world, token="t", state_dir=tmp_path, enrolled_share=0)
    first.start()
    customer = unenrolled_customer(first)
    request = {
        "loyalty_account": {
            "program_id": first.program["id"],
            "mapping": {"phone_number": e164(customer["phone_number"])},
        },
        "idempotency_key": "enrol",
    }
    with httpx.Client(base_url=first.base_url, headers={"Authorization": "Bearer t"}) as client:
        account = client.post("/v2/loyalty/accounts", json=request).json()["loyalty_account"]
        adjust = {"idempotency_key": "adj", "adjust_points": {"points": 40}}
        client.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=adjust)
    first.stop()
    second = SquareSimulator(world, token="t", state_dir=tmp_path, enrolled_share=0)
    second.start()
    try:
        assert second.loyalty()[customer["id"]] == (40, None)
        with httpx.Client(base_url=second.base_url, headers={"Authorization": "Bearer t"}) as client:
            client.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=adjust)  # replayed after the restart
            changed = {"idempotency_key": "adj", "adjust_points": {"points": 41}}
            reuse = client.post(f"/v2/loyalty/accounts/{account['id']}/adjust", json=changed)
        assert second.loyalty()[customer["id"]] == (40, None)
        assert reuse.json()["errors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    finally:
        second.stop()
