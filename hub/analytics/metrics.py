"""The member view (会员画像): one row per active golden member in ``member_metrics``, and RFM per
store in ``member_store_rfm``, brought up to date by set-based statements inside the database
(``statements``).

A member's facts are kept between runs: the orders summed per store (``member_store_rfm``) and
per member (``member_order_totals``), and what the source systems and the tier history say of them
(``member_source_facts``). Database triggers queue whoever's orders, staged records, links, tiers or
golden status changed (``member_facts_queue``, migration 0014_9), and a run recomputes the facts of
those members only. Then each store's quintile cut points are taken and the per-store rows whose
scores moved are re-scored; the member view is written whole from the kept facts, the golden
records and the points balances (day counts move with ``as_of``, and cut points whenever anyone
buys), with the chain-wide cut points taken from the members who bought.
``rebuild`` forgets the kept facts and queues every member, for a run that recomputes all of them. A
change to what counts (``COUNTED_STATUSES``, ``STORE_CHANNEL``, the facts' definitions) changes every
kept fact: it ships with a migration that queues every member, as 0014_9 does.

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
  ``f_score`` by orders, ``m_score`` by spend, ``aov_score`` by average order value. A member's score
  is ``1 + floor(5 × below / buyers)``, ``below`` being the buyers with a strictly lower value: the
  bottom fifth scores 1, the top fifth 5, and equal values share a score (two members with 3 orders
  each always have the same ``f_score``; NTILE would split them by member id). Per store, the same
  among the store's own buyers with their orders at that store.

  The scores are read off four cut points per measure: the values at positions ``ceil(s × n / 5)``,
  s = 1…4, of the n sorted values (``percentile_disc(s / 5)`` on PostgreSQL, a ranked window on SQLite);
  ``score = 1 + (value > cut₁) + … + (value > cut₄)``. So each measure is sorted once, as bare values,
  and the member rows are never sorted for a score.
* Churn risk (流失风险), explainable: the member's typical gap between orders is
  ``(last order − first order) / (orders − 1)`` days; with a single order, the chain's average of
  those gaps (``interval_basis`` says which). ``overdue = days_since_last_order / max(gap, 1)``, and
  ``churn_risk = clamp((overdue − 1) / 2, 0, 1)``: 0 while within the usual gap, 0.5 at twice it,
  1 from three times it. No orders: no score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from hub.analytics import sql

COUNTED_STATUSES = ("paid", "partially_refunded")
STORE_CHANNEL = "pos"
BYTE_ORDER = 'COLLATE "C"'
"""Member ids in byte order: SQLite's own, and PostgreSQL's fastest (no locale, abbreviated sort keys)."""

_CHANGED = """
CREATE TEMPORARY TABLE changed_members (member_id VARCHAR(16) NOT NULL)
"""
_QUEUED_MEMBERS = """
SELECT member_id FROM {queue} WHERE member_id IS NOT NULL
UNION
SELECT l.member_id FROM {queue} AS q
JOIN staged_members AS s ON s.source = q.source AND s.source_id = q.member_source_id
JOIN member_links AS l ON l.staged_member_id = s.id
"""
"""The golden members the queue names: by id, or as the owner of a queued customer now."""
_TAKE_QUEUE = {
    # the rows read are the rows deleted: what a transaction committed meanwhile stays queued
    "postgresql": "WITH taken AS (DELETE FROM member_facts_queue RETURNING member_id, source, member_source_id) "
    "INSERT INTO changed_members " + _QUEUED_MEMBERS.format(queue="taken"),
    # SQLite has one writer, and the run already holds the write lock (it emptied the view first)
    "sqlite": "INSERT INTO changed_members " + _QUEUED_MEMBERS.format(queue="member_facts_queue"),
}

_STORE_FACTS = """
INSERT INTO member_store_rfm (member_id, store_code, orders, pos_orders, spend, first_order_at, last_order_at)
WITH owner AS (
  SELECT s.source, s.source_id, l.member_id
  FROM changed_members AS c
  JOIN member_links AS l ON l.member_id = c.member_id
  JOIN golden_members AS g ON g.member_id = l.member_id AND g.status = 'active'
  JOIN staged_members AS s ON s.id = l.staged_member_id
),
sold AS (
  SELECT w.member_id, o.store_code, o.channel, o.ordered_at,
         CAST(o.total_amount AS DECIMAL(18, 4)) - CAST(o.refunded_amount AS DECIMAL(18, 4)) AS net
  FROM staged_orders AS o
  JOIN owner AS w ON w.source = o.source AND w.source_id = o.member_source_id
  WHERE o.status IN ({statuses})
)
SELECT member_id, store_code, COUNT(*), SUM(CASE WHEN channel = {store_channel} THEN 1 ELSE 0 END), SUM(net),
       MIN(ordered_at), MAX(ordered_at)
