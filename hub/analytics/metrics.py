"""The member view (会员画像): one row per active golden member in ``member_metrics``, and RFM per
store in ``member_store_rfm``, rebuilt by four set-based statements inside the database: the orders
are read once, into per-store facts (a temporary table), the per-store RFM ranks those, the member view
sums them, and the chain-wide quintiles rank a narrow projection of the members who bought, so each
sort carries a few columns, not the whole row. Ties are ordered by member id in byte order (COLLATE
"C"), which is SQLite's order and PostgreSQL's fast one.

Each run recomputes everything from the orders, on purpose: a quintile boundary moves for everyone
when anyone buys, and every day count moves with ``as_of``, so the ranking sorts and the view would
be rebuilt whatever changed; keeping the order facts up to date from a watermark would spare only the
first statement, for a second copy of the facts to keep right through merges and re-links.

Definitions (the same in hub/segments.yaml, where segment rules read them):

* An order counts when it is ``paid`` or ``partially_refunded``; its value is the total less refunds.
  Cancelled and fully refunded orders count for nothing. Orders belong to the golden member their
  source customer is linked to.
* ``store_orders`` are till orders (channel ``pos``); every other order is online (``online_orders``).
* ``home_store``: the store a source system enrolled the member at (the lowest code when several
  did), else the store of most orders (then the latest, then the lowest code).
* ``enrolled_at``: the earliest creation time any source system gives the member, else when the hub
  created the golden member; ``tenure_days`` counts from it.
* ``marketing_consent``: false when any source says the member opted out, true when one says yes
  and none says no, unknown (NULL) otherwise.
* Days are whole days between two instants (the fraction dropped); ``as_of`` is the instant measured from.
* RFM quintiles among members with at least one order, 5 the best: ``r_score`` by last order time,
  ``f_score`` by orders, ``m_score`` by spend, ``aov_score`` by average order value. Ties are broken
  by member id, so equal values can fall in neighbouring quintiles, as NTILE does. Per store, the
  same among the store's own buyers with their orders at that store.
* Churn risk (流失风险), explainable: the member's typical gap between orders is
  ``(last order − first order) / (orders − 1)`` days; with a single order, the chain's average of
  those gaps (``interval_basis`` says which). ``overdue = days_since_last_order / max(gap, 1)``, and
  ``churn_risk = clamp((overdue − 1) / 2, 0, 1)``: 0 while within the usual gap, 0.5 at twice it,
  1 from three times it. No orders: no score.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from hub.analytics import sql

WORK_MEM = "1GB"
COUNTED_STATUSES = ("paid", "partially_refunded")
STORE_CHANNEL = "pos"
TABLES = ("member_store_rfm", "member_metrics")
BYTE_ORDER = 'COLLATE "C"'
"""Member ids in byte order: SQLite's own, and PostgreSQL's fastest (no locale, abbreviated sort keys)."""

_SOLD = """
owner AS (
  SELECT s.source, s.source_id, l.member_id
  FROM staged_members AS s
  JOIN member_links AS l ON l.staged_member_id = s.id
  JOIN golden_members AS g ON g.member_id = l.member_id AND g.status = 'active'
),
sold AS (
  SELECT w.member_id, o.store_code, o.channel, o.ordered_at,
         CAST(o.total_amount AS DECIMAL(18, 4)) - CAST(o.refunded_amount AS DECIMAL(18, 4)) AS net
  FROM staged_orders AS o
  JOIN owner AS w ON w.source = o.source AND w.source_id = o.member_source_id
  WHERE o.status IN ({statuses})
)"""

_STORE_FACTS = """
CREATE TEMPORARY TABLE store_facts AS
WITH {sold}
SELECT store_code, member_id, COUNT(*) AS orders, SUM(net) AS spend, MIN(ordered_at) AS first_order_at,
       MAX(ordered_at) AS last_order_at, SUM(CASE WHEN channel = {store_channel} THEN 1 ELSE 0 END) AS pos_orders
FROM sold GROUP BY store_code, member_id
"""

_STORE_RFM = """
INSERT INTO member_store_rfm (
  store_code, member_id, orders, pos_orders, spend, first_order_at, last_order_at, r_score, f_score, m_score
)
SELECT store_code, member_id, orders, pos_orders, spend, first_order_at, last_order_at,
       NTILE(5) OVER (PARTITION BY store_code COLLATE "C" ORDER BY last_order_at, member_id COLLATE "C"),
       NTILE(5) OVER (PARTITION BY store_code COLLATE "C" ORDER BY orders, member_id COLLATE "C"),
       NTILE(5) OVER (PARTITION BY store_code COLLATE "C" ORDER BY spend, member_id COLLATE "C")
