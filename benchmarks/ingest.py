"""Ingest throughput: members/s of a full sync from each HTTP simulator into the hub, the same read
without the hub, the simulator's own serving time, and an incremental sync after 1% of members
changed, as a share of the full sync.

    .venv/bin/python benchmarks/ingest.py                              # 100,000 members, SQLite + PostgreSQL
    .venv/bin/python benchmarks/ingest.py --members 20000 --systems shopify,odoo --backends sqlite

Per system (members stream only: Shopify customers, Square customers, HubSpot contacts, Odoo partners):
  serve only        time the simulator spends answering the pages (inside its dispatch), members/s
  read only         connector.read() over HTTP, nothing stored, members/s
  full sync         hub.ingest.sync into an empty hub database, members/s (per backend)
  incremental 1%    touch 1% of members at the source, sync again; seconds and % of the full sync
And the MariaDB row (connectors/sql.py): a members table of the same size in MariaDB's `test`
database (the legacy-POS shape of tests/test_connector_sql.py), full sync and incremental 1%.

Each simulator runs in a process of its own, as a real system runs on a machine of its own: in the
hub's process its serving competed with the hub for the interpreter lock (``--same-process``
measures it that way).

Rate limits: Shopify's standard bucket (40, draining 2/s) allows 500 customers/s at 250 a page, and
HubSpot's 190 requests per 10 s allows 1,900 contacts/s at 100 a page: no full sync of 100,000 can
reach 5,000/s against the real limits. The Shopify simulator here drains like a Shopify Plus shop
(bucket 400, 20/s) and HubSpot's rolling limit is lifted; both are printed with the figures.

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from connectors import Connector, connector_for
from connectors.hubspot import HubSpotConnector
from connectors.simulators import TOKENS, generate_world
from connectors.simulators._server import Simulator
from connectors.simulators.hubspot import HubSpotSimulator
from connectors.simulators.odoo import OdooSimulator
from connectors.simulators.shopify import ShopifySimulator
from connectors.simulators.square import SquareSimulator
from connectors.sql import SqlConnector
from hub.db import engine_for, upgrade
from hub.ingest import sync
from schemas import ConnectorConfig

MEMBER_STREAM = {"shopify": "customers", "square": "customers", "hubspot": "contacts", "odoo": "partners"}
POSTGRES = os.environ.get("MEMBERHUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB = os.environ.get("MEMBERHUB_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
SHOPIFY_PLUS = {"bucket_size": 400, "leak_rate": 20.0}
NOTES = {
    "shopify": "Shopify Plus limits: bucket 400, draining 20/s (standard 40 and 2/s would cap it at 500/s)",
    "hubspot": "rolling limit lifted (HubSpot's 190 req/10 s caps a full list at ~1,900 contacts/s)",
    "square": "no simulated rate limit (Square publishes none; 429s back off)",
    "odoo": "self-hosted Odoo: no rate limit",
}


def start(system: str, members: int, seed: int) -> Simulator:
    world = generate_world(members, seed, systems=(system,), orders=False)
    token = TOKENS[system]
    if system == "shopify":
        sim: Simulator = ShopifySimulator(world, token=token, **SHOPIFY_PLUS)
    elif system == "square":
        sim = SquareSimulator(world, token=token, enrolled_share=0.0)
    elif system == "hubspot":
        sim = HubSpotSimulator(world, token=token, rate_limit=1_000_000)
    else:
        sim = OdooSimulator(world, token=token)
    sim.start()
    return sim


@dataclass
class RemoteSimulator:
    """A simulator served from a child process: its address, and a pipe for the benchmark's
    requests (members it holds, touch a share of them, seconds spent serving, stop)."""

    system: str
    base_url: str
    token: str
    settings: dict[str, Any]
    members: int
    pipe: Any = field(repr=False)
    process: Any = field(repr=False)

    def connector_settings(self) -> dict[str, Any]:
        return self.settings

    def ask(self, command: str, argument: Any = None) -> Any:
        self.pipe.send((command, argument))
        return self.pipe.recv()

    def stop(self) -> None:
        self.ask("stop")
        self.process.join()


def _serve_in_child(system: str, members: int, seed: int, pipe: Any) -> None:
    sim = start(system, members, seed)
    with serving_time(sim) as spent:
        pipe.send((sim.base_url, sim.token, sim.connector_settings(), len(sim.truth())))
        while True:
            command, argument = pipe.recv()
            if command == "touch":
                pipe.send(touch_share(sim, argument))
            elif command == "spent":
                pipe.send(spent[0])
                spent[0] = 0.0
            else:
                break
    sim.stop()
    pipe.send("stopped")


def start_remote(system: str, members: int, seed: int) -> RemoteSimulator:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_serve_in_child, args=(system, members, seed, theirs), daemon=True)
    process.start()
    base_url, token, settings, count = ours.recv()
    return RemoteSimulator(system, base_url, token, settings, count, ours, process)


def connect(sim: Any) -> Connector:
    config = ConnectorConfig(kind=sim.system, base_url=sim.base_url, token=sim.token, **sim.connector_settings())
    if sim.system == "hubspot":
        connector: Connector = HubSpotConnector(sim.system, config, requests_per_window=1_000_000)
    else:
        connector = connector_for(sim.system, config)
    if sim.system == "shopify":
        connector.leak_per_second = SHOPIFY_PLUS["leak_rate"]  # type: ignore[attr-defined]
    connector.streams = (connector.stream(MEMBER_STREAM[sim.system]),)  # type: ignore[misc]
    return connector


@contextmanager
def serving_time(sim: Simulator) -> Iterator[list[float]]:
    """Seconds the simulator spends inside ``dispatch`` (building answers), summed over requests."""
    spent = [0.0]
    original = sim.dispatch

    def timed(request: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(request)
        finally:
            spent[0] += time.perf_counter() - began

    sim.dispatch = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        del sim.dispatch


def touch_share(sim: Simulator, share: float) -> int:
    ids = sorted(sim.truth(), key=lambda i: (len(i), i))
    step = max(1, round(1 / share))
    chosen = ids[::step]
    for i in chosen:
        if isinstance(sim, ShopifySimulator):
            sim.touch(int(i), note="changed for the benchmark")
        elif isinstance(sim, SquareSimulator):
            sim.touch(i, note="changed for the benchmark")
        elif isinstance(sim, HubSpotSimulator):
            sim.touch(i, city="Hangzhou")
        else:
            assert isinstance(sim, OdooSimulator)
            sim.touch("res.partner", int(i), ref=f"BENCH{i}")
    return len(chosen)


@contextmanager
def hub_database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp / f"hub-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        engine_for(url).dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = run()
    return time.perf_counter() - began, result


def bench_system(system: str, members: int, seed: int, backends: list[str], tmp: Path, same_process: bool) -> None:
    began = time.perf_counter()
    sim: Any = start(system, members, seed) if same_process else start_remote(system, members, seed)
    try:
        count = len(sim.truth()) if same_process else sim.members
        where = "in this process" if same_process else "in a process of its own"
        print(f"\n{system}: {count:,} members ({MEMBER_STREAM[system]}); {NOTES[system]}; simulator {where}")
        print(f"  simulator built in {time.perf_counter() - began:.1f} s")
        with connect(sim) as connector, (serving_time(sim) if same_process else _remote_spent(sim)) as spent:
            seconds, read = timed(lambda: sum(len(p.records) for p in connector.read(MEMBER_STREAM[system], None)))
        assert read == count, f"read {read} of {count}"
        print(f"  serve only       {count / spent[0]:>10,.0f} members/s  ({spent[0]:.1f} s inside the simulator)")
        print(f"  read only        {count / seconds:>10,.0f} members/s  ({seconds:.1f} s, HTTP, nothing stored)")
        for backend in backends:
            with tmp_dir(tmp) as where_, hub_database(backend, where_) as url:
                factory = sessionmaker(engine_for(url), expire_on_commit=False)
                with connect(sim) as connector:
                    full, counts = timed(lambda c=connector, f=factory: sync(c, f))
                assert counts.new == count, counts
                changed = touch_share(sim, 0.01) if same_process else sim.ask("touch", 0.01)
                with connect(sim) as connector:
                    again, counts = timed(lambda c=connector, f=factory: sync(c, f))
                assert counts.changed == changed, (counts, changed)
                report(backend, count, full, again, counts)
    finally:
        sim.stop()


@contextmanager
def _remote_spent(sim: RemoteSimulator) -> Iterator[list[float]]:
    sim.ask("spent")  # start from zero
    spent = [0.0]
    yield spent
    spent[0] = sim.ask("spent")


def report(backend: str, count: int, full: float, again: float, counts: Any) -> None:
    rate = count / full
    mark = "ok" if rate >= 5000 else "BELOW 5,000/s"
    print(f"  full sync {backend:<8}{rate:>8,.0f} members/s  ({full:.1f} s)  [{mark}]", flush=True)
    share = 100 * again / full
    mark = "ok" if share <= 5 else "ABOVE 5%"
    print(
        f"  incremental 1% {backend:<8} {again:.2f} s = {share:.1f}% of the full sync "
        f"({counts.pulled:,} read, {counts.changed:,} changed)  [{mark}]",
        flush=True,
    )


@contextmanager
def tmp_dir(base: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=base) as where:
        yield Path(where)


POS_BASE = datetime(2024, 3, 1, 9, 30)


def pos_member(i: int) -> dict[str, Any]:
    return {
        "member_id": i,
        "card_no": f"VIP{i:07d}",
        "member_name": "王李张刘陈杨黄赵吴周"[i % 10] + "伟芳娜敏静丽强磊军洋"[(i // 7) % 10],
        "mobile": f"139{i:08d}",
        "email": f"m{i}@example.cn" if i % 3 == 0 else "",
        "gender": "男" if i % 2 else "女",
        "birthday": date(1970 + i % 40, 1 + i % 12, 1 + i % 28),
        "store_code": ("SH01", "SH02", "BJ01", "GZ01")[i % 4],
        "balance": f"{i % 1000}.45",
        "created_at": POS_BASE - timedelta(days=400 - i % 365),
        "updated_at": POS_BASE + timedelta(seconds=i),
    }


@contextmanager
def pos_table(rows: int) -> Iterator[tuple[Any, str]]:
    table = f"bench_pos_member_{uuid.uuid4().hex[:8]}"
    engine = create_engine(MARIADB)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"""CREATE TABLE {table} (
                    member_id INT PRIMARY KEY, card_no VARCHAR(20) NOT NULL, member_name VARCHAR(50),
                    mobile VARCHAR(32), email VARCHAR(120), gender CHAR(1), birthday DATE,
                    store_code VARCHAR(8), balance DECIMAL(12, 2), created_at DATETIME, updated_at DATETIME,
                    KEY ix_updated (updated_at, member_id)
                ) DEFAULT CHARSET=utf8mb4"""
            )
        )
        insert = text(
            f"INSERT INTO {table} VALUES (:member_id, :card_no, :member_name, :mobile, :email, :gender, "
            ":birthday, :store_code, :balance, :created_at, :updated_at)"
        )
        for start in range(1, rows + 1, 5000):
            connection.execute(insert, [pos_member(i) for i in range(start, min(rows, start + 4999) + 1)])
    try:
        yield engine, table
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def bench_mariadb(rows: int, backends: list[str], tmp: Path) -> None:
    print(f"\nmariadb (connectors/sql.py): {rows:,} rows of a members table, pages of 1,000 (the default)")
    began = time.perf_counter()
    with pos_table(rows) as (engine, table):
        print(f"  table filled in {time.perf_counter() - began:.1f} s")
        config = ConnectorConfig(
            kind="sql", url=MARIADB, streams={"members": {"table": table, "id": "member_id", "cursor": "updated_at"}}
        )
        with SqlConnector("pos", config) as connector:
            seconds, read = timed(lambda: sum(len(p.records) for p in connector.read("members", None)))
        assert read == rows, (read, rows)
        print(f"  read only        {rows / seconds:>10,.0f} members/s  ({seconds:.1f} s, nothing stored)")
        for k, backend in enumerate(backends):
            with tmp_dir(tmp) as where, hub_database(backend, where) as url:
                factory = sessionmaker(engine_for(url), expire_on_commit=False)
                with SqlConnector("pos", config) as connector:
                    full, counts = timed(lambda c=connector, f=factory: sync(c, f))
                assert counts.new == rows, counts
                step = 100
                with engine.begin() as connection:  # 1% changed, stamped later than every row
                    connection.execute(
                        text(
                            f"UPDATE {table} SET store_code = 'BJ02', "
                            f"updated_at = TIMESTAMPADD(SECOND, member_id, '{2030 + k}-01-01 00:00:00') "
                            f"WHERE member_id % {step} = 0"
                        )
                    )
                with SqlConnector("pos", config) as connector:
                    again, counts = timed(lambda c=connector, f=factory: sync(c, f))
                assert counts.changed == rows // step, counts
                report(backend, rows, full, again, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--systems", default="shopify,square,hubspot,odoo")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--same-process", action="store_true", help="run each simulator in the hub's process")
    parser.add_argument("--skip-mariadb", action="store_true")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        for system in [s for s in args.systems.split(",") if s]:
            bench_system(system, args.members, args.seed, backends, Path(tmp), args.same_process)
        if not args.skip_mariadb:
            bench_mariadb(args.members, backends, Path(tmp))


if __name__ == "__main__":
    main()