FROM sold GROUP BY member_id, store_code
ORDER BY member_id COLLATE "C", store_code COLLATE "C"
"""
"""The changed members' orders per store, in key order (index inserts append)."""

_MEMBER_TOTALS = """
INSERT INTO member_order_totals (
  member_id, orders, store_orders, spend, first_order_at, last_order_at, stores, favourite_store,
  avg_order_value, own_interval
)
SELECT member_id, orders, store_orders, spend, first_order_at, last_order_at, stores, store_code,
       CAST(spend AS DECIMAL(18, 4)) / CAST(orders AS DECIMAL(18, 4)),
       CASE WHEN orders > 1 THEN CAST(EPOCH(last_order_at) - EPOCH(first_order_at) AS DOUBLE) / 86400 / (orders - 1) END
FROM (
  SELECT r.member_id, r.store_code,
         ROW_NUMBER() OVER (
           PARTITION BY r.member_id COLLATE "C" ORDER BY r.orders DESC, r.last_order_at DESC, r.store_code COLLATE "C"
         ) AS n,
         SUM(r.orders) OVER (PARTITION BY r.member_id COLLATE "C") AS orders,
         SUM(r.spend) OVER (PARTITION BY r.member_id COLLATE "C") AS spend,
         MIN(r.first_order_at) OVER (PARTITION BY r.member_id COLLATE "C") AS first_order_at,
         MAX(r.last_order_at) OVER (PARTITION BY r.member_id COLLATE "C") AS last_order_at,
         COUNT(*) OVER (PARTITION BY r.member_id COLLATE "C") AS stores,
         SUM(r.pos_orders) OVER (PARTITION BY r.member_id COLLATE "C") AS store_orders
  FROM member_store_rfm AS r JOIN changed_members AS c ON c.member_id = r.member_id
) AS ranked
WHERE n = 1
ORDER BY member_id COLLATE "C"
"""
"""The changed members' per-store sums summed again, with the favourite store, the unrounded average
order value, and the buyer's own typical gap between orders in days (the churn basis when they have
one)."""

STORE_MEASURES = {"r": "last_order_at", "f": "orders", "m": "spend"}
CHAIN_MEASURES = {**STORE_MEASURES, "aov": "avg_order_value"}
"""Score name -> the column it ranks: per store, and chain-wide (which adds average order value)."""
CUTS = (1, 2, 3, 4)
"""Quintile cut s is the value at position ceil(s × n / 5) of the n sorted values."""

_STORE_SCORES = """
UPDATE member_store_rfm AS f SET {assign}
FROM store_cuts AS c
WHERE c.store_code = f.store_code AND ({moved})
"""
"""Only the rows whose scores moved are written."""

