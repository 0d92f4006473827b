"""The SQL connector against a legacy POS schema in the real MariaDB (and once against PostgreSQL):
keyset paging across ties in the cursor column, rows with no cursor, incremental re-syncs, JSON-safe
values, check(), and the whole way from the POS tables to staged members and orders."""

from __future__ import annotations

import itertools
import json
import uuid
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from conftest import MARIADB_URL
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import sessionmaker

from connectors import connector_for
from connectors.sql import SqlConnector
from hub import ingest
from hub.config import load_config
from hub.db import engine_for, upgrade
from hub.service import Hub
from hub.tables import ConnectorState, SourceRecordRow, StagedMember, StagedOrder
from schemas import ConnectorConfig
from schemas.errors import ConfigError, FatalError

pytestmark = pytest.mark.mariadb

MEMBERS, ORDERS = 3000, 2000
BASE = datetime(2024, 3, 1, 9, 30)  # the till's local time, stored without an offset
GROUPS = 5  # members share five updated_at values: ties span many pages
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超"]
STORES = ["SH01", "SH02", "BJ01", "BJ02", "GZ01"]


def mobile(i: int) -> str:
    digits = f"139{i:08d}"
    formats = [
        digits,
        f"{digits[:3]} {digits[3:7]} {digits[7:]}",
        f"+86 {digits[:3]}-{digits[3:7]}-{digits[7:]}",
        f"0086{digits}",
        f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
    ]
    return formats[i % len(formats)]


def member_row(i: int) -> dict:
    return {
        "member_id": i,
        "card_no": f"VIP{i:06d}",
        "member_name": SURNAMES[i % len(SURNAMES)] + GIVEN[(i // 7) % len(GIVEN)],
        "mobile": mobile(i),
        "email": f"m{i}@example.cn" if i % 3 == 0 else "",
        "gender": "男" if i % 2 else "女",
        "birthday": date(1970 + i % 40, 1 + i % 12, 1 + i % 28),
        "store_code": STORES[i % len(STORES)],
        "balance": Decimal(i % 1000) + Decimal("0.45"),
        "created_at": BASE - timedelta(days=400 - i % 365),
        # every 300th member was never stamped; the rest fall in GROUPS ties, interleaved with the ids
        "updated_at": None if i % 300 == 0 else BASE + timedelta(minutes=10 * ((i * 7) % GROUPS)),
    }


def order_row(i: int) -> dict:
    amount = Decimal(i % 500) + Decimal("19.90")
    return {
        "sale_no": f"S{i:07d}",
        "member_id": 1 + (i * 13) % MEMBERS,
        "store_code": STORES[i % len(STORES)],
        "amount": amount,
        "refund_amount": amount if i % 50 == 0 else Decimal("0.00"),
        "status": "V" if i % 97 == 0 else "P",
        "sold_at": BASE - timedelta(hours=i),
        "updated_at": BASE - timedelta(hours=i) + timedelta(minutes=5),
    }


@contextmanager
def legacy_pos():
    """A legacy POS schema in the MariaDB `test` database, under table names of its own."""
    suffix = uuid.uuid4().hex[:8]
    members, orders = f"pos_member_{suffix}", f"pos_sale_{suffix}"
    engine = create_engine(MARIADB_URL)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"""CREATE TABLE {members} (
                        member_id INT PRIMARY KEY, card_no VARCHAR(20) NOT NULL, member_name VARCHAR(50),
                        mobile VARCHAR(32), email VARCHAR(120), gender CHAR(1), birthday DATE,
                        store_code VARCHAR(8), balance DECIMAL(12, 2), created_at DATETIME, updated_at DATETIME,
                        KEY ix_updated (updated_at, member_id)
                    ) DEFAULT CHARSET=utf8mb4"""
                )
            )
            connection.execute(
                text(
                    f"""CREATE TABLE {orders} (
                        sale_no VARCHAR(20) PRIMARY KEY, member_id INT, store_code VARCHAR(8),
                        amount DECIMAL(12, 2), refund_amount DECIMAL(12, 2), status CHAR(1),
                        sold_at DATETIME, updated_at DATETIME
                    ) DEFAULT CHARSET=utf8mb4"""
                )
            )
            connection.execute(
                text(
                    f"INSERT INTO {members} VALUES (:member_id, :card_no, :member_name, :mobile, :email, :gender, "
                    ":birthday, :store_code, :balance, :created_at, :updated_at)"
                ),
                [member_row(i) for i in range(1, MEMBERS + 1)],
            )
            connection.execute(
                text(
                    f"INSERT INTO {orders} VALUES (:sale_no, :member_id, :store_code, :amount, :refund_amount, "
                    ":status, :sold_at, :updated_at)"
                ),
                [order_row(i) for i in range(1, ORDERS + 1)],
            )
    except Exception as exc:  # a missing service is a failure, never a skip
        pytest.fail(f"MariaDB at {MARIADB_URL} is not usable ({exc}); `make test` starts it")
    try:
        yield {"members": members, "orders": orders, "engine": engine}
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {members}, {orders}"))
        engine.dispose()


