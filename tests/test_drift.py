"""Discovery of source fields while staging, schema drift (a field appearing, disappearing or
changing type), and the mapping commands that use them, on SQLite and PostgreSQL."""

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from connectors import Page
from hub import staging
from hub.cli import app
from hub.db import engine_for
from hub.drift import accept_drift, discovered_fields, field_paths, mapping_reader, schema_drift
from hub.ingest import store_page
from hub.tables import StreamField
from mappings import load_mappings


@pytest.fixture
def sessions(database_url):
    yield sessionmaker(engine_for(database_url), expire_on_commit=False)
    engine_for(database_url).dispose()  # each test has its own database: keep no idle connections


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"id": 1, "name": "x"}, {("id", "number"), ("name", "string")}),
        ({"a": {"b": {"c": True}}}, {("a", "object"), ("a.b", "object"), ("a.b.c", "boolean")}),
        (
            {"items": [{"sku": "A", "qty": 1}, {"sku": None}]},
            {("items", "array"), ("items[].sku", "string"), ("items[].sku", "null"), ("items[].qty", "number")},
        ),
        ({"partner_id": [7, "Name"], "email": False}, {("partner_id", "array"), ("email", "boolean")}),
        ({"amount": 1.5, "gone": None}, {("amount", "number"), ("gone", "null")}),
    ],
)
def test_field_paths(payload, expected):
    assert field_paths(payload) == expected


def customer(i, **fields):
    return {
        "id": i,
        "email": f"c{i}@qq.com",
        "phone": "+8613812345678",
        "first_name": "Fang",
        "last_name": "Wang",
        "created_at": "2025-03-01T08:00:00+08:00",
        "updated_at": "2025-03-01T08:00:00+08:00",
        **fields,
    }


def sync_and_stage(sessions, records):
    with sessions() as session, session.begin():
        store_page(session, "shop", "customers", "id", Page(records))
        staging.stage(session, load_mappings(), {"shop": "shopify"})


def drift(sessions):
    with sessions() as session:
        reads = mapping_reader(load_mappings(), {"shop": "shopify"})
        return [
            (c.path, c.change, c.json_type, c.previous_types, c.severity, c.used_by)
            for c in schema_drift(session, reads=reads, min_absent=5, factor=2)
        ]


def test_drift_reports_fields_that_appear_change_type_or_disappear(sessions):
    sync_and_stage(sessions, [customer(i, note="x") for i in range(10)])  # first discovery: the baseline
    with sessions() as session:
        fields = discovered_fields(session)[("shop", "customers")]
    assert fields["email"] == {"string"} and fields["note"] == {"string"}
    assert drift(sessions) == []

    later = [
        {k: v for k, v in customer(i, tags=["vip"], phone=13812345678).items() if k != "note"} for i in range(10, 20)
    ]
    sync_and_stage(sessions, later)
    assert drift(sessions) == [
        ("phone", "type_changed", "number", ("string",), "error", ("phone",)),
        ("note", "disappeared", "string", (), "warning", ()),
        ("tags", "appeared", "array", (), "warning", ()),
    ]

    with sessions() as session, session.begin():
        accepted = accept_drift(session, connector="shop", path="tags", min_absent=5, factor=2)
    assert [c.path for c in accepted] == ["tags"]
    assert [d[0] for d in drift(sessions)] == ["phone", "note"]
    with sessions() as session, session.begin():
        accept_drift(session, min_absent=5, factor=2)
        assert not session.scalars(select(StreamField).where(StreamField.path == "note")).all()
    assert drift(sessions) == []


def test_a_sparse_field_is_not_reported_gone_after_a_few_records_without_it(sessions):
    sync_and_stage(sessions, [customer(i, **({"vip": True} if i % 10 == 0 else {})) for i in range(100)])
    sync_and_stage(sessions, [customer(i) for i in range(100, 140)])  # 40 without: expected gap is 10
    with sessions() as session:
        gone = [c.path for c in schema_drift(session, min_absent=5, factor=10)]
    assert gone == []
    sync_and_stage(sessions, [customer(i) for i in range(140, 260)])  # now 160 without: that is news
    with sessions() as session:
        assert [(c.path, c.change) for c in schema_drift(session, min_absent=5, factor=10)] == [("vip", "disappeared")]


def test_a_field_that_only_had_nulls_and_now_has_values_is_not_drift(sessions):
    sync_and_stage(sessions, [customer(i, note=None) for i in range(5)])
    sync_and_stage(sessions, [customer(i, note="hello") for i in range(5, 10)])
    assert drift(sessions) == []


def test_validate_checks_mappings_against_discovered_fields(sessions, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    config = tmp_path / "hub.yaml"
    config.write_text("connectors:\n  shop:\n    kind: shopify\n    base_url: http://127.0.0.1:9\n")
    runner = CliRunner()
    before = runner.invoke(app, ["--config", str(config), "mappings", "validate", "--json"])
    assert before.exit_code == 0, before.output
    report = {r["file"]: r for r in json.loads(before.output)["files"]}
    assert report["shopify/customers.yaml"]["note"].startswith("source fields not checked: nothing discovered")

    sync_and_stage(sessions, [{k: v for k, v in customer(1).items() if k != "first_name"} | {"firstname": "F"}])
    after = runner.invoke(app, ["--config", str(config), "mappings", "validate"])
    assert after.exit_code == 1
    assert (
        "shopify/customers.yaml:9:15: given_name: unknown source field 'first_name' (not seen in shop.customers)"
        in (after.output.replace("\n", ""))
    )
    assert "did you mean 'firstname'?" in after.output.replace("\n", "")

    preview = runner.invoke(
        app, ["--config", str(config), "mappings", "preview", "shop.customers", "--limit", "1", "--json"]
    )
    assert preview.exit_code == 0, preview.output
    shown = json.loads(preview.output)["records"][0]
    fields = {f["target"]: f for f in shown["fields"]}
    assert fields["email"]["source"] == {"email": "c1@qq.com"} and fields["email"]["value"] == "c1@qq.com"
    assert shown["result"] == "staged" and shown["values"]["phone"] == "+8613812345678"

    missing = runner.invoke(app, ["--config", str(config), "mappings", "preview", "shop.orders"])
    assert "no stored records for shop.orders" in str(missing.exception)