_SOURCE_FACTS = """
INSERT INTO member_source_facts (member_id, tier, marketing_consent, enrolled_store, enrolled_at)
WITH sources AS (
  SELECT l.member_id,
         SUM(CASE WHEN s.marketing_consent = TRUE THEN 1 ELSE 0 END) AS said_yes,
         SUM(CASE WHEN s.marketing_consent = FALSE THEN 1 ELSE 0 END) AS said_no,
         MIN(s.store_code) AS enrolled_store, MIN(s.created_at) AS enrolled_at
  FROM changed_members AS c
  JOIN member_links AS l ON l.member_id = c.member_id
  JOIN staged_members AS s ON s.id = l.staged_member_id
  GROUP BY l.member_id
),
latest_tier AS (
  SELECT t.member_id, t.tier FROM tier_assignments AS t
  JOIN (
    SELECT a.member_id, MAX(a.id) AS id
    FROM changed_members AS c JOIN tier_assignments AS a ON a.member_id = c.member_id
    GROUP BY a.member_id
  ) AS x ON x.id = t.id
)
SELECT g.member_id, lt.tier,
       CASE WHEN src.said_no > 0 THEN FALSE WHEN src.said_yes > 0 THEN TRUE END,
       src.enrolled_store, src.enrolled_at
FROM changed_members AS c
JOIN golden_members AS g ON g.member_id = c.member_id AND g.status = 'active'
LEFT JOIN sources AS src ON src.member_id = g.member_id
LEFT JOIN latest_tier AS lt ON lt.member_id = g.member_id
ORDER BY g.member_id COLLATE "C"
"""
"""The changed members' latest tier, consent and earliest enrolment, as their source systems say."""

_MEMBER_SOURCES = """
CREATE TEMPORARY TABLE member_sources AS
SELECT g.member_id, COALESCE(f.tier, {default_tier}) AS tier, g.city, g.birthday, f.marketing_consent,
       f.enrolled_store, COALESCE(f.enrolled_at, g.created_at) AS enrolled_at, COALESCE(a.balance, 0) AS points
FROM golden_members AS g
LEFT JOIN member_source_facts AS f ON f.member_id = g.member_id
LEFT JOIN points_accounts AS a ON a.member_id = g.member_id
WHERE g.status = 'active'
"""
"""Every active golden member with its kept source facts and its points: read from the hub's own
tables only, so PostgreSQL may share the joins with parallel workers."""

_BUYERS = "SELECT last_order_at, orders, spend, avg_order_value, own_interval FROM member_order_totals"
"""Every member with at least one order (totals are kept for active members only): what the chain's
cut points and average gap are taken from."""

_MEMBER_BASE = """
SELECT m.member_id, m.tier, m.city, COALESCE(m.enrolled_store, p.favourite_store) AS home_store,
       sc.city AS home_store_city, m.birthday, m.marketing_consent, m.enrolled_at, p.first_order_at, p.last_order_at,
       COALESCE(p.orders, 0) AS orders, COALESCE(p.spend, 0) AS spend, p.avg_order_value,
       COALESCE(p.store_orders, 0) AS store_orders,
       COALESCE(p.orders, 0) - COALESCE(p.store_orders, 0) AS online_orders,
       COALESCE(p.stores, 0) AS stores, m.points,
       (EPOCH({now}) - EPOCH(p.first_order_at)) // 86400 AS days_since_first_order,
       (EPOCH({now}) - EPOCH(p.last_order_at)) // 86400 AS days_since_last_order,
       (EPOCH({now}) - EPOCH(m.enrolled_at)) // 86400 AS tenure_days,
       p.own_interval
FROM member_sources AS m
LEFT JOIN member_order_totals AS p ON p.member_id = m.member_id
LEFT JOIN store_city AS sc ON sc.code = COALESCE(m.enrolled_store, p.favourite_store)
"""
"""Every active golden member, with or without orders, before the scores."""

