"""Personal data through the whole pipeline against the simulators, on SQLite and PostgreSQL: a dump
of the hub database holds no phone number or e-mail address of anyone (though the hub reads them
all back); a person's export holds everything about them; a forgotten person stays forgotten
through later syncs, while their ledger stays."""

import json
import re
import sqlite3
import subprocess
from urllib.parse import unquote

import pytest
from dagster import DagsterInstance
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from connectors.simulators import start_simulators
from hub import ledger
from hub.cli import app
from hub.db import engine_for
from hub.demo import write_demo_config
from hub.privacy import PrivacyError
from hub.privacy.requests import find_member
from hub.resolution.steward import pin_field
from hub.service import Hub
from hub.tables import (
    AuditLog,
    GoldenMember,
    LedgerEntryRow,
    MemberLink,
    PrivacyTombstone,
    SourceRecordRow,
    StagedMember,
)
from orchestration.runner import run_pipeline

PINNED = "+8613912345678"


@pytest.fixture
def cluster(tmp_path):
    with start_simulators(members=60, seed=5, state_dir=tmp_path / "systems") as running:
        yield running


def run(config_path, database_url):
    figures = run_pipeline(str(config_path), database_url=database_url, instance=DagsterInstance.ephemeral())
    failures = figures.pop("_failures")
    assert failures["success"], failures["steps"]
    return figures


