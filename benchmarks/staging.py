"""Staging throughput: records/s through a 15-field member mapping, and Python vs SQL pushdown.

    .venv/bin/python benchmarks/staging.py                       # 100,000 records on SQLite
    .venv/bin/python benchmarks/staging.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Prints three figures per database:
  stage (Python, end to end)   hub.staging.stage: read raw records, map, validate, normalise
                               (phones, emails, names and pinyin, birthdays, gender, addresses),
                               write staged rows; records/s
  map only, Python             read payloads and run the compiled mapping closures
  map only, SQL pushdown       the same expressions rendered by mappings.pushdown and run by the
                               database over a plain copy of the records (the hub seals
                               source_records.payload, which SQL cannot read: hub.privacy)

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, create_engine, insert, select, text
from sqlalchemy.orm import sessionmaker

from hub import staging
from hub.db import engine_for, upgrade
from hub.tables import SourceRecordRow
from mappings import load_mapping
from mappings.pushdown import select_sql
from schemas import content_hash

MAPPING = """\
source: benchpos
stream: members
target: member
fields:
  source_id: id
  channel: "'pos'"
  family_name: trim(surname)
  given_name: trim(name)
  full_name: trim(coalesce(surname, '') || coalesce(name, ''))
  phone: coalesce(nullif(trim(mobile), ''), tel)
  email: lower(trim(mail))
  birthday: birth
  gender: sex
  city: city
  address: addr
  store_code: store(shop)
  marketing_consent: consent = 'Y'
  created_at: utc(created)
  updated_at: utc(changed)
"""
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "欧阳司马诸葛"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国志强"
CITIES = ["上海", "北京", "广州", "深圳", "杭州", None]
ADDRESSES = [
    "上海市徐汇区漕溪北路88号",
    "广东省广州市天河区天河路208号",
    "北京朝阳区建国路87号",
    "浙江杭州西湖区文三路",
    None,
]


def record(i: int, rng: random.Random) -> dict:
    national = f"1{rng.choice('3578')}{rng.randrange(10**9):09d}"
    phone = rng.choice(
        [national, f"+86 {national}", f"{national[:3]} {national[3:7]} {national[7:]}", f"0086{national}"]
    )
    surname = SURNAMES[rng.randrange(len(SURNAMES))]
    birth = rng.choice(["1990-02-03", "1985/7/14", "19771105", "1992年3月8日", 634003200000, None])
    return {
        "id": str(i),
        "surname": surname,
        "name": "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2))),
        "mobile": phone if rng.random() < 0.9 else "",
        "tel": national,
        "mail": f"User{i}@{rng.choice(['qq.com', '163.com', 'Gmail.com'])} " if rng.random() < 0.8 else None,
        "birth": birth,
        "sex": rng.choice(["男", "女", "M", "F", "1", "2", None]),
        "city": rng.choice(CITIES),
        "addr": rng.choice(ADDRESSES),
        "shop": rng.choice(["SH01", "SH02", "BJ01", "GZ01"]),
        "consent": rng.choice("YN"),
        "created": "2025-01-02 03:04:05",
        "changed": "2025-03-01 08:00:00",
    }


def load(url: str, count: int) -> None:
    rng = random.Random(7)
    engine = engine_for(url)
    rows = []
    for i in range(count):
        payload = record(i, rng)
        rows.append(
            {
                "source": "benchpos",
                "stream": "members",
                "external_id": str(i),
                "payload": payload,
                "content_hash": content_hash(payload),
            }
        )
    plain = Table(
        "plain_records",
        MetaData(),
        Column("id", Integer),
        Column("source", Text),
        Column("stream", Text),
        Column("payload", JSON),
    )
    with engine.begin() as connection:
        plain.create(connection)
        for start in range(0, count, 5000):
            connection.execute(insert(SourceRecordRow), rows[start : start + 5000])
            connection.execute(
                insert(plain),
                [
                    {"id": start + i + 1, "source": r["source"], "stream": r["stream"], "payload": r["payload"]}
                    for i, r in enumerate(rows[start : start + 5000])
                ],
            )


def run(url: str, count: int, mapping_path: Path) -> None:
    upgrade(url)
    load(url, count)
    mapping = load_mapping(mapping_path)
    sessions = sessionmaker(engine_for(url))
    dialect = "postgres" if url.startswith("postgresql") else "sqlite"
    print(f"{dialect}: {count:,} records, {len(mapping.fields)} mapped fields")

    started = time.perf_counter()
    with sessions() as session:
        for (payload,) in session.execute(select(SourceRecordRow.payload)):
            mapping.apply(payload)
    python_map = time.perf_counter() - started
    sql = select_sql(mapping, dialect, table="plain_records")
    started = time.perf_counter()
    with sessions() as session:
        pushed = session.execute(text(sql), {"source": "benchpos", "stream": "members"}).all()
    pushdown = time.perf_counter() - started
    assert len(pushed) == count

    started = time.perf_counter()
    with sessions() as session, session.begin():
        counts = staging.stage(session, {("benchpos", "members"): mapping}, {})
    stage_seconds = time.perf_counter() - started
    assert counts.members + counts.quarantined == count, counts

    print(
        f"  stage (Python, end to end)  {stage_seconds:7.2f} s  {count / stage_seconds:9,.0f} records/s"
        f"  (staged {counts.members:,}, quarantined {counts.quarantined:,}, flagged {counts.flagged:,})"
    )
    print(f"  map only, Python            {python_map:7.2f} s  {count / python_map:9,.0f} records/s")
    print(f"  map only, SQL pushdown      {pushdown:7.2f} s  {count / pushdown:9,.0f} records/s")
    faster = "pushdown" if pushdown < python_map else "Python"
    print(f"  mapping alone: {faster} is faster by {max(python_map, pushdown) / min(python_map, pushdown):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file; PostgreSQL gets a schema")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mapping_path = Path(tmp) / "members.yaml"
        mapping_path.write_text(MAPPING)
        if args.database_url is None:
            run(f"sqlite:///{Path(tmp) / 'hub.db'}", args.records, mapping_path)
            return
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            run(f"{args.database_url}?options=-csearch_path%3D{schema}", args.records, mapping_path)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