_MEMBERS = """
INSERT INTO member_metrics (
  member_id, tier, city, home_store, home_store_city, birthday, marketing_consent, enrolled_at,
  first_order_at, last_order_at, orders, spend, avg_order_value, store_orders, online_orders, stores, points,
  days_since_first_order, days_since_last_order, tenure_days, typical_interval_days, interval_basis, churn_risk,
  r_score, f_score, m_score, aov_score, computed_at
)
WITH store_city (code, city) AS (VALUES {stores})
SELECT v.member_id, tier, city, home_store, home_store_city, birthday, marketing_consent, enrolled_at,
       first_order_at, last_order_at, orders, ROUND(spend, 2), ROUND(avg_order_value, 2), store_orders,
       online_orders, stores, points, days_since_first_order, days_since_last_order, tenure_days, gap, basis,
       CASE WHEN gap IS NOT NULL
            THEN LEAST(1.0, GREATEST(0.0, (days_since_last_order / GREATEST(gap, 1.0) - 1) / 2)) END,
       {scores}, {now}
FROM (
  SELECT f.*, c.*,
         CASE WHEN f.orders > 0 THEN COALESCE(f.own_interval, c.avg_gap) END AS gap,
         CASE WHEN f.own_interval IS NOT NULL THEN 'own' WHEN f.orders > 0 AND c.avg_gap IS NOT NULL
              THEN 'chain' END AS basis
  FROM ({base}) AS f CROSS JOIN chain_cuts AS c
) AS v
ORDER BY v.member_id COLLATE "C"
"""
"""``chain_cuts`` holds the chain's cut points and ``avg_gap``, the average of the members' own gaps
between orders (the churn basis of members with a single order)."""


def cut_points(
    source: str, measures: Mapping[str, str], *, group: str | None, percentile: bool, where: str = "TRUE"
) -> str:
    """SELECT [group,] <score>1 … <score>4 per group of ``source`` (the whole table when ``group`` is
    None): for each measure, the values at positions ceil(s × n / 5) among the rows where ``where``
    holds and the measure is set.
    ``percentile``: PostgreSQL's ``percentile_disc``, which sorts each measure once as bare values;
    otherwise a ranked window, which any dialect runs (SQLite has no ordered-set aggregates)."""
    keys = [group] if group else []
    grouping = f" GROUP BY {group}" if group else ""
    if percentile:
        fractions = "ARRAY[" + ", ".join(f"{s / 5}" for s in CUTS) + "]"
        inner = ", ".join(
            f"percentile_disc({fractions}) WITHIN GROUP (ORDER BY {column}) AS {name}"
            for name, column in measures.items()
        )
        outer = ", ".join(f"{name}[{s}] AS {name}{s}" for name in measures for s in CUTS)
        return (
            f"SELECT {', '.join([*keys, outer])} "
            f"FROM (SELECT {', '.join([*keys, inner])} FROM {source} WHERE {where}{grouping}) AS p"
        )
    window = f"PARTITION BY {group}" if group else ""
    ranked = []
    for name, column in measures.items():
        picks = ", ".join(f"MAX(CASE WHEN rn = ({s} * n + 4) / 5 THEN v END) AS {name}{s}" for s in CUTS)
        ranked.append(
            f"(SELECT {', '.join([*keys, picks])} FROM (SELECT {', '.join([*keys, f'{column} AS v'])}, "
            f"ROW_NUMBER() OVER ({window} ORDER BY {column}) AS rn, COUNT(*) OVER ({window}) AS n "
            f"FROM {source} WHERE {where} AND {column} IS NOT NULL) AS ranked{grouping}) AS {name}"
        )
    first, *others = measures
    joined = ranked[0] + "".join(
        f" JOIN {part} ON {name}.{group} = {first}.{group}" if group else f" CROSS JOIN {part}"
        for name, part in zip(others, ranked[1:], strict=True)
    )
    columns = ([f"{first}.{group}"] if group else []) + [f"{name}{s}" for name in measures for s in CUTS]
    return f"SELECT {', '.join(columns)} FROM {joined}"


