"""The whole path against the simulators: pull, map, resolve, post, tier, write back — checked
from the simulators' side against the generated ground truth, on SQLite and on PostgreSQL."""

from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal

import pytest
from dagster import DagsterInstance

from connectors.simulators import start_simulators
from hub.demo import write_demo_config
from hub.service import Hub
from hub.tiers import tier_for
from orchestration.runner import run_pipeline
from schemas import ProgrammeConfig


def expected_by_person(world):
    """What every person should have: points and tier computed straight from their generated orders."""
    ladder = ProgrammeConfig().tiers
    points, spend = defaultdict(int), defaultdict(Decimal)
    for orders in world.orders.values():
        for order in orders:
            if order.status == "paid":
                points[order.person_id] += int(order.total.to_integral_value(rounding=ROUND_FLOOR))
                spend[order.person_id] += order.total
    return {p.person_id: (points[p.person_id], tier_for(spend[p.person_id], ladder).name) for p in world.people}


def square_customers_without_phone(cluster):
    square = cluster.simulators["square"]
    return {("square", c["id"]) for c in square.customers.values() if not c.get("phone_number")}


@pytest.fixture
def cluster(tmp_path):
    with start_simulators(members=150, seed=11, state_dir=tmp_path / "systems") as running:
        yield running


def run(config_path, database_url):
    figures = run_pipeline(str(config_path), database_url=database_url, instance=DagsterInstance.ephemeral())
    failures = figures.pop("_failures")
    assert failures["success"], failures["steps"]
    return figures


def test_every_person_gets_one_balance_and_tier_in_every_system(cluster, database_url, tmp_path):
    config_path = tmp_path / "hub.yaml"
    write_demo_config(config_path, cluster.connector_configs(), database_url)
    Hub(config_path=config_path).upgrade()
    first = run(config_path, database_url)

    expected = expected_by_person(cluster.world)
    shown = cluster.loyalty()
    by_person = defaultdict(set)
    no_phone = square_customers_without_phone(cluster)
    for key, person in cluster.truth().items():
        points, tier = shown[key]
        if key in no_phone:  # Square keys loyalty accounts by phone: no phone, no account, tier only
            assert points is None
            points = expected[person][0]
        by_person[person].add((points, tier))
    several = [p for p in by_person if len(cluster.world.systems_of(p)) > 1]
    assert len(several) > 30
    for person, values in by_person.items():
        assert values == {expected[person]}, f"person {person}: systems show {values}, expected {expected[person]}"

    for system in cluster.simulators:
        assert first[f"raw/{system}"]["pulled"] > 0
        assert first[f"writeback/{system}"]["failed"] == 0
        partial = len(no_phone) if system == "square" else 0  # the tier written, the points skipped
        assert first[f"writeback/{system}"]["partial"] == partial
    summary = Hub(config_path=config_path).summary()
    assert summary["golden_members"] == len(cluster.world.people)
    assert summary["points_outstanding"] == sum(points for points, _ in expected.values())
    assert sum(summary["quarantined"].values()) == 0

    second = run(config_path, database_url)
    assert sum(second[f"raw/{s}"]["new"] + second[f"raw/{s}"]["changed"] for s in cluster.simulators) == 0
    assert second["ledger"]["entries"] == 0
    assert second["golden"]["created"] == 0 and second["golden"]["linked"] == 0
    for system in cluster.simulators:
        assert second[f"writeback/{system}"]["sent"] == 0
    assert cluster.loyalty() == shown
