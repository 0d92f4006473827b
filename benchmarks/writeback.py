"""Write-back throughput: points and tiers for every member pushed to each simulator, then a re-run
with nothing changed (its request count must be 0).

    .venv/bin/python benchmarks/writeback.py --members 100000

The hub database is seeded directly (one golden member per generated person, linked to each of
their customers, one ledger entry and one tier each) so that the figures are the write-back's alone.
Shopify's simulator is given an unlimited bucket: at Shopify's real limit (2 calls/s, 20 on Plus)
two metafield writes per customer take 100,000 s (10,000 s on Plus) for 100,000 customers, and the
connector paces itself to that. HubSpot keeps its real limit (the connector's throttle, 170 calls
per 10 s). Not part of the test run: machines are shared and noisy, so figures belong in notes.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import sessionmaker

from connectors import connector_for
from connectors.simulators import SYSTEMS, TOKENS, generate_world
from connectors.simulators.hubspot import HubSpotSimulator
from connectors.simulators.odoo import OdooSimulator
from connectors.simulators.shopify import ShopifySimulator
from connectors.simulators.square import SquareSimulator, e164
from hub import writeback
from hub.db import engine_for, upgrade
from hub.tables import GoldenMember, LedgerEntryRow, MemberLink, SourceRecordRow, StagedMember, TierAssignmentRow
from schemas import ConnectorConfig, ProgrammeConfig

SIMULATORS = {
    "shopify": ShopifySimulator,
    "square": SquareSimulator,
    "hubspot": HubSpotSimulator,
    "odoo": OdooSimulator,
}
OPTIONS = {"shopify": {"bucket_size": 10**9, "leak_rate": 10.0**9}}
CHUNK = 5_000


def seed_hub(url: str, world, simulators, programme: ProgrammeConfig) -> int:
    """One golden member per person with a balance and a tier, linked to each system's customers."""
    rng = random.Random(1)
    factory = sessionmaker(engine_for(url))
    now = datetime.now(UTC)
    ladder = [level.name for level in programme.tiers]
    members = {person.person_id: f"MH{n:08d}" for n, person in enumerate(world.people, start=1)}
    with factory() as session, session.begin():
        golden = [{"seq": n, "member_id": m, "status": "active"} for n, m in enumerate(members.values(), start=1)]
        ledger = [
            {
                "member_id": m,
                "kind": "adjust",
                "points": rng.randint(0, 5000),
                "source": "benchmark",
                "document": f"opening/{m}",
                "payload_hash": hashlib.sha256(m.encode()).hexdigest(),
                "occurred_at": now,
                "reason": "opening balance",
            }
            for m in members.values()
        ]
        tiers = [
            {"member_id": m, "tier": rng.choice(ladder), "qualifying_amount": Decimal(0), "assigned_at": now}
            for m in members.values()
        ]
        for table, rows in ((GoldenMember, golden), (LedgerEntryRow, ledger), (TierAssignmentRow, tiers)):
            for start in range(0, len(rows), CHUNK):
                session.execute(insert(table), rows[start : start + CHUNK])
    linked = 0
    for system, sim in simulators.items():
        truth = sim.truth()
        phones = {}
        if system == "square":
            phones = {cid: e164(c.get("phone_number")) for cid, c in sim.customers.items()}
        ids = list(truth)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            with factory() as session, session.begin():
                session.execute(
                    insert(SourceRecordRow),
                    [
                        {"source": system, "stream": "members", "external_id": str(e), "payload": {}}
                        | {"content_hash": "-"}
                        for e in chunk
                    ],
                )
                record_ids = dict(
                    session.execute(
                        select(SourceRecordRow.external_id, SourceRecordRow.id).where(
                            SourceRecordRow.source == system, SourceRecordRow.external_id.in_([str(e) for e in chunk])
                        )
                    ).all()
                )
                session.execute(
                    insert(StagedMember),
                    [
                        {
                            "source_record_id": record_ids[str(e)],
                            "source": system,
                            "source_id": str(e),
                            "channel": "pos",
                            "phone": phones.get(e),
                        }
                        for e in chunk
                    ],
                )
                staged = session.execute(
                    select(StagedMember.source_id, StagedMember.id).where(
                        StagedMember.source == system, StagedMember.source_id.in_([str(e) for e in chunk])
                    )
                ).all()
                session.execute(
                    insert(MemberLink),
                    [{"staged_member_id": i, "member_id": members[truth[e]], "rule": "benchmark"} for e, i in staged],
                )
            linked += len(chunk)
    return linked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000, help="people in the generated chain")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    programme = ProgrammeConfig()
    started = time.perf_counter()
    world = generate_world(args.members, args.seed, systems=tuple(SYSTEMS))
    print(f"generated {args.members} people in {time.perf_counter() - started:.1f} s")
    simulators = {}
    for system in systems:
        simulators[system] = SIMULATORS[system](world, token=TOKENS[system], **OPTIONS.get(system, {}))
        simulators[system].start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{Path(tmp) / 'hub.db'}"
            upgrade(url)
            started = time.perf_counter()
            linked = seed_hub(url, world, simulators, programme)
            print(f"seeded the hub: {linked} customers linked in {time.perf_counter() - started:.1f} s\n")
            factory = sessionmaker(engine_for(url), expire_on_commit=False)
            print(f"{'system':8} {'run':10} {'customers':>9} {'sent':>8} {'failed':>6} {'partial':>7} "
                  f"{'requests':>9} {'seconds':>8} {'per s':>8}")  # fmt: skip
            for system, sim in simulators.items():
                config = ConnectorConfig(
                    kind=system, base_url=sim.base_url, token=sim.token, **sim.connector_settings()
                )
                for run in ("first", "no change"):
                    before = sum(sim.requests.values())
                    with connector_for(system, config) as connector:
                        if system == "shopify":
                            connector.leak_per_second = 10.0**9
                        began = time.perf_counter()
                        counts = writeback.push(connector, factory, programme)
                        seconds = time.perf_counter() - began
                    requests = sum(sim.requests.values()) - before
                    customers = counts.sent + counts.failed + counts.skipped
                    rate = (counts.sent + counts.failed) / seconds if seconds else 0
                    print(
                        f"{system:8} {run:10} {customers:9} {counts.sent:8} {counts.failed:6} {counts.partial:7} "
                        f"{requests:9} {seconds:8.1f} {rate:8.0f}"
                    )
                    if run == "no change" and requests:
                        print(f"  !! {system}: a run with nothing changed sent {requests} requests")
    finally:
        for sim in simulators.values():
            sim.stop()


if __name__ == "__main__":
    main()