def scores(
    measures: Mapping[str, str], *, facts: str = "f", cuts: str = "c", when: str | None = None
) -> dict[str, str]:
    """One score expression per measure, in their order: 1 + the cut points ``facts``' value is above
    (``when``: NULL unless it holds)."""
    columns = {}
    for name, column in measures.items():
        above = " + ".join(f"CASE WHEN {facts}.{column} > {cuts}.{name}{s} THEN 1 ELSE 0 END" for s in CUTS)
        score = f"1 + {above}"
        columns[name] = f"CASE WHEN {when} THEN {score} END" if when else score
    return columns


WORK_TABLES = ("changed_members", "member_sources", "store_cuts", "chain_cuts")
"""Per-run scratch (temporary tables, the session's own): the members whose kept facts are
recomputed; every member's source facts, tier and points; each store's quintile cut points; and the
chain's cut points."""
KEPT_TABLES = ("member_store_rfm", "member_order_totals", "member_source_facts")
"""The facts kept between runs (``rebuild`` empties them)."""


@dataclass(frozen=True)
class Step:
    name: str
    sql: str
    fills: str | None = None
    """The temporary table it fills, which PostgreSQL analyses after it (autovacuum never sees them)."""
    postgres_settings: tuple[str, ...] = ()
    """Planner settings for this statement alone on PostgreSQL."""


PARALLEL = ("parallel_setup_cost = 10", "parallel_tuple_cost = 0.001")
"""Scans and joins of the hub's tables shared with parallel workers: the default costs keep them for
tables larger than a million members'. (Temporary tables are the session's own: never parallel.)"""
SORTED_AGGREGATE = ("enable_hashagg = off", *PARALLEL)
"""The store facts are grouped by sorting, not hashing: a million members' 2.4 million groups of
numeric sums hash into a 1.3 GB table, slower than sorting the joined orders in parallel workers, and
the sort leaves the facts in key order for the index they go into."""
PLANNER = ("work_mem = '1GB'", "jit = off", "random_page_cost = 1.1")
"""The recompute's transaction on PostgreSQL: hash tables and sorts in memory, not on disk; no JIT
compiling per statement; index lookups priced as the cached pages they mostly are, so a day's few
thousand changed members are looked up by index instead of by scanning a million rows."""


def statements(
    session: Session, *, as_of: datetime, default_tier: str, store_cities: Mapping[str, str | None]
) -> list[Step]:
    """The SQL that brings the kept facts, the per-store RFM and the member view up to date, in the
    session's dialect: what ``refresh`` runs, in order, after emptying the member view."""
    sql.dialect_of(session)  # SQLite or PostgreSQL, or a clear error
    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    stores = ", ".join(f"({sql.text(code)}, {sql.text(city)})" for code, city in sorted(store_cities.items()))
    now = sql.timestamp(as_of, session)
    facts = _STORE_FACTS.format(
        statuses=", ".join(sql.text(s) for s in COUNTED_STATUSES), store_channel=sql.text(STORE_CHANNEL)
    )
    changed = "WHERE member_id IN (SELECT member_id FROM changed_members)"
    store_cuts = cut_points("member_store_rfm", STORE_MEASURES, group="store_code", percentile=postgres)
    store_scores = scores(STORE_MEASURES)
    rescore = _STORE_SCORES.format(
        assign=", ".join(f"{name}_score = {score}" for name, score in store_scores.items()),
        moved=" OR ".join(f"COALESCE(f.{name}_score, 0) <> {score}" for name, score in store_scores.items()),
    )
    sources = _MEMBER_SOURCES.format(default_tier=sql.text(default_tier))
    base = _MEMBER_BASE.format(now=now)
    every_buyer = f"({sql.render(_BUYERS, session)}) AS buyers"  # cut_points' own SQL is written for both
    buyers = cut_points(every_buyer, CHAIN_MEASURES, group=None, percentile=postgres)
    gaps = f"SELECT AVG(own_interval) AS avg_gap FROM {every_buyer}"
    chain_cuts = f"CREATE TEMPORARY TABLE chain_cuts AS SELECT * FROM ({buyers}) AS cuts CROSS JOIN ({gaps}) AS gaps"
    chain_scores = scores(CHAIN_MEASURES, facts="v", cuts="v", when="v.orders > 0")
    members = _MEMBERS.format(
        now=now, base=base, stores=stores or "(NULL, NULL)", scores=", ".join(chain_scores.values())
    )
    steps = [
        Step("changed members", _CHANGED),
        Step("queue taken", sql.render(_TAKE_QUEUE[dialect], session), "changed_members"),
    ]
    if not postgres:
        steps.append(Step("queue emptied", "DELETE FROM member_facts_queue"))
    return [
        *steps,
        *(Step(f"old facts in {table}", f"DELETE FROM {table} {changed}") for table in KEPT_TABLES),
        Step("store facts", sql.render(facts, session), postgres_settings=SORTED_AGGREGATE),
        Step("member totals", sql.render(_MEMBER_TOTALS, session)),
        Step("source facts", sql.render(_SOURCE_FACTS, session)),
        Step("store cut points", f"CREATE TEMPORARY TABLE store_cuts AS {store_cuts}", "store_cuts"),
        Step("store scores", sql.render(rescore, session)),
        Step("member sources", sql.render(sources, session), "member_sources", PARALLEL),
        Step("chain cut points", chain_cuts, "chain_cuts"),
        Step("member view", sql.render(members, session)),
    ]


