"""The same mapping expressions rendered as SQL over source_records give what the Python closures
give, on SQLite and PostgreSQL (clean records: see mappings/pushdown.py for what pushdown cannot do)."""

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, select, text
from sqlalchemy.orm import sessionmaker

from connectors import Page
from hub.db import engine_for
from hub.ingest import store_page
from hub.tables import SourceRecordRow
from mappings import load_mapping, load_mappings
from mappings.pushdown import pushable, select_sql
from schemas.errors import MappingError

MAPPING = """\
source: shopify
stream: customers
target: member
fields:
  source_id: id
  channel: "'online'"
  full_name: trim(coalesce(last_name, '') || ' ' || coalesce(first_name, ''))
  phone: coalesce(mobile, phone)
  email: lower(trim(email))
  birthday: cast(birth_date as date)
  gender: case sex when 'F' then 'female' when 'M' then 'male' end
  city: nullif(trim(address.city), '')
  store_code: store(shop)
  marketing_consent: consent.state = 'subscribed'
  province: upper(substr(region, 1, 2))
  district: replace(district, ' ', '')
  given_name: "case when length(first_name) > 3 then 'long' else 'short' end"
  family_name: "case when cast(spent as decimal) / 100 >= 1 then 'spender' end"
"""
RECORDS = [
    {
        "id": 1,
        "last_name": "王",
        "first_name": "芳",
        "mobile": "",
        "phone": "138",
        "email": " A@QQ.com ",
        "birth_date": "1990-02-03T00:00:00",
        "sex": "F",
        "address": {"city": " 上海 "},
        "shop": "online",
        "consent": {"state": "subscribed"},
        "region": "sh-01",
        "district": "徐 汇",
        "spent": "250",
    },
    {
        "id": 2,
        "first_name": "Jonathan",
        "mobile": "139",
        "email": None,
        "sex": "X",
        "address": {"city": ""},
        "shop": "SH01",
        "consent": {"state": "no"},
        "spent": "50",
    },
]


def normalised(value):
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, date):
        return value.isoformat()
    return value


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "customers.yaml"
    path.write_text(MAPPING)
    return load_mapping(path)


def test_pushdown_matches_python(database_url, mapping):
    sessions = sessionmaker(engine_for(database_url))
    try:
        compare(sessions, database_url, mapping)
    finally:
        engine_for(database_url).dispose()


def compare(sessions, database_url, mapping):
    """Over a plain copy of the stored records: the hub seals source_records.payload (hub.privacy)."""
    with sessions() as session, session.begin():
        store_page(session, "shop", "customers", "id", Page(RECORDS))
        plain = Table(
            "plain_records",
            MetaData(),
            Column("id", Integer),
            Column("source", Text),
            Column("stream", Text),
            Column("payload", JSON),
        )
        plain.create(session.connection())
        stored = session.execute(
            select(SourceRecordRow.id, SourceRecordRow.source, SourceRecordRow.stream, SourceRecordRow.payload)
        ).mappings()
        session.execute(plain.insert(), [dict(r) for r in stored])
    dialect = "postgres" if database_url.startswith("postgresql") else "sqlite"
    with sessions() as session:
        query = text(select_sql(mapping, dialect, table="plain_records"))
        rows = session.execute(query, {"source": "shop", "stream": "customers"}).mappings()
        pushed = {str(r["source_id"]): dict(r) for r in rows}
    for record in RECORDS:
        python = {rule.target: rule.compiled(record) for rule in mapping.fields}
        sql = pushed[str(record["id"])]
        for target, value in python.items():
            got = sql[target]
            if target == "marketing_consent" and got is not None:
                got = bool(got)
            assert normalised(got) == normalised(value if target != "source_id" else str(value)) or (
                target == "source_id" and str(got) == str(value)
            ), (target, got, value)


def test_every_shipped_mapping_can_be_rendered_for_both_databases():
    for mapping in load_mappings().values():
        assert pushable(mapping) == []
        for dialect in ("sqlite", "postgres"):
            assert select_sql(mapping, dialect).startswith("SELECT id, ")


def test_unknown_dialects_are_refused(mapping):
    with pytest.raises(MappingError, match="cannot push down to 'mysql'"):
        select_sql(mapping, "mysql")
