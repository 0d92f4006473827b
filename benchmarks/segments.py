"""Recomputing the member view (RFM per chain and per store, churn risk) and every segment of
hub/segments.yaml for 1,000,000 members on PostgreSQL. Target: at most 30 s.

The members, their links, orders, tiers and balances are generated inside PostgreSQL with
``INSERT ... SELECT generate_series`` (a scratch schema, dropped at the end), then the recompute runs
three times: the first run computes every member's facts (nothing is kept yet) and puts everyone into
their segments, the second is the steady state in which nobody moves and no order changed, the third
follows a day of change (a day later, 1% of members with a new order each, whose facts are recomputed).
Between runs the tables a run wrote are vacuumed, as autovacuum would between daily runs (otherwise
it vacuums the first run's 1.7 million new rows during the second run's timing; and a server with
autovacuum off would leave the queue's millions of taken rows for every later run to scan).
Run: ``.venv/bin/python benchmarks/segments.py [--members N] [--orders-per-member F] [--schema NAME]``;
``--schema`` keeps the generated data in that schema and reuses it on the next run (the segment tables,
the kept member facts and the day's orders are reset first), so the million members are generated once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub import segments
from hub.analytics import metrics
from hub.db import dispose_engines, session_scope, upgrade

POSTGRES = os.environ.get("MEMBERHUB_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AS_OF = datetime(2025, 7, 1, tzinfo=UTC)

GENERATE = [
    """INSERT INTO source_records (id, source, stream, external_id, payload, content_hash, first_seen_at, last_seen_at)
       SELECT g, 'bench', CASE WHEN g <= :members THEN 'members' ELSE 'orders' END, 'r' || g, 'x', 'x', now(), now()
       FROM generate_series(1::bigint, :members + :orders) AS g""",
    """INSERT INTO golden_members (seq, member_id, status, city, birthday, lineage, created_at, updated_at)
       SELECT g, 'MH' || lpad(g::text, 8, '0'), 'active',
              (ARRAY['上海市', '北京市', '广州市', '杭州市', '深圳市'])[1 + g % 5],
              DATE '1960-01-01' + (g * 7919 % 16000)::int, '{}', now(), now()
       FROM generate_series(1::bigint, :members) AS g""",
    """INSERT INTO staged_members (id, source_record_id, source, source_id, channel, marketing_consent, store_code,
                                  created_at, staged_at)
       SELECT g, g, 'bench', 'c' || g, 'pos', CASE g % 4 WHEN 0 THEN FALSE WHEN 1 THEN NULL ELSE TRUE END,
              CASE WHEN g % 10 = 0 THEN 'SH01' END, TIMESTAMPTZ '2025-07-01' - (g % 900) * INTERVAL '1 day', now()
       FROM generate_series(1::bigint, :members) AS g""",
    """INSERT INTO member_links (staged_member_id, member_id, rule, evidence, linked_at)
       SELECT g, 'MH' || lpad(g::text, 8, '0'), 'new', '{}', now() FROM generate_series(1::bigint, :members) AS g""",
    """INSERT INTO staged_orders (id, source_record_id, source, source_id, member_source_id, store_code, channel,
                                 status, currency, total_amount, refunded_amount, ordered_at, lines, staged_at)
       SELECT g, :members + g, 'bench', 'o' || g, 'c' || (1 + (g::bigint * 7919) % :members),
              (ARRAY['SH01', 'SH02', 'BJ01', 'BJ02', 'GZ01', 'ONLINE'])[1 + g % 6],
              CASE WHEN g % 6 = 5 THEN 'online' ELSE 'pos' END,
              CASE WHEN g % 20 = 0 THEN 'cancelled' ELSE 'paid' END, 'CNY',
              10 + (g * 37 % 200000) / 100.0, 0,
              TIMESTAMPTZ '2025-07-01' - (g * 104729 % (400 * 86400)) * INTERVAL '1 second', '{}', now()
       FROM generate_series(1::bigint, :orders) AS g""",
    """INSERT INTO tier_assignments (member_id, tier, qualifying_amount, reason, assigned_at, actor)
       SELECT 'MH' || lpad(g::text, 8, '0'), (ARRAY['regular', 'silver', 'gold'])[1 + g % 3], 0, 'initial', now(),
              'system'
       FROM generate_series(1::bigint, :members) AS g""",
    """INSERT INTO points_accounts (member_id, balance, pending, version, updated_at)
       SELECT 'MH' || lpad(g::text, 8, '0'), g % 5000, 0, 0, now() FROM generate_series(1::bigint, :members) AS g""",
]


DAY_OF_CHANGE = [
    """INSERT INTO source_records (id, source, stream, external_id, payload, content_hash, first_seen_at, last_seen_at)
       SELECT :members + :orders + g, 'bench-day', 'orders', 'd' || g, 'x', 'x', now(), now()
       FROM generate_series(1::bigint, :changed) AS g""",
    """INSERT INTO staged_orders (id, source_record_id, source, source_id, member_source_id, store_code,
                                 channel, status, currency, total_amount, refunded_amount, ordered_at, lines, staged_at)
       SELECT :orders + g, :members + :orders + g, 'bench', 'd' || g, 'c' || (1 + (g::bigint * 104729) % :members),
              (ARRAY['SH01', 'SH02', 'BJ01', 'BJ02', 'GZ01', 'ONLINE'])[1 + g % 6],
              CASE WHEN g % 6 = 5 THEN 'online' ELSE 'pos' END, 'paid', 'CNY', 10 + (g * 53 % 50000) / 100.0, 0,
              TIMESTAMPTZ '2025-07-01' + (g * 7 % 86400) * INTERVAL '1 second', '{}', now()
       FROM generate_series(1::bigint, :changed) AS g""",
]
"""A day later: 1% of members (by default) with one new paid order each, at a store or online."""
RESET = [
    "DELETE FROM staged_orders WHERE source_id LIKE 'd%'",
    "DELETE FROM source_records WHERE source = 'bench-day'",
    *(f"TRUNCATE {table}" for table in ("segment_memberships", "segment_history", "segment_runs", "member_metrics")),
]
"""Back to before the first run: the day's orders gone, no segment, no view (and ``metrics.rebuild``:
no kept member facts, every member queued)."""


def generated(url: str) -> bool:
    with session_scope(url) as session:
        return bool(session.scalar(text("SELECT EXISTS (SELECT 1 FROM golden_members)")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--orders-per-member", type=float, default=2.5)
    parser.add_argument("--schema", help="keep the data in this schema and reuse it when it is already there")
    parser.add_argument("--changed-percent", type=float, default=1.0, help="members with a new order on the day")
    args = parser.parse_args()
    members, orders = args.members, int(args.members * args.orders_per_member)
    schema = args.schema or f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    sizes = {"members": members, "orders": orders, "changed": int(members * args.changed_percent / 100)}
    try:
        upgrade(url)
        started = time.perf_counter()
        if args.schema and generated(url):
            with session_scope(url) as session:
                for statement in RESET:
                    session.execute(text(statement))
                metrics.rebuild(session)
                members = int(session.scalar(text("SELECT COUNT(*) FROM golden_members")) or 0)
            print(f"reusing schema {schema}: {members:,} members")
        else:
            with session_scope(url) as session:
                for statement in GENERATE:
                    session.execute(text(statement), sizes)
            print(f"generated {members:,} members and {orders:,} orders in {time.perf_counter() - started:.1f} s")
        with session_scope(url) as session:
            for table in ("golden_members", "staged_members", "member_links", "staged_orders", "tier_assignments",
                          "points_accounts"):  # fmt: skip
                session.execute(text(f"ANALYZE {table}"))
        definitions = segments.load_segments()
        runs = [
            ("first run (everyone enters)", AS_OF, None),
            ("second run (steady state, nothing changed)", AS_OF, None),
            (f"third run (a day later, {sizes['changed']:,} members with a new order)", AS_OF + timedelta(days=1),
             DAY_OF_CHANGE),
        ]  # fmt: skip
        for label, as_of, change in runs:
            with session_scope(url) as session:
                for statement in change or ():
                    session.execute(text(statement), sizes)
            started, cpu = time.perf_counter(), time.process_time()
            with session_scope(url) as session:
                counts = segments.recompute(session, definitions, default_tier="regular", as_of=as_of)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            print(f"{label}: {seconds:.1f} s for {counts.members:,} members, {len(definitions.segments)} segments "
                  f"(entered {counts.entered:,}, left {counts.left:,}; client CPU {cpu:.1f} s)")  # fmt: skip
            with admin.connect() as connection:  # what autovacuum does between daily runs, outside the timing
                for table in ("segment_memberships", "segment_history", "segment_runs", *metrics.KEPT_TABLES,
                              "member_facts_queue"):  # fmt: skip
                    connection.execute(text(f'VACUUM ANALYZE "{schema}".{table}'))
        print("segment sizes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.sizes.items())))
    finally:
        dispose_engines()
        if not args.schema:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
