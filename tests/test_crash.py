"""Crash safety of a sync: a child process pulling from a (slow) simulator is killed with SIGKILL
after some pages are committed and while it waits in the middle of the next one; running the sync
again leaves the hub holding exactly the system's records, and the cursor consistent with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from connectors import connector_for
from connectors.simulators import TOKENS, generate_world
from connectors.simulators.shopify import ShopifySimulator
from hub.db import engine_for, upgrade
from hub.ingest import read_cursor, sync
from hub.tables import SourceRecordRow
from schemas import ConnectorConfig

ROOT = Path(__file__).resolve().parents[1]
PAGE_SIZE = 10
CHILD = textwrap.dedent(
    """
    import sys
    from sqlalchemy.orm import sessionmaker
    from connectors import connector_for
    from hub.db import engine_for
    from hub.ingest import sync
    from schemas import ConnectorConfig

    url, base_url, token, page_size = sys.argv[1:5]
    config = ConnectorConfig(kind="shopify", base_url=base_url, token=token, page_size=int(page_size))
    with connector_for("shopify", config) as connector:
        sync(connector, sessionmaker(engine_for(url), expire_on_commit=False))
    print("finished")
    """
)


def stored_count(factory: sessionmaker) -> int:
    try:
        with factory() as session:
            return session.scalar(select(func.count()).select_from(SourceRecordRow)) or 0
    except Exception:  # SQLite busy while the child commits: ask again
        return 0


def test_killed_sync_resumes_without_loss_or_doubles(database_url, tmp_path):
    upgrade(database_url)
    factory = sessionmaker(engine_for(database_url), expire_on_commit=False)
    sim = ShopifySimulator(generate_world(120, seed=3), token=TOKENS["shopify"], leak_rate=10_000, retry_after=0.02)
    sim.start()
    try:
        sim.faults.slow_seconds = 0.25  # every page takes a while: a kill lands mid-page
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, database_url, sim.base_url, sim.token, str(PAGE_SIZE)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while stored_count(factory) < 2 * PAGE_SIZE:  # at least two pages committed
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child stored nothing in 60 s"
            time.sleep(0.05)
        time.sleep(0.1)  # into the next page's wait
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"

        killed_at = stored_count(factory)
        customers = sim.customers()
        assert 2 * PAGE_SIZE <= killed_at < len(customers), "the kill did not land mid-sync"
        with factory() as session:
            # Shopify lists by id: only the last page carries a cursor, so none was written yet.
            assert read_cursor(session, "shopify", "customers") is None
            rows = session.scalars(select(SourceRecordRow).where(SourceRecordRow.stream == "customers")).all()
            by_id = {c["id"]: c for c in customers}
            assert all(json.loads(json.dumps(by_id[int(r.external_id)])) == r.payload for r in rows)

        sim.faults.slow_seconds = 0
        config = ConnectorConfig(kind="shopify", base_url=sim.base_url, token=sim.token, page_size=PAGE_SIZE)
        with connector_for("shopify", config) as connector:
            again = sync(connector, factory)
        assert again.new == len(customers) + len(sim.orders()) - killed_at
        with factory() as session:
            for stream, expected in (("customers", customers), ("orders", sim.orders())):
                rows = session.scalars(select(SourceRecordRow).where(SourceRecordRow.stream == stream)).all()
                ids = [r.external_id for r in rows]
                assert len(ids) == len(set(ids)) == len(expected)
                payloads = {r.external_id: r.payload for r in rows}
                assert payloads == {str(e["id"]): json.loads(json.dumps(e)) for e in expected}
                latest = max(datetime_of(e["updated_at"]) for e in expected)
                assert datetime_of(read_cursor(session, "shopify", stream)) == latest
    finally:
        sim.stop()
        engine_for(database_url).dispose()


def datetime_of(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)