FROM store_facts
"""

_MEMBER_BASE = """
CREATE TEMPORARY TABLE member_base AS
WITH per_member AS (
  SELECT member_id, store_code AS favourite_store, total_orders AS orders, total_spend AS spend,
         first_of_all AS first_order_at, last_of_all AS last_order_at, stores, store_orders
  FROM (
    SELECT member_id, store_code,
           ROW_NUMBER() OVER (
             PARTITION BY member_id COLLATE "C" ORDER BY orders DESC, last_order_at DESC, store_code COLLATE "C"
           ) AS n,
           SUM(orders) OVER (PARTITION BY member_id COLLATE "C") AS total_orders,
           SUM(spend) OVER (PARTITION BY member_id COLLATE "C") AS total_spend,
           MIN(first_order_at) OVER (PARTITION BY member_id COLLATE "C") AS first_of_all,
           MAX(last_order_at) OVER (PARTITION BY member_id COLLATE "C") AS last_of_all,
           COUNT(*) OVER (PARTITION BY member_id COLLATE "C") AS stores,
           SUM(pos_orders) OVER (PARTITION BY member_id COLLATE "C") AS store_orders
    FROM store_facts
  ) AS ranked WHERE n = 1
),
sources AS (
  SELECT l.member_id,
         SUM(CASE WHEN s.marketing_consent = TRUE THEN 1 ELSE 0 END) AS said_yes,
         SUM(CASE WHEN s.marketing_consent = FALSE THEN 1 ELSE 0 END) AS said_no,
         MIN(s.store_code) AS enrolled_store, MIN(s.created_at) AS enrolled_at
  FROM staged_members AS s JOIN member_links AS l ON l.staged_member_id = s.id
  GROUP BY l.member_id
),
latest_tier AS (
  SELECT t.member_id, t.tier FROM tier_assignments AS t
  JOIN (SELECT member_id, MAX(id) AS id FROM tier_assignments GROUP BY member_id) AS x ON x.id = t.id
),
store_city (code, city) AS (VALUES {stores}),
base AS (
  SELECT g.member_id, COALESCE(lt.tier, {default_tier}) AS tier, g.city,
         COALESCE(src.enrolled_store, p.favourite_store) AS home_store, g.birthday,
         CASE WHEN src.said_no > 0 THEN FALSE WHEN src.said_yes > 0 THEN TRUE END AS marketing_consent,
         COALESCE(src.enrolled_at, g.created_at) AS enrolled_at, p.first_order_at, p.last_order_at,
         COALESCE(p.orders, 0) AS orders, COALESCE(p.spend, 0) AS spend,
         CAST(p.spend AS DECIMAL(18, 4)) / CAST(p.orders AS DECIMAL(18, 4)) AS avg_order_value,
         COALESCE(p.store_orders, 0) AS store_orders,
         COALESCE(p.orders, 0) - COALESCE(p.store_orders, 0) AS online_orders,
         COALESCE(p.stores, 0) AS stores, COALESCE(a.balance, 0) AS points,
         (EPOCH({now}) - EPOCH(p.first_order_at)) // 86400 AS days_since_first_order,
         (EPOCH({now}) - EPOCH(p.last_order_at)) // 86400 AS days_since_last_order,
         (EPOCH({now}) - EPOCH(COALESCE(src.enrolled_at, g.created_at))) // 86400 AS tenure_days,
         CASE WHEN p.orders > 1
              THEN CAST(EPOCH(p.last_order_at) - EPOCH(p.first_order_at) AS DOUBLE) / 86400 / (p.orders - 1)
         END AS own_interval
  FROM golden_members AS g
  LEFT JOIN per_member AS p ON p.member_id = g.member_id
  LEFT JOIN sources AS src ON src.member_id = g.member_id
  LEFT JOIN latest_tier AS lt ON lt.member_id = g.member_id
  LEFT JOIN points_accounts AS a ON a.member_id = g.member_id
  WHERE g.status = 'active'
),
chain AS (SELECT AVG(own_interval) AS avg_gap FROM base)
SELECT b.*, sc.city AS home_store_city,
       CASE WHEN b.orders > 0 THEN COALESCE(b.own_interval, chain.avg_gap) END AS gap,
       CASE WHEN b.own_interval IS NOT NULL THEN 'own' WHEN b.orders > 0 AND chain.avg_gap IS NOT NULL
            THEN 'chain' END AS basis
