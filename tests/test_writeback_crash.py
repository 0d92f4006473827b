"""Crash safety of write-back: a child process pushing points to every destination is killed with
SIGKILL in the middle of a Square batch — some adjustments applied at Square, none of the batch
acknowledged in the hub. Running the push again leaves every destination showing the hub's balance,
and Square's own ledger of events shows each change applied exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from connectors.simulators import start_simulators
from hub import ledger, tiers
from hub.demo import write_demo_config
from hub.service import Hub
from hub.tables import GoldenMember, MemberLink, StagedMember, WritebackState

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8
ADJUST = "POST /v2/loyalty/accounts/(?P<id>[^/]+)/adjust"
CHILD = textwrap.dedent(
    """
    import sys
    from hub import writeback
    from hub.service import Hub

    hub = Hub(config_path=sys.argv[1])
    for name in ("square", "shopify", "hubspot", "odoo"):
        with hub.connector(name) as connector:
            writeback.push(connector, hub.session, hub.config.programme, batch_size=int(sys.argv[2]))
    print("finished")
    """
)


def full_run(hub: Hub) -> None:
    for name in hub.connector_names:
        hub.sync(name)
    hub.stage()
    hub.resolve()
    hub.post_ledger()
    hub.evaluate_tiers()
    for name in hub.writeback_names:
        assert hub.push(name)["failed"] == 0


def acknowledged_since(hub: Hub, destination: str, moment: datetime) -> int:
    try:
        with hub.session() as session:
            return session.scalar(
                select(func.count())
                .select_from(WritebackState)
                .where(WritebackState.destination == destination, WritebackState.acknowledged_at > moment)
            )
    except Exception:  # SQLite busy while the child commits: ask again
        return 0


def shown_by_hub(hub: Hub) -> dict[tuple[str, str], tuple[int, str]]:
    with hub.session() as session:
        balances, current = ledger.balances(session), tiers.current_tiers(session)
        rows = session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id)
            .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
            .join(GoldenMember, GoldenMember.member_id == MemberLink.member_id)
            .where(GoldenMember.status == "active")
        ).all()
    return {(s, e): (max(0, balances.get(m, 0)), current.get(m, "regular")) for s, e, m in rows}


def test_killed_writeback_resumes_without_applying_a_delta_twice(database_url, tmp_path):
    with start_simulators(members=60, seed=21, state_dir=tmp_path / "systems") as cluster:
        config_path = tmp_path / "hub.yaml"
        write_demo_config(config_path, cluster.connector_configs(), database_url)
        hub = Hub(config_path=config_path)
        hub.upgrade()
        full_run(hub)
        square = cluster.simulators["square"]
        accounts_before = {a["id"]: a["balance"] for a in square.accounts.values()}

        with hub.session() as session, session.begin():  # a goodwill credit for every member
            members = session.scalars(select(GoldenMember.member_id).where(GoldenMember.status == "active")).all()
            for n, member in enumerate(members):
                ledger.adjust(session, member, 10 + n, reason="goodwill", actor="test", document=f"goodwill/{member}")
        planned = len(hub.plan("square").updates)
        with_account = sum(1 for a in square.accounts.values() if a.get("customer_id"))
        assert planned > 3 * BATCH and with_account > 2 * BATCH

        started = datetime.now(UTC)
        adjusts_before = square.requests[ADJUST]
        square.faults.slow_seconds = 0.05  # every request takes a while: the kill lands inside a batch
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config_path), str(BATCH)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 90
        while acknowledged_since(hub, "square", started) < BATCH:  # the first batch is committed
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child acknowledged nothing in 90 s"
            time.sleep(0.02)
        in_first = square.requests[ADJUST] - adjusts_before
        while square.requests[ADJUST] - adjusts_before < in_first + 3:  # three adjustments into the next
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child sent no more adjustments"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"
        acknowledged = acknowledged_since(hub, "square", started)
        assert acknowledged < planned, "the kill did not land mid-push"
        applied = square.requests[ADJUST] - adjusts_before
        assert applied > acknowledged  # applied at Square, never acknowledged in the hub

        square.faults.slow_seconds = 0
        for name in hub.writeback_names:  # the next run
            counts = hub.push(name)
            assert counts["failed"] == 0, counts["errors"]
        runs = hub.sync_history("square", limit=5)
        assert [r["status"] for r in runs[:2]] == ["finished", "interrupted"]

        expected = shown_by_hub(hub)
        shown = cluster.loyalty()
        phoneless = {c["id"] for c in square.customers.values() if not c.get("phone_number")}
        for key, (points, tier) in expected.items():
            if key[0] == "square" and key[1] in phoneless:
                points = None
            assert shown[key] == (points, tier), f"{key}: shows {shown[key]}, the hub says {(points, tier)}"

        moment = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ours = [
            e
            for e in square.events
            if e["type"] == "ADJUST_POINTS" and e["created_at"] >= moment and e["source"] == "LOYALTY_API"
        ]
        per_account: dict[str, list[int]] = {}
        for event in ours:
            per_account.setdefault(event["loyalty_account_id"], []).append(event["adjust_points"]["points"])
        assert per_account and all(len(deltas) == 1 for deltas in per_account.values()), per_account
        for account, deltas in per_account.items():
            assert square.accounts[account]["balance"] == accounts_before[account] + deltas[0]
