"""Segment and event tags written back to the four simulated systems after a real pipeline run:
each customer shows exactly its member's tags, people's own tags stay, a second push sends nothing,
and a change sends only what changed — checked from the simulators' side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance

from connectors.simulators import start_simulators
from hub import segment_writeback, segments
from hub.demo import write_demo_config
from hub.service import Hub
from orchestration.runner import run_pipeline

AS_OF = datetime(2025, 7, 1, 4, 0, tzinfo=UTC)
WRITES = {
    "shopify": ("PUT",),
    "hubspot": ("POST /crm/v3/objects/contacts/batch/update",),
    "odoo": ("POST /jsonrpc",),
    "square": ("PUT /v2/customers/(?P<id>[^/]+)/groups", "DELETE /v2/customers/(?P<id>[^/]+)/groups", "POST /v2/customers/groups"),
}  # fmt: skip


def shown_tags(cluster, prefix="MH-"):
    """(system, customer id) -> the hub's tags the system now shows, as a set."""
    shown = {}
    for c in cluster.simulators["shopify"].customers():
        shown[("shopify", str(c["id"]))] = {t.strip() for t in (c.get("tags") or "").split(",") if t.strip()}
    hubspot = cluster.simulators["hubspot"]
    for cid in hubspot.truth():
        value = hubspot.contact(cid).get("memberhub_tags") or ""
        shown[("hubspot", cid)] = {t for t in value.split(";") if t}
    odoo = cluster.simulators["odoo"]
    names = {rid: r["name"] for rid, r in odoo.tables["res.partner.category"].records.items()}
    for pid in odoo.truth():
        shown[("odoo", pid)] = {names[c] for c in odoo.record("res.partner", int(pid)).get("category_id") or []}
    square = cluster.simulators["square"]
    for cid, customer in square.customers.items():
        shown[("square", cid)] = {square.groups[g]["name"] for g in customer.get("group_ids") or []}
    return shown


def write_requests(cluster):
    counts = cluster.request_counts()
    return {
        system: sum(n for key, n in counts[system].items() if any(key.startswith(w) for w in WRITES[system]))
        for system in WRITES
    }


@pytest.fixture
def chain(tmp_path, database_url):
    with start_simulators(members=80, seed=13, state_dir=tmp_path / "systems") as cluster:
        config_path = tmp_path / "hub.yaml"
        write_demo_config(config_path, cluster.connector_configs(), database_url)
        hub = Hub(config_path=config_path)
        hub.upgrade()
        figures = run_pipeline(str(config_path), database_url=database_url, instance=DagsterInstance.ephemeral())
        assert figures["_failures"]["success"], figures["_failures"]["steps"]
        yield cluster, hub


def expected_tags(hub, definitions, now):
    with hub.session() as session:
        wanted = segment_writeback.desired_tags(session, definitions, now)
        links = {}
        for name in hub.writeback_names:
            plan = segment_writeback.plan(session, name, definitions, now=now)
            links.update({(name, u.external_id): set(u.tags) for u in plan.updates})
    return wanted, links


def test_tags_reach_every_system_once_and_follow_changes(chain):
    cluster, hub = chain
    definitions = segments.load_segments()
    cluster.simulators["shopify"].touch(cluster.simulators["shopify"].customers()[0]["id"], tags="VIP客户, MH-旧标签")
    segments.refresh(hub, as_of=AS_OF, definitions=definitions)
    _wanted, planned = expected_tags(hub, definitions, AS_OF)
    assert sum(1 for tags in planned.values() if tags) > 50

    first = {
        name: segment_writeback.push_destination(hub, name, definitions, now=AS_OF) for name in hub.writeback_names
    }
    for name, counts in first.items():
        assert counts["failed"] == 0, (name, counts["errors"][:3])
        assert counts["sent"] > 0
    shown = shown_tags(cluster)
    for key, tags in planned.items():
        assert shown[key] - {"VIP客户", "会员", "VIP"} == tags, key
    first_shopify = cluster.simulators["shopify"].customers()[0]
    assert "VIP客户" in first_shopify["tags"] and "MH-旧标签" not in first_shopify["tags"]
    odoo = cluster.simulators["odoo"]
    kept = [p for p in odoo.tables["res.partner"].records.values() if 1 in (p.get("category_id") or [])]
    assert kept, "partners keep the tags people gave them"

    before = write_requests(cluster)
    again = {
        name: segment_writeback.push_destination(hub, name, definitions, now=AS_OF) for name in hub.writeback_names
    }
    assert all(c["sent"] == 0 and c["failed"] == 0 for c in again.values()), again
    assert write_requests(cluster) == before  # nothing was written twice
    assert shown_tags(cluster) == shown

    later = AS_OF + timedelta(days=200)  # members age into 沉睡会员, new customers leave 新客
    segments.refresh(hub, as_of=later, definitions=definitions)
    _, planned_later = expected_tags(hub, definitions, later)
    moved = {
        name: segment_writeback.push_destination(hub, name, definitions, now=later) for name in hub.writeback_names
    }
    assert sum(c["sent"] for c in moved.values()) == len(planned_later) > 0
    shown_later = shown_tags(cluster)
    with hub.session() as session:
        for name in hub.writeback_names:
            for external_id, tags in segment_writeback.state(session, name).items():
                assert shown_later[(name, external_id)] - {"VIP客户", "会员", "VIP"} == set(tags)
    assert any("MH-沉睡会员" in tags for tags in shown_later.values())