def refresh(session: Session, *, as_of: datetime, default_tier: str, store_cities: Mapping[str, str | None]) -> int:
    """Bring the member view and the per-store RFM up to date as of ``as_of``; returns the members in
    the view."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        for setting in PLANNER:
            session.execute(text(f"SET LOCAL {setting}"))
    # emptied first: on PostgreSQL TRUNCATE's lock makes a second run wait for this one to commit
    session.execute(text("TRUNCATE member_metrics" if postgres else "DELETE FROM member_metrics"))
    drop_work_tables(session)
    for step in statements(session, as_of=as_of, default_tier=default_tier, store_cities=store_cities):
        run(session, step)
    drop_work_tables(session)
    if postgres:
        session.execute(text("ANALYZE member_metrics"))
    return int(session.scalar(text("SELECT COUNT(*) FROM member_metrics")) or 0)


def rebuild(session: Session) -> None:
    """Forget the kept facts and queue every active member: the next run recomputes them all (what
    a run after migration 0014_9 does too)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    for table in KEPT_TABLES:
        session.execute(text(f"TRUNCATE {table}" if postgres else f"DELETE FROM {table}"))
    session.execute(text("DELETE FROM member_facts_queue"))
    session.execute(
        text("INSERT INTO member_facts_queue (member_id) SELECT member_id FROM golden_members WHERE status = 'active'")
    )


def run(session: Session, step: Step) -> None:
    """One step, its planner settings applying to its statement only."""
    postgres = session.get_bind().dialect.name == "postgresql"
    settings = step.postgres_settings if postgres else ()
    for setting in settings:
        session.execute(text(f"SET LOCAL {setting}"))
    session.execute(text(step.sql))
    for setting in settings:
        session.execute(text(f"SET LOCAL {setting.split('=')[0].strip()} TO DEFAULT"))
    if postgres and step.fills:  # autovacuum never sees temporary tables: the planner needs their sizes
        session.execute(text(f"ANALYZE {step.fills}"))


def drop_work_tables(session: Session, tables: tuple[str, ...] = WORK_TABLES) -> None:
    schema = "pg_temp" if session.get_bind().dialect.name == "postgresql" else "temp"  # never a real table
    for table in tables:
        session.execute(text(f"DROP TABLE IF EXISTS {schema}.{table}"))
