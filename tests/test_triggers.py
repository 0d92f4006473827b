"""Automation triggers: the events due equal a direct computation (consented members only), each is
emitted once per member and period, and delivered to a real HTTP receiver on 127.0.0.1 — signed,
retried after failures, logged, and never delivered twice."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from test_segments_world import AS_OF, build, expected_view

from connectors.webhooks import verify_memberhub
from hub import segments, triggers
from hub.db import engine_for, session_scope
from hub.segments import load_segments
from hub.tables import MarketingEvent, MemberMetrics, PointsLot, SegmentChange, WebhookDelivery
from hub.tiers import QUALIFYING_STATUSES
from schemas import ProgrammeConfig

PROGRAMME = ProgrammeConfig()
SECRET = "whsec_test"


class Receiver:
    """A webhook receiver: records every request, answers 500 to the first ``fail_first`` and to
    every request for an event id in ``refuse``."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail_first = 0
        self.refuse: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append({"headers": headers, "body": body})
                failing = receiver.fail_first > 0 or headers["x-memberhub-event-id"] in receiver.refuse
                receiver.fail_first -= 1
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/memberhub"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def chain(database_url):
    with session_scope(database_url) as session:
        world = build(session)
    with session_scope(database_url) as session:
        segments.recompute(session, load_segments(), default_tier="regular", as_of=AS_OF)
    return world


def expected_events(database_url, world, config):
    view = expected_view(world)
    consented = {m for m, row in view.items() if row["marketing_consent"] is True}
    want = set()
    for m in consented:
        if world.golden[m]["birthday"].month == 7:
            want.add(("birthday_month", m))
        if world.tier_rows.get(m) == 2:
            want.add(("tier_upgraded", m))
        row = view[m]
        if row["stores"] >= 2 and AS_OF - timedelta(days=30) < row["last_order_at"] <= AS_OF:
            want.add(("first_cross_store_purchase", m))
    spend = defaultdict(Decimal)
    for o in world.orders:
        if o["status"] in QUALIFYING_STATUSES:
            spend[o["member_id"]] += o["net"]
    floors = {"silver": Decimal(1000), "gold": Decimal(5000)}
    for m, tier in world.tiers.items():
        if m in consented and tier in floors and spend[m] < floors[tier]:
            want.add(("retention_at_risk", m))
    with session_scope(database_url) as session:
        for lot in session.scalars(select(PointsLot).where(PointsLot.remaining > 0)):
            if lot.member_id in consented and AS_OF < lot.expires_at <= AS_OF + timedelta(days=30):
                want.add(("points_expiring", lot.member_id))
        for change in session.scalars(select(SegmentChange).where(SegmentChange.segment == "dormant")):
            if change.member_id in consented and change.change == "entered":
                want.add(("entered_dormant", change.member_id))
    return want, consented


def emitted(database_url):
    with session_scope(database_url) as session:
        return session.scalars(select(MarketingEvent).order_by(MarketingEvent.id)).all()


def test_events_are_the_due_ones_once_and_only_for_consenting_members(database_url, chain):
    config = {"retention_warning_days": 40}
    want, consented = expected_events(database_url, chain, config)
    with session_scope(database_url) as session:
        first = triggers.emit(session, PROGRAMME, config, now=AS_OF)
    events = emitted(database_url)
    assert {(e.kind, e.member_id) for e in events} == want
    assert {k for k, _ in want} == set(triggers.EVENT_LABELS)  # every kind is exercised
    periods = {"birthday_month": "2025-07", "retention_at_risk": "2025-07", "entered_dormant": "2025-07-01"}
    assert all(e.period == periods[e.kind] for e in events if e.kind in periods)
    assert all(e.member_id in consented for e in events)
    assert sum(first.emitted.values()) == len(events)

    with session_scope(database_url) as session:
        again = triggers.emit(session, PROGRAMME, config, now=AS_OF + timedelta(hours=3))
    assert again.emitted == {} and again.already == len(events)
    assert len(emitted(database_url)) == len(events)

    with session_scope(database_url) as session:
        tags = triggers.active_tags(session, "MH-", AS_OF)
    assert {m for _kind, m in want} == set(tags)
    assert all(tag.startswith("MH-") for member_tags in tags.values() for tag in member_tags)


def test_webhooks_are_signed_retried_logged_and_never_sent_twice(database_url, chain, receiver):
    config = {"retention_warning_days": 40, "webhook_url": receiver.url, "webhook_secret": SECRET}
    with session_scope(database_url) as session:
        triggers.emit(session, PROGRAMME, config, now=AS_OF)
    events = emitted(database_url)
    assert len(events) > 10
    stubborn = triggers.event_id(events[-1])  # refused this run: retried three times, then again next run
    opted_out = next(e.member_id for e in events[1:] if e.member_id not in (events[0].member_id, events[-1].member_id))
    with session_scope(database_url) as session:
        session.get(MemberMetrics, opted_out).marketing_consent = False  # opted out after the event was due
    suppressed = sum(1 for e in events if e.member_id == opted_out)
    receiver.fail_first, receiver.refuse = 2, {stubborn}

    sessions = sessionmaker(engine_for(database_url), expire_on_commit=False)
    first = triggers.deliver(sessions, config, wait=lambda attempt: 0)
    assert first.suppressed == suppressed
    assert first.failed == 1 and first.delivered == len(events) - suppressed - 1
    for request in receiver.received:
        headers = request["headers"]
        assert verify_memberhub(SECRET, request["body"], headers["x-memberhub-timestamp"],
                                headers["x-memberhub-signature"])  # fmt: skip
        assert not verify_memberhub("other", request["body"], headers["x-memberhub-timestamp"],
                                    headers["x-memberhub-signature"])  # fmt: skip
        body = json.loads(request["body"])
        assert body["id"] == headers["x-memberhub-event-id"] and body["member_id"] != opted_out
    ok = Counter(r["headers"]["x-memberhub-event-id"] for r in receiver.received[2:] if
                 r["headers"]["x-memberhub-event-id"] != stubborn)  # fmt: skip
    assert all(n == 1 for n in ok.values())  # after the two failures, each event was accepted once
    assert Counter(r["headers"]["x-memberhub-event-id"] for r in receiver.received)[stubborn] == 3  # 3 tries a run

    with session_scope(database_url) as session:
        log = session.scalars(select(WebhookDelivery)).all()
    assert len(log) == len(receiver.received)
    assert sum(1 for d in log if not d.ok) == 2 + 3 and all(d.status_code in (200, 500) for d in log)

    receiver.refuse = set()
    before = len(receiver.received)
    second = triggers.deliver(sessions, config, wait=lambda attempt: 0)
    assert (second.delivered, second.failed) == (1, 0)
    assert [r["headers"]["x-memberhub-event-id"] for r in receiver.received[before:]] == [stubborn]
    third = triggers.deliver(sessions, config, wait=lambda attempt: 0)
    assert third.delivered == 0 and len(receiver.received) == before + 1