FROM base AS b CROSS JOIN chain LEFT JOIN store_city AS sc ON sc.code = b.home_store
"""

_MEMBERS = """
WITH scores AS (
  SELECT member_id,
         NTILE(5) OVER (ORDER BY last_order_at, member_id COLLATE "C") AS r_score,
         NTILE(5) OVER (ORDER BY orders, member_id COLLATE "C") AS f_score,
         NTILE(5) OVER (ORDER BY spend, member_id COLLATE "C") AS m_score,
         NTILE(5) OVER (ORDER BY avg_order_value, member_id COLLATE "C") AS aov_score
  FROM member_base WHERE orders > 0
)
INSERT INTO member_metrics (
  member_id, tier, city, home_store, home_store_city, birthday, marketing_consent, enrolled_at,
  first_order_at, last_order_at, orders, spend, avg_order_value, store_orders, online_orders, stores, points,
  days_since_first_order, days_since_last_order, tenure_days, typical_interval_days, interval_basis, churn_risk,
  r_score, f_score, m_score, aov_score, computed_at
)
SELECT b.member_id, tier, city, home_store, home_store_city, birthday, marketing_consent, enrolled_at,
       first_order_at, last_order_at, orders, ROUND(spend, 2), ROUND(avg_order_value, 2), store_orders,
       online_orders, stores, points, days_since_first_order, days_since_last_order, tenure_days, gap, basis,
       CASE WHEN gap IS NOT NULL
            THEN LEAST(1.0, GREATEST(0.0, (days_since_last_order / GREATEST(gap, 1.0) - 1) / 2)) END,
       s.r_score, s.f_score, s.m_score, s.aov_score, {now}
FROM member_base AS b LEFT JOIN scores AS s ON s.member_id = b.member_id
ORDER BY b.member_id COLLATE "C"
"""

WORK_TABLES = ("store_facts", "member_base")
"""Per-run scratch (temporary tables, the session's own): the orders aggregated once per member and
store, and the member view before its quintiles."""


def statements(
    session: Session, *, as_of: datetime, default_tier: str, store_cities: Mapping[str, str | None]
) -> list[str]:
    """The SQL that rebuilds both tables from the orders, in the session's dialect (what ``refresh``
    runs, in order, after emptying the tables)."""
    sold = _SOLD.format(statuses=", ".join(sql.text(s) for s in COUNTED_STATUSES))
    stores = ", ".join(f"({sql.text(code)}, {sql.text(city)})" for code, city in sorted(store_cities.items()))
    now = sql.timestamp(as_of, session)
    base = _MEMBER_BASE.format(default_tier=sql.text(default_tier), stores=stores or "(NULL, NULL)", now=now)
    steps = [_STORE_FACTS.format(sold=sold, store_channel=sql.text(STORE_CHANNEL)), _STORE_RFM, base,
             _MEMBERS.format(now=now)]  # fmt: skip
    return [sql.render(step, session) for step in steps]


def refresh(session: Session, *, as_of: datetime, default_tier: str, store_cities: Mapping[str, str | None]) -> int:
    """Rebuild the member view and the per-store RFM as of ``as_of``; returns the members in the view."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:  # hash tables and the quintile sorts in memory, not on disk; no JIT compiling per statement
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    for table in TABLES:
        session.execute(text(f"TRUNCATE {table}" if postgres else f"DELETE FROM {table}"))
    drop_work_tables(session)
    store_facts, store_rfm, base, members = statements(
        session, as_of=as_of, default_tier=default_tier, store_cities=store_cities
    )
    for step, table in ((store_facts, "store_facts"), (store_rfm, None), (base, "member_base"), (members, None)):
        session.execute(text(step))
        if postgres and table:  # autovacuum never sees temporary tables: the planner needs their sizes
            session.execute(text(f"ANALYZE {table}"))
    drop_work_tables(session)
    if postgres:
        session.execute(text("ANALYZE member_metrics"))
    return int(session.scalar(text("SELECT COUNT(*) FROM member_metrics")) or 0)


def drop_work_tables(session: Session, tables: tuple[str, ...] = WORK_TABLES) -> None:
    schema = "pg_temp" if session.get_bind().dialect.name == "postgresql" else "temp"  # never a real table
    for table in tables:
        session.execute(text(f"DROP TABLE IF EXISTS {schema}.{table}"))
