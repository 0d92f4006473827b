"""Time the points ledger: a batch of orders posted, and single redemptions, and print figures.

    .venv/bin/python benchmarks/ledger.py                       # PostgreSQL on 127.0.0.1, fresh schema
    .venv/bin/python benchmarks/ledger.py --orders 20000 --database-url sqlite:///tmp/ledger.db

Against PostgreSQL the script makes a schema of its own (``?options=-csearch_path=...``) and drops it
afterwards. Setup (members, orders, links) is written with bulk inserts and not timed. Timed:

* ``post_orders`` over the whole batch in one transaction, commit included, under a programme with
  earn rules (store rate, double points day, SKU-free category rule, tier multiplier, order cap),
  7 pending days and end-of-next-year expiry; then the same call again (nothing to do);
* single redemptions, each its own transaction (lock, draw on lots, write, commit): p50 / p99.

Not part of the test run: machines are shared and noisy, so figures belong in notes, not asserts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import sessionmaker

from hub import ledger
from hub.db import engine_for, upgrade
from hub.tables import GoldenMember, MemberLink, PointsAccount, SourceRecordRow, StagedMember, StagedOrder
from schemas import ProgrammeConfig

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STORES = ["SH01", "SH02", "BJ01", "BJ02", "GZ01", "ONLINE"]


def programme() -> ProgrammeConfig:
    return ProgrammeConfig.model_validate(
        {
            "pending_days": 7,
            "expiry": {"policy": "end_of_year", "years": 1},
            "brands": {"north": ["BJ01", "BJ02"]},
            "earn_rules": [
                {"type": "store_rate", "stores": ["ONLINE"], "points_per_unit": "0.5"},
                {"type": "brand_rate", "brand": "north", "points_per_unit": "1.5"},
                {"type": "promotion", "label": "双倍积分日", "start": "2025-06-18", "end": "2025-06-18", "factor": 2},
                {"type": "tier_multiplier", "factors": {"gold": "1.5", "diamond": 2}},
                {"type": "cap", "per": "order", "max": 50000},
            ],
        }
    )


def seed(url: str, orders: int, members: int, seed_value: int) -> None:
    rng = random.Random(seed_value)
    engine = engine_for(url)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        records = [
            {
                "source": "pos",
                "stream": "members",
                "external_id": str(i),
                "payload": {},
                "content_hash": "x",
                "first_seen_at": start,
                "last_seen_at": start,
            }
            for i in range(members)
        ] + [
            {
                "source": "pos",
                "stream": "orders",
                "external_id": str(i),
                "payload": {},
                "content_hash": "x",
                "first_seen_at": start,
                "last_seen_at": start,
            }
            for i in range(orders)
        ]
        ids = conn.execute(
            insert(SourceRecordRow).returning(SourceRecordRow.id, sort_by_parameter_order=True), records
        ).scalars()
        ids = list(ids)
        member_records, order_records = ids[:members], ids[members:]
        staged = conn.execute(
            insert(StagedMember).returning(StagedMember.id, sort_by_parameter_order=True),
            [
                {"source_record_id": rid, "source": "pos", "source_id": str(i), "channel": "pos", "staged_at": start}
                for i, rid in enumerate(member_records)
            ],
        ).scalars()
        staged = list(staged)
        conn.execute(
            insert(GoldenMember),
            [
                {
                    "seq": i + 1,
                    "member_id": f"MH{i + 1:08d}",
                    "status": "active",
                    "lineage": {},
                    "created_at": start,
                    "updated_at": start,
                }
                for i in range(members)
            ],
        )
        conn.execute(
            insert(MemberLink),
            [
                {
                    "staged_member_id": sid,
                    "member_id": f"MH{i + 1:08d}",
                    "rule": "new",
                    "evidence": {},
                    "linked_at": start,
                }
                for i, sid in enumerate(staged)
            ],
        )
        rows = []
        for i, rid in enumerate(order_records):
            total = Decimal(rng.randint(500, 200000)) / 100
            rows.append(
                {
                    "source_record_id": rid,
                    "source": "pos",
                    "source_id": str(i),
                    "member_source_id": str(rng.randrange(members)),
                    "store_code": rng.choice(STORES),
                    "channel": "pos",
                    "status": "paid",
                    "currency": "CNY",
                    "total_amount": total,
                    "refunded_amount": Decimal(0),
                    "ordered_at": start + timedelta(seconds=rng.randrange(30 * 86400)),
                    "lines": {"items": []},
                    "staged_at": start,
                }
            )
        conn.execute(insert(StagedOrder), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--redemptions", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=POSTGRES, help="default: a fresh schema on the local PostgreSQL")
    args = parser.parse_args()

    url, schema, admin = args.database_url, None, None
    if url.startswith("postgresql"):
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{url}?options=-csearch_path%3D{schema}"
    try:
        run(url, args)
    finally:
        engine_for(url).dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    upgrade(url)
    started = time.perf_counter()
    seed(url, args.orders, args.members, args.seed)
    print(f"setup: {args.orders} orders of {args.members} members in {time.perf_counter() - started:.1f} s (untimed)")
    sessions = sessionmaker(engine_for(url), expire_on_commit=False)
    rules = programme()
    now = datetime(2025, 8, 1, tzinfo=UTC)  # the return windows have ended: points are spendable

    started = time.perf_counter()
    with sessions() as session, session.begin():
        counts = ledger.post_orders(session, rules, now=now)
    seconds = time.perf_counter() - started
    print(
        f"post_orders, batch of {args.orders}: {seconds:6.2f} s  {args.orders / seconds:9.0f} orders/s  "
        f"({counts.entries} entries, {counts.points} points)"
    )
    started = time.perf_counter()
    with sessions() as session, session.begin():
        again = ledger.post_orders(session, rules, now=now)
    seconds = time.perf_counter() - started
    print(f"post_orders re-run (nothing new): {seconds:6.2f} s  {again.entries} entries")

    with sessions() as session:
        rich = list(
            session.scalars(
                select(PointsAccount.member_id).where(PointsAccount.balance >= 100).order_by(PointsAccount.member_id)
            )
        )
    rng = random.Random(args.seed)
    latencies = []
    for i in range(args.redemptions):
        member_id = rng.choice(rich)
        started = time.perf_counter()
        with sessions() as session, session.begin():
            ledger.redeem(
                session, member_id, rng.randint(1, 20), source="pos", document=f"redeem:{i}", store_code="SH02", at=now
            )
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"single redemption, {args.redemptions} in turn: p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {latencies[-1]:.2f} ms"
    )
    with sessions() as session:
        differences = ledger.reconcile(session)
    print(f"reconcile: {len(differences)} differences")


if __name__ == "__main__":
    main()