@pytest.fixture(scope="module")
def pos():
    """Read, never changed, by the tests of this module."""
    with legacy_pos() as tables:
        yield tables


@pytest.fixture
def pos_to_change():
    with legacy_pos() as tables:
        yield tables


def sql_config(pos, *, page_size=250, url=MARIADB_URL, **streams) -> ConnectorConfig:
    return ConnectorConfig(
        kind="sql",
        url=url,
        streams=streams
        or {
            "members": {"table": pos["members"], "id": "member_id", "cursor": "updated_at", "page_size": page_size},
            "orders": {"table": pos["orders"], "kind": "orders", "id": "sale_no", "cursor": "updated_at"},
        },
    )


def sessions(url):
    return sessionmaker(engine_for(url), expire_on_commit=False)


def stored(url, stream):
    with sessions(url)() as session:
        rows = session.scalars(select(SourceRecordRow).where(SourceRecordRow.stream == stream))
        return {row.external_id: row for row in rows}


# ------------------------------------------------------------------------------ reading
def test_keyset_pages_cross_ties_without_losing_or_doubling_a_row(pos):
    with connector_for("legacy_pos", sql_config(pos, page_size=97)) as connector:
        pages = list(connector.read("members", None))
    ids = [r["member_id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == MEMBERS
    stamped = [p for p in pages if p.cursor is not None]
    # the never-stamped rows come first, by id, and move no cursor
    assert [r["member_id"] for p in pages if p.cursor is None for r in p.records] == list(range(300, MEMBERS + 1, 300))
    # boundaries fall inside ties: the next page starts on the same updated_at the last one ended on
    inside = [a for a, b in itertools.pairwise(stamped) if a.records[-1]["updated_at"] == b.records[0]["updated_at"]]
    assert len(inside) > 10
    order = [(r["updated_at"], r["member_id"]) for p in stamped for r in p.records]
    assert order == sorted(order)
    assert all(p.cursor == p.records[-1]["updated_at"] for p in stamped)


def test_values_are_json_safe_and_local_times_carry_the_configured_offset(pos):
    with connector_for("legacy_pos", sql_config(pos)) as connector:
        records = {r["member_id"]: r for p in connector.read("members", None) for r in p.records}
    row = member_row(7)
    record = records[7]
    json.dumps(record)  # storable as is
    assert record["member_name"] == row["member_name"]
    assert record["balance"] == "7.45"  # exact, as text
    assert record["birthday"] == row["birthday"].isoformat()
    assert record["updated_at"] == f"{row['updated_at'].isoformat()}+08:00"
    assert record["mobile"] == row["mobile"]

    config = sql_config(pos).model_copy(update={"timezone": "Europe/Berlin"})
    with SqlConnector("legacy_pos", config) as connector:
        first = next(iter(connector.read("members", None))).records[0]
    assert first["created_at"].endswith("+01:00") or first["created_at"].endswith("+02:00")


def test_since_reads_rows_changed_at_or_after_it(pos):
    third = BASE + timedelta(minutes=20)
    since = third.replace(tzinfo=UTC) - timedelta(hours=8)  # the same moment, written in UTC
    with connector_for("legacy_pos", sql_config(pos)) as connector:
        ids = {r["member_id"] for p in connector.read("members", since.isoformat()) for r in p.records}
    expected = {i for i in range(1, MEMBERS + 1) if (row := member_row(i))["updated_at"] and row["updated_at"] >= third}
    assert ids == expected


def test_a_query_stream_is_read_as_a_subquery(pos):
    query = (
        f"select s.sale_no, s.amount, concat('VIP:', m.card_no) as card, m.member_name as 姓名, s.updated_at "
        f"from {pos['orders']} s join {pos['members']} m on m.member_id = s.member_id where s.status <> 'V'"
    )
    config = sql_config(
        pos, sales={"query": query, "kind": "orders", "id": "sale_no", "cursor": "updated_at", "page_size": 300}
    )
    with connector_for("legacy_pos", config) as connector:
        pages = list(connector.read("sales", None))
    records = [r for p in pages for r in p.records]
    kept = [i for i in range(1, ORDERS + 1) if order_row(i)["status"] != "V"]
    assert sorted(r["sale_no"] for r in records) == sorted(order_row(i)["sale_no"] for i in kept)
    assert len(pages) == len(kept) // 300 + 1
    sample = next(r for r in records if r["sale_no"] == "S0000001")
    assert sample["card"] == f"VIP:{member_row(order_row(1)['member_id'])['card_no']}"
    assert sample["姓名"] == member_row(order_row(1)["member_id"])["member_name"]
    assert sample["amount"] == str(order_row(1)["amount"]) == "20.90"


def test_a_stream_without_a_cursor_is_read_whole_by_id(pos):
    config = sql_config(pos, members={"table": pos["members"], "id": "member_id", "page_size": 400})
    with connector_for("legacy_pos", config) as connector:
        pages = list(connector.read("members", "2030-01-01T00:00:00+00:00"))
    assert [r["member_id"] for p in pages for r in p.records] == list(range(1, MEMBERS + 1))
    assert all(p.cursor is None for p in pages)


# ------------------------------------------------------------------------------ into the hub
def test_sync_stores_exactly_the_rows_then_only_what_changed(pos_to_change, database_url):
    pos = pos_to_change
    connector = connector_for("legacy_pos", sql_config(pos))
    first = ingest.sync(connector, sessions(database_url))
    assert (first.pulled, first.new, first.changed, first.quarantined) == (MEMBERS + ORDERS, MEMBERS + ORDERS, 0, 0)
    members = stored(database_url, "members")
    assert set(members) == {str(i) for i in range(1, MEMBERS + 1)}
    assert set(stored(database_url, "orders")) == {order_row(i)["sale_no"] for i in range(1, ORDERS + 1)}
    assert members["42"].payload["member_name"] == member_row(42)["member_name"]
    with sessions(database_url)() as session:
        cursor = session.get(ConnectorState, ("legacy_pos", "members")).cursor
    assert cursor == f"{(BASE + timedelta(minutes=10 * (GROUPS - 1))).isoformat()}+08:00"

    # 1% of the members change at the till
    changed_ids = list(range(17, MEMBERS + 1, 100))
    later = BASE + timedelta(days=1)
    with pos["engine"].begin() as connection:
        connection.execute(
            text(f"UPDATE {pos['members']} SET mobile = :mobile, updated_at = :at WHERE member_id = :id"),
            [{"mobile": f"137{i:08d}", "at": later, "id": i} for i in changed_ids],
        )
    hashes = {k: r.content_hash for k, r in members.items()}
    second = ingest.sync(connector, sessions(database_url))
    connector.close()
    assert (second.new, second.changed, second.quarantined) == (0, len(changed_ids), 0)
    after = stored(database_url, "members")
    assert {k for k, r in after.items() if r.content_hash != hashes[k]} == {str(i) for i in changed_ids}
    assert after["17"].payload["mobile"] == "13700000017"
    with sessions(database_url)() as session:
        assert session.get(ConnectorState, ("legacy_pos", "members")).cursor == f"{later.isoformat()}+08:00"


def test_the_pipeline_maps_pos_rows_to_members_and_orders(pos, database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("POS_URL", MARIADB_URL)
    path = tmp_path / "memberhub.yaml"
    path.write_text(
        f"""
connectors:
  legacy_pos:
    kind: sql
    url: ${{POS_URL}}
    streams:
      members: {{table: {pos["members"]}, id: member_id, cursor: updated_at, page_size: 500}}
      orders: {{table: {pos["orders"]}, kind: orders, id: sale_no, cursor: updated_at}}
""",
        encoding="utf-8",
    )
    hub = Hub(config_path=path, database_url=database_url)
    assert hub.writeback_names == []
    hub.sync("legacy_pos")
    counts = hub.stage()
    assert (counts["members"], counts["orders"], counts["quarantined"]) == (MEMBERS, ORDERS, 0)
    with hub.session() as session:
        member = session.scalar(select(StagedMember).where(StagedMember.source_id == "3"))
        voided = session.scalar(select(StagedOrder).where(StagedOrder.source_id == "S0000097"))
        refunded = session.scalar(select(StagedOrder).where(StagedOrder.source_id == "S0000050"))
        staged_phones = session.scalars(select(StagedMember.phone)).all()
    row = member_row(3)
    assert (member.source, member.channel, member.full_name) == ("legacy_pos", "pos", row["member_name"])
    assert (member.phone_raw, member.phone) == ("008613900000003", "+8613900000003")  # as typed at the till
    assert member.gender == "male" and member.store_code == "BJ02"
    assert all(p and p.startswith("+86139") for p in staged_phones)  # every format normalised
    assert member.updated_at.astimezone(UTC) == (row["updated_at"] - timedelta(hours=8)).replace(tzinfo=UTC)
    assert voided.status == "cancelled"
    assert (refunded.status, refunded.refunded_amount) == ("refunded", order_row(50)["amount"])
    assert refunded.total_amount == Decimal("69.90")


# ------------------------------------------------------------------------------ PostgreSQL as the source
@pytest.mark.postgres
def test_the_same_connector_reads_postgresql(postgres_url, tmp_path):
    source = create_engine(postgres_url)
    with source.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE shop_member (id BIGINT PRIMARY KEY, name TEXT, spent NUMERIC(12, 2), changed TIMESTAMPTZ)"
            )
        )
        connection.execute(
            text("INSERT INTO shop_member VALUES (:id, :name, :spent, :changed)"),
            [
                {
                    "id": i,
                    "name": f"会员{i}",
                    "spent": Decimal(i) / 4,
                    "changed": datetime(2024, 5, 1, tzinfo=UTC) + timedelta(hours=i // 10),
                }
                for i in range(1, 301)
            ],
        )
    source.dispose()
    config = ConnectorConfig(
        kind="sql",
        url=postgres_url,
        streams={
            "members": {
                "query": "select * from shop_member where spent > 1",
                "id": "id",
                "cursor": "changed",
                "page_size": 40,
            }
        },
    )
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(hub_url)
    with connector_for("pg_shop", config) as connector:
        counts = ingest.sync(connector, sessions(hub_url))
        assert counts.new == 296  # spent > 1: ids 5..300
        records = stored(hub_url, "members")
        payload = records["5"].payload
        assert {k: payload[k] for k in ("id", "name", "spent")} == {"id": 5, "name": "会员5", "spent": "1.25"}
        assert datetime.fromisoformat(payload["changed"]) == datetime(2024, 5, 1, tzinfo=UTC)  # in the session's zone
        since = datetime(2024, 5, 2, 5, tzinfo=UTC).isoformat()  # ids from 290 on
        later = [r["id"] for p in connector.read("members", since) for r in p.records]
    assert later == list(range(290, 301))
    with sessions(hub_url)() as session:
        cursor = session.get(ConnectorState, ("pg_shop", "members")).cursor
    assert datetime.fromisoformat(cursor) == datetime(2024, 5, 2, 6, tzinfo=UTC)


# ------------------------------------------------------------------------------ check and refusals
def test_check_connects_finds_the_tables_and_reads_a_row(pos):
    with connector_for("legacy_pos", sql_config(pos)) as connector:
        steps = connector.check()
    assert all(s.ok for s in steps), steps
    assert [s.name for s in steps] == [
        "connect",
        "members: exists",
        "members: select",
        "orders: exists",
        "orders: select",
    ]
    assert "mariadb" in steps[0].detail.lower() or "mysql" in steps[0].detail.lower()
    assert "newest row id" in steps[2].detail


def test_check_explains_a_missing_table_and_a_misspelt_column(pos):
    config = sql_config(
        pos,
        members={"table": pos["members"], "id": "member_id", "cursor": "update_at"},
        gone={"table": "no_such_table_here", "id": "id"},
    )
    with connector_for("legacy_pos", config) as connector:
        steps = {s.name: s for s in connector.check()}
        with pytest.raises(FatalError, match="did you mean 'updated_at'"):
            list(connector.read("members", None))
    assert not steps["members: exists"].ok and "did you mean 'updated_at'" in steps["members: exists"].detail
    assert not steps["gone: exists"].ok and "no table or view no_such_table_here" in steps["gone: exists"].detail
    assert "members: select" not in steps


def test_a_refused_login_never_shows_the_password(pos):
    url = MARIADB_URL.replace("root@", "nobody_here:s3cret-pw@")
    config = sql_config(pos, url=url)
    assert "s3cret-pw" not in repr(config)
    assert config.display_url().startswith("mysql+pymysql://nobody_here:***@")
    with connector_for("legacy_pos", config) as connector:
        steps = connector.check()
        with pytest.raises(FatalError) as caught:
            list(connector.read("members", None))
    assert not steps[0].ok and "Access denied" in steps[0].detail
    for message in (steps[0].detail, str(caught.value)):
        assert "s3cret-pw" not in message and "***" in message


def test_write_back_is_refused(pos):
    with connector_for("legacy_pos", sql_config(pos)) as connector, pytest.raises(FatalError, match="read only"):
        connector.push([])


# ------------------------------------------------------------------------------ configuration
def write(tmp_path, body: str):
    path = tmp_path / "memberhub.yaml"
    path.write_text(f"connectors:\n  legacy_pos:\n{body}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    kind: sql\n    streams: {m: {table: t, id: id}}\n", ":2: connectors.legacy_pos: kind sql needs `url`"),
        ("    kind: sql\n    url: sqlite://\n", "kind sql needs `streams`"),
        ("    kind: sql\n    url: not a url\n    streams: {m: {table: t, id: id}}\n", "not a SQLAlchemy URL"),
        (
            "    kind: sql\n    url: sqlite://\n    streams: {m: {table: t, query: select 1, id: id}}\n",
            "either `table` or `query`",
        ),
        (
            "    kind: sql\n    url: sqlite://\n    streams: {m: {table: t}}\n",
            "connectors.legacy_pos.streams.m.id: Field required",
        ),
        (
            "    kind: sql\n    url: sqlite://\n    base_url: http://x\n    streams: {m: {table: t, id: id}}\n",
            "`base_url` is a setting of kind hubspot or odoo or shopify or square, not sql",
        ),
        (
            "    kind: sql\n    url: sqlite://\n    writeback: true\n    streams: {m: {table: t, id: id}}\n",
            "kind sql is read only",
        ),
        (
            "    kind: sql\n    url: sqlite://\n    timezone: Asia/Shanghia\n    streams: {m: {table: t, id: id}}\n",
            "unknown time zone 'Asia/Shanghia'",
        ),
        ("    kind: shopify\n", "kind shopify needs `base_url`"),
    ],
)
def test_sql_settings_are_checked_with_clear_messages(tmp_path, body, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, body))
    assert expected in str(caught.value)


def test_the_url_password_comes_from_the_environment_and_stays_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("POS_PASSWORD", "pa55-word")
    path = write(
        tmp_path,
        "    kind: sql\n    url: mysql+pymysql://pos:${POS_PASSWORD}@10.0.0.5/pos\n    streams: {members: {table: m, id: id}}\n",
    )
    config = load_config(path).connectors["legacy_pos"]
    assert config.url.get_secret_value() == "mysql+pymysql://pos:pa55-word@10.0.0.5/pos"
    assert config.writeback is False
    assert "pa55-word" not in repr(config) and "pa55-word" not in config.display_url()
    assert config.streams["members"].page_size is None
