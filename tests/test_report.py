"""``memberhub report``: every table equals a direct computation (from the generated chain, or a plain
scan of the rows), on SQLite and PostgreSQL; charts are SVG, CSV round-trips; the CLI prints and writes."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import select
from test_segments import _matches
from test_segments_world import AS_OF, build, expected_view
from typer.testing import CliRunner

from hub import segments
from hub.analytics import BUILDERS, to_csv, to_svg
from hub.analytics import build as build_report
from hub.cli import app
from hub.db import session_scope
from hub.segments import load_segments
from hub.tables import LedgerEntryRow, MemberLink, PointsLot, SegmentMembership
from schemas import ProgrammeConfig

PROGRAMME = ProgrammeConfig()
PROGRAMME_ZONE = ZoneInfo(PROGRAMME.timezone)


@pytest.fixture
def report(database_url):
    with session_scope(database_url) as session:
        world = build(session)
    with session_scope(database_url) as session:
        segments.recompute(session, load_segments(), default_tier="regular", as_of=AS_OF)
    with session_scope(database_url) as session:
        labels = {s.name: s.label for s in load_segments()}
        tables = build_report(session, PROGRAMME, segment_labels=labels)
    return world, tables


def rows(table):
    return [list(r) for r in table.rows]


def test_every_table_equals_a_direct_computation(database_url, report):
    world, tables = report
    assert set(tables) == set(BUILDERS)
    per_source = Counter(s["source"] for staged in world.staged.values() for s in staged)
    assert rows(tables["members_per_source"]) == [[s, n, n] for s, n in sorted(per_source.items())]
    systems = Counter(len({s["source"] for s in world.staged[m]}) for m in world.members)
    assert rows(tables["overlap"]) == [[k, v] for k, v in sorted(systems.items())]
    assert rows(tables["golden_over_time"]) == [["2025-07-01", len(world.members), len(world.members)]]

    with session_scope(database_url) as session:
        linked = Counter(at.astimezone(AS_OF.tzinfo).date() for (at,) in session.execute(select(MemberLink.linked_at)))
        entries = session.scalars(select(LedgerEntryRow)).all()
        lots = session.scalars(select(PointsLot)).all()
    assert sum(r[1] for r in tables["merges_reviews"].rows) == sum(linked.values()) == sum(per_source.values())

    flow = defaultdict(lambda: [0, 0, 0])
    for e in entries:
        month = e.occurred_at.astimezone(PROGRAMME_ZONE).strftime("%Y-%m")
        slot = {"earn": 0, "redeem": 1, "expire": 2}.get(e.kind)
        if slot is not None:
            flow[(e.store_code, month)][slot] += abs(e.points + e.pending_points)
    assert rows(tables["points_flow"]) == [[s, m, *v] for (s, m), v in sorted(flow.items())]
    issued = sum(r[2] for r in tables["points_flow"].rows)
    redeemed = sum(r[3] for r in tables["points_flow"].rows)
    assert issued - redeemed == sum(world.points.values())

    owed = Counter()
    for lot in lots:
        owed[lot.store_code] += lot.remaining
    assert rows(tables["liability"]) == [[s, n, 0, n] for s, n in sorted(owed.items())]
    assert sum(r[3] for r in tables["liability"].rows) == sum(world.points.values())

    tiers = Counter(world.tiers.get(m, "regular") for m in world.members)
    assert rows(tables["tier_distribution"]) == [[t.name, t.label, tiers.get(t.name, 0)] for t in PROGRAMME.tiers]
    assert rows(tables["tier_movement"]) == [
        ["2025-07", len(world.tier_rows), sum(1 for n in world.tier_rows.values() if n == 2), 0, 0]
    ]

    view = expected_view(world)
    definitions = load_segments()
    sizes = {s.name: sum(1 for row in view.values() if _matches(s.name, row)) for s in definitions}
    assert rows(tables["segment_sizes"]) == [[s.name, s.label, sizes[s.name]] for s in definitions]

    expected_tiers = []
    for tier in (t.name for t in PROGRAMME.tiers):
        members = [r for m, r in view.items() if r["tier"] == tier]
        buyers = [r for r in members if r["orders"] > 0]
        repeat = [r for r in buyers if r["orders"] > 1]
        orders = sum(r["orders"] for r in members)
        spend = sum(r["spend"] for r in members)
        rate = round(len(repeat) / len(buyers), 4) if buyers else None
        expected_tiers.append([tier, len(members), len(buyers), len(repeat), rate, orders,
                               round(spend / orders, 2) if orders else None])  # fmt: skip
    got = rows(tables["purchases_per_tier"])
    for want, have in zip(expected_tiers, got, strict=True):
        assert have[:5] == want[:5] and have[5] == want[5]
        assert have[6] == pytest.approx(want[6], abs=0.011)

    assert rows(tables["cross_store_flows"]) == [[e, s, p] for (e, s), p in sorted(world.flows.items())]
    assert len(world.flows) >= 3


def test_charts_are_svg_and_csv_round_trips(report):
    _world, tables = report
    for table in tables.values():
        svg = to_svg(table)
        root = ElementTree.fromstring(svg)
        assert root.tag.endswith("svg")
        assert table.title.split(" / ")[1] in svg
        parsed = list(csv.reader(io.StringIO(to_csv(table))))
        assert parsed[0] == table.columns
        assert [[("" if v is None else str(v)) for v in row] for row in table.rows] == parsed[1:]


def test_report_command_prints_and_writes(database_url, report, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)  # no memberhub.yaml: the default programme
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    _world, tables = report
    for name, table in tables.items():
        assert data[name] == json.loads(json.dumps(table.as_dicts(), default=str)), name
        assert (out / f"{name}.svg").exists() and (out / f"{name}.csv").exists()
    printed = CliRunner().invoke(app, ["report", "--table", "tier_distribution"])
    assert printed.exit_code == 0 and "members per tier" in printed.output and "银卡" in printed.output
    wrong = CliRunner().invoke(app, ["report", "--table", "tier_distributon"])
    assert wrong.exit_code != 0
    listed = CliRunner().invoke(app, ["segments", "list", "--json"])
    sizes = {row["name"]: row["members"] for row in json.loads(listed.output)}
    assert sizes == {r[0]: r[2] for r in tables["segment_sizes"].rows}


def test_segments_asset_materialises_in_dagster(tmp_path):
    from hub.db import upgrade
    from orchestration.resources import HubResource
    from orchestration.segment_assets import segment_assets
    from schemas import HubConfig

    database_url = f"sqlite:///{tmp_path / 'hub.db'}"  # the wiring, once; the work is tested on both backends
    upgrade(database_url)
    with session_scope(database_url) as session:
        build(session, members=20)
    assets = segment_assets(HubConfig())
    result = materialize(
        assets, resources={"hub": HubResource(database_url=database_url)}, instance=DagsterInstance.ephemeral()
    )
    assert result.success
    with session_scope(database_url) as session:
        assert session.scalar(select(SegmentMembership.member_id).limit(1)) is not None
