"""Staging throughput: records/s through a 15-field member mapping, and Python vs SQL pushdown.

    .venv/bin/python benchmarks/staging.py                       # 100,000 records on SQLite
    .venv/bin/python benchmarks/staging.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Prints, per database, with the load average (the machine may be shared) and the CPU seconds of
this process beside each wall time (so a figure per core can be worked out):
  stage (Python, end to end)   hub.staging.stage: read raw records, map, validate, normalise
                               (phones, emails, names and pinyin, birthdays, gender, addresses),
                               write staged rows; records/s. Run first, with every cache cold.
  stage, workers=N (PostgreSQL)  the same again from scratch with StageOptions(workers=N) (1: one
                               process; 2: two worker processes, hub.staging_parallel); beside the
                               CPU of this process, its workers' CPU and the server backends' CPU
                               (read from /proc, sampled while they run: "~"), and all three per record
  the stages of it, measured one by one afterwards (caches then warm):
    read + decrypt             select the sealed payloads and open them (hub.privacy)
    map                        the compiled mapping closures alone
    validate + normalise       hub.staging.member_values minus the mapping
    rest                       of the end-to-end time: blind indexes, staged rows
                               (COPY / executemany), quarantine, marking records staged
  map only, Python             read payloads and run the compiled mapping closures
  map only, SQL pushdown       the same expressions rendered by mappings.pushdown and run by the
                               database over a plain copy of the records (the hub seals
                               source_records.payload, which SQL cannot read: hub.privacy);
                               JSONB on PostgreSQL (over json text every ->> parses the document
                               again, and pushdown ran at a tenth of the speed)

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, create_engine, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB
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
        Column("payload", JSON().with_variant(JSONB(), "postgresql")),  # what a pushed-down source would use
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


class Clock:
    """Wall and CPU seconds of one step."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def line(label: str, count: int, clock: Clock | None, wall: float | None = None, cpu: float | None = None) -> str:
    wall = clock.wall if clock else wall
    cpu = clock.cpu if clock else cpu
    assert wall is not None and cpu is not None
    return (
        f"  {label:28s}{wall:7.2f} s  {count / wall:9,.0f} records/s"
        f"   cpu {cpu:6.2f} s  {1e6 * cpu / count:6.1f} µs/record"
    )


def _backends(session) -> list[int]:
    """This run's backends but the asking one (they share an application_name; pg_stat_activity is
    read afresh: within one transaction it would not change)."""
    found = session.execute(
        text(
            "SELECT pid FROM pg_stat_activity WHERE application_name = current_setting('application_name')"
            " AND pid <> pg_backend_pid()"
        )
    )
    pids = list(found.scalars())
    session.rollback()
    return pids


def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process from /proc (None when it is not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parallel_run(sessions, mappings, count: int, workers: int) -> None:
    """Stage everything again with ``workers`` processes: CPU of this process, its workers (children,
    reaped) and the server's backends (their /proc, sampled while they live)."""
    with sessions() as session, session.begin():
        session.execute(text("TRUNCATE staged_members CASCADE"))
        session.execute(text("UPDATE source_records SET staged_hash = NULL"))
    children = os.times()
    backends: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        with sessions() as watcher:
            while not stop.wait(0.1):
                for pid in _backends(watcher):
                    if (cpu := _proc_cpu(pid)) is not None:
                        backends[pid] = cpu

    watcher = threading.Thread(target=sample, daemon=True)
    with sessions() as probe:
        own = probe.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        pids = [*_backends(probe), own]  # (the same connection: the session keeps it until rollback)
        start = {pid: cpu for pid in pids if (cpu := _proc_cpu(pid)) is not None}
    watcher.start()
    with Clock() as staged, sessions() as session, session.begin():
        counts = staging.stage(session, mappings, {}, options=staging.StageOptions(workers=workers))
    stop.set()
    watcher.join()
    after = os.times()
    child_cpu = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    server = sum(cpu - start.get(pid, 0.0) for pid, cpu in backends.items())
    assert counts.members + counts.quarantined == count, counts
    print(
        line(f"stage, workers={workers}", count, staged)
        + f"  + workers' cpu {child_cpu:6.2f} s, server cpu ~{server:6.2f} s"
        + f" = {1e6 * (staged.cpu + child_cpu + server) / count:6.1f} µs/record in all"
    )


def run(url: str, count: int, mapping_path: Path) -> None:
    upgrade(url)
    load(url, count)
    mapping = load_mapping(mapping_path)
    mappings = {("benchpos", "members"): mapping}
    sessions = sessionmaker(engine_for(url))
    dialect = "postgres" if url.startswith("postgresql") else "sqlite"
    print(f"{dialect}: {count:,} records, {len(mapping.fields)} mapped fields")
    print("  load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    with Clock() as staged, sessions() as session, session.begin():
        counts = staging.stage(session, mappings, {}, options=staging.StageOptions(workers=1))
    assert counts.members + counts.quarantined == count, counts
    print(
        line("stage (Python, end to end)", count, staged)
        + f"  (staged {counts.members:,}, quarantined {counts.quarantined:,}, flagged {counts.flagged:,})"
    )
    if dialect == "postgres":
        for workers in (1, 2):
            parallel_run(sessions, mappings, count, workers)

    with Clock() as read, sessions() as session:
        payloads = [payload for (payload,) in session.execute(select(SourceRecordRow.payload))]
    with Clock() as mapped:
        for payload in payloads:
            mapping.apply(payload)
    options = staging.StageOptions()
    with Clock() as normalised:
        for payload in payloads:
            staging.member_values(mapping, payload, "benchpos", options)  # none is rejected: see the count above
    print("  its stages, one by one (caches warm):")
    print(line("  read + decrypt", count, read))
    print(line("  map", count, mapped))
    print(line("  validate + normalise", count, None, normalised.wall - mapped.wall, normalised.cpu - mapped.cpu))
    rest_wall = staged.wall - read.wall - normalised.wall
    rest_cpu = staged.cpu - read.cpu - normalised.cpu
    print(line("  rest: write, bookkeeping", count, None, rest_wall, rest_cpu) + "  (and cold caches)")

    with Clock() as python_map, sessions() as session:
        for (payload,) in session.execute(select(SourceRecordRow.payload)):
            mapping.apply(payload)
    sql = select_sql(mapping, dialect, table="plain_records")
    with sessions() as session:  # untimed: the first scan of a fresh table sets its hint bits; the Python
        session.execute(text(sql), {"source": "benchpos", "stream": "members"}).all()  # side read its table already
    with Clock() as pushdown, sessions() as session:
        pushed = session.execute(text(sql), {"source": "benchpos", "stream": "members"}).all()
    assert len(pushed) == count
    print(line("map only, Python", count, python_map))
    print(line("map only, SQL pushdown", count, pushdown) + "  (cpu: this process only)")
    faster = "pushdown" if pushdown.wall < python_map.wall else "Python"
    ratio = max(python_map.wall, pushdown.wall) / min(python_map.wall, pushdown.wall)
    print(f"  mapping alone: {faster} is faster by {ratio:.1f}x")
    print("  load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


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
            # its own application_name: the server CPU counted is this run's backends', not others' on the database
            url = f"{args.database_url}?options=-csearch_path%3D{schema}&application_name={schema}"
            run(url, args.records, mapping_path)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