def dump(database_url: str) -> str:
    """The whole database as text: ``pg_dump`` of the test's schema, or SQLite's ``.dump``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database) as connection:
            return "\n".join(connection.iterdump())
    schema = re.search(r"search_path=(\w+)", unquote(url.query["options"])).group(1)
    command = ["pg_dump", "-h", url.host, "-p", str(url.port or 5432), "-U", url.username, "-n", schema, url.database]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def contacts(world):
    """Every phone (national digits, as any format would show them) and e-mail of the generated people."""
    phones = {p.phone.removeprefix("+86") for p in world.people}
    emails = {p.email.lower() for p in world.people}
    for copies in world.members.values():
        emails |= {c.email.lower() for c in copies if c.email}
    return phones, emails


def test_a_dump_of_the_hub_holds_no_phone_or_email(cluster, database_url, tmp_path):
    config_path = tmp_path / "hub.yaml"
    write_demo_config(config_path, cluster.connector_configs(), database_url)
    run(config_path, database_url)
    sessions = sessionmaker(engine_for(database_url))
    with sessions() as session, session.begin():
        member_id = session.scalar(select(GoldenMember.member_id).where(GoldenMember.status == "active").limit(1))
        pin_field(session, member_id, "phone", PINNED, actor="steward", reason="told us at the till")
    phones, emails = contacts(cluster.world)

    # the hub holds them all, and reads them back ...
    with sessions() as session:
        held = json.dumps([p for p in session.scalars(select(SourceRecordRow.payload))], ensure_ascii=False).lower()
        staged_phones = {p.removeprefix("+86") for p in session.scalars(select(StagedMember.phone)) if p}
        assert session.scalar(select(GoldenMember.phone).where(GoldenMember.member_id == member_id)) == PINNED
    assert len(emails) > 50 and all(e in held for e in emails)
    assert len(staged_phones & phones) > 40

    # ... but the database never shows one
    text = dump(database_url)
    assert "CREATE TABLE" in text and "staged_members" in text and "v1:" in text
    lowered = text.lower()
    assert [e for e in emails if e in lowered] == []
    assert [p for p in phones | {PINNED.removeprefix("+86")} if p in text] == []


def test_export_then_forget_a_person_who_stays_forgotten(cluster, database_url, tmp_path):
    config_path = tmp_path / "hub.yaml"
    write_demo_config(config_path, cluster.connector_configs(), database_url)
    Hub(config_path=config_path).upgrade()
    run(config_path, database_url)
    sessions = sessionmaker(engine_for(database_url))
    truth = cluster.truth()
    people = {p.person_id: p for p in cluster.world.people}
    # someone in the shop and one more system, with points
    with sessions() as session:
        owner = {
            (s.source, s.source_id): link.member_id
            for s, link in session.execute(select(StagedMember, MemberLink).join(MemberLink))
        }
        balances = ledger.balances(session)
    chosen = next(
        pid
        for (system, ext), pid in sorted(truth.items())
        if system == "shopify"
        and len({s for (s, _), p in truth.items() if p == pid}) > 1
        and balances.get(owner[(system, ext)], 0) > 0
    )
    keys = sorted(k for k, p in truth.items() if p == chosen)
    member_id = owner[next(k for k in keys if k[0] == "shopify")]
    person = people[chosen]
    with sessions() as session, session.begin():
        pin_field(session, member_id, "phone", PINNED, actor="steward")
        entries = session.scalar(select(func.count()).where(LedgerEntryRow.member_id == member_id))
        balance = ledger.balance(session, member_id)
    cli = CliRunner()

    exported = cli.invoke(app, ["--config", str(config_path), "privacy", "export", member_id, "--actor", "dpo"])
    assert exported.exit_code == 0, exported.output
    data = json.loads(exported.output)
    assert data["member_id"] == member_id and data["golden"][0]["phone"] == PINNED
    assert sorted((r["source"], r["source_id"]) for r in data["source_records"]) == keys
    assert all(r["raw"] and r["link"]["member_id"] == member_id for r in data["source_records"])
    assert any(r["staged"]["email"] for r in data["source_records"])
    assert data["orders"] and len(data["points"][member_id]["history"]) == entries
    assert data["points"][member_id]["balance"] == balance and member_id in data["tiers"]
    assert [a["action"] for a in data["audit"] if a["action"] == "pin_field"] == ["pin_field"]
    with sessions() as session:
        read = session.scalars(select(AuditLog).where(AuditLog.action == "privacy.export")).one()
        assert (read.actor, read.entity_id) == ("dpo", member_id)

    forgotten = cli.invoke(
        app, ["--config", str(config_path), "privacy", "forget", person.email, "--reason", "DSR-1", "--yes", "--json"]
    )
    assert forgotten.exit_code == 0, forgotten.output
    counts = json.loads(forgotten.output)
    assert counts["member_id"] == member_id and counts["source_members_erased"] == len(keys)
    assert counts["ledger_entries_kept"] == entries and counts["tombstones"] >= len(keys)

    def check_forgotten() -> None:
        with sessions() as session:
            golden = session.scalar(select(GoldenMember).where(GoldenMember.member_id == member_id))
            assert golden.status == "forgotten"
            assert (golden.full_name, golden.phone, golden.email, golden.phone_bidx) == (None, None, None, None)
            staged = set(map(tuple, session.execute(select(StagedMember.source, StagedMember.source_id))))
            assert staged.isdisjoint(keys)
            raw = {
                (r.source, r.external_id): r.payload
                for r in session.scalars(select(SourceRecordRow).where(SourceRecordRow.stream == "customers"))
            }
            assert all(raw[k] == {} for k in keys if k in raw)
            everything = json.dumps(list(raw.values()), ensure_ascii=False).lower()
            assert person.email.lower() not in everything
            # the ledger stays, under the now pseudonymous id
            assert session.scalar(select(func.count()).where(LedgerEntryRow.member_id == member_id)) == entries
            assert ledger.balance(session, member_id) == balance
            pin = session.scalars(select(AuditLog).where(AuditLog.action == "pin_field")).one()
            assert pin.after["phone"] == "[erased]"
            with pytest.raises(PrivacyError, match="no member holds that email"):
                find_member(session, person.email)
            assert session.scalar(select(func.count()).select_from(PrivacyTombstone)) == counts["tombstones"]

    check_forgotten()
    # the shop changes the customer, and everything is synced and run again: they do not come back
    shop_id = next(ext for system, ext in keys if system == "shopify")
    cluster.simulators["shopify"].touch(shop_id, note="called about an order")
    again = run(config_path, database_url)
    assert again["raw/shopify"]["changed"] >= 1 and again["golden"]["created"] == 0
    check_forgotten()
    exported = cli.invoke(app, ["--config", str(config_path), "privacy", "export", member_id])
    after = json.loads(exported.output)
    assert after["source_records"] == [] and after["golden"][0]["status"] == "forgotten"
    assert after["golden"][0]["email"] is None and len(after["tombstones"]) == counts["tombstones"]
