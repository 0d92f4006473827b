"""Every source through every fault, synced into a real hub database: what the hub holds afterwards
is exactly what the system holds — every record, once, with its current content.

Each fault is switched on after the sync's second request, so it hits a read already under way
(pages stored, cursor not yet final). The reference is a fresh, fault-free read of every stream
through a new connector. The whole matrix runs on SQLite; one fault per source runs on PostgreSQL
too (``database_url``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from connectors import Connector, connector_for
from connectors.simulators import TOKENS, generate_world
from connectors.simulators._server import Request, Response, Simulator
from connectors.simulators.hubspot import HubSpotSimulator
from connectors.simulators.odoo import OdooSimulator
from connectors.simulators.shopify import ShopifySimulator
from connectors.simulators.square import SquareSimulator
from hub.db import engine_for, upgrade
from hub.ingest import read_cursor, sync
from hub.tables import SourceRecordRow
from schemas import ConnectorConfig
from schemas.errors import FatalError

SYSTEMS = ("shopify", "square", "hubspot", "odoo")
FAULTS = ("rate_limit", "errors_500", "errors_503", "slow", "reset", "malformed", "changing", "expired_token")
PAGE_SIZE = 7
TIMEOUT = 0.4  # the connector gives up on a request after this long...
SLOW_BY = 1.0  # ...and a slowed request answers after this long
ARM_AFTER = 2  # requests served before the fault is switched on


@pytest.fixture(scope="module")
def world():
    return generate_world(60, seed=11)


def start(system: str, world) -> Simulator:
    token = TOKENS[system]
    if system == "shopify":
        sim: Simulator = ShopifySimulator(world, token=token, leak_rate=10_000, retry_after=0.02)
    elif system == "square":
        sim = SquareSimulator(world, token=token)
    elif system == "hubspot":
        sim = HubSpotSimulator(world, token=token, rate_limit=10_000)
    else:
        sim = OdooSimulator(world, token=token)
    sim.start()
    return sim


@pytest.fixture(params=SYSTEMS)
def sim(request, world):
    simulator = start(request.param, world)
    yield simulator
    simulator.after_request = None
    simulator.stop()


def connect(sim: Simulator, **settings: Any) -> Connector:
    options = {"page_size": PAGE_SIZE, "timeout_seconds": TIMEOUT, "max_retry_wait_seconds": 0.05}
    options.update(sim.connector_settings(), **settings)
    config = ConnectorConfig(kind=sim.system, base_url=sim.base_url, token=sim.token, **options)
    return connector_for(sim.system, config)


def after_requests(sim: Simulator, count: int, action: Callable[[], None]) -> None:
    """Run ``action`` once, just before the answer to the ``count``-th request goes out."""
    served = 0
    lock = threading.Lock()

    def hook(request: Request, response: Response) -> None:
        nonlocal served
        with lock:
            served += 1
            if served == count:
                action()

    sim.after_request = hook


@pytest.fixture(autouse=True)
def _release_connections() -> Iterator[None]:
    """Each PostgreSQL test has a schema (and so an engine) of its own: close its pool afterwards."""
    yield
    for url in _opened:
        engine_for(url).dispose()
    _opened.clear()


_opened: list[str] = []


def sessions(url: str) -> sessionmaker:
    upgrade(url)
    _opened.append(url)
    return sessionmaker(engine_for(url), expire_on_commit=False)


def source_truth(sim: Simulator) -> dict[str, dict[str, Any]]:
    """Every stream's records as a fresh, fault-free read sees them: stream -> external id -> record."""
    with connect(sim, timeout_seconds=30.0) as connector:
        truth: dict[str, dict[str, Any]] = {}
        for stream in connector.streams:
            records = [r for page in connector.read(stream.name, None) for r in page.records]
            by_id = {str(r[stream.id_field]): json.loads(json.dumps(r)) for r in records}
            assert len(by_id) == len(records), f"{stream.name}: the fault-free read itself doubled records"
            truth[stream.name] = by_id
    return truth


def stored(factory: sessionmaker, source: str) -> dict[str, dict[str, Any]]:
    held: dict[str, dict[str, Any]] = {}
    with factory() as session:
        for row in session.scalars(select(SourceRecordRow).where(SourceRecordRow.source == source)):
            stream = held.setdefault(row.stream, {})
            assert row.external_id not in stream, f"{row.stream} {row.external_id} stored twice"
            stream[row.external_id] = row.payload
    return held


def assert_hub_matches(factory: sessionmaker, sim: Simulator) -> None:
    truth = source_truth(sim)
    held = stored(factory, sim.system)
    for stream, expected in truth.items():
        got = held.get(stream, {})
        lost = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        assert not lost, f"{sim.system}/{stream}: lost {lost[:5]}"
        assert not extra, f"{sim.system}/{stream}: stored records the system does not hold: {extra[:5]}"
        stale = [i for i in expected if got[i] != expected[i]]
        assert not stale, f"{sim.system}/{stream}: stale content for {stale[:5]}"


# ----------------------------------------------------------------------------- what each fault does
def touch_first_and_last(sim: Simulator) -> list[str]:
    """Change the member read on the first page and one not read yet, as a user of that system would."""
    if isinstance(sim, ShopifySimulator):
        ids = [c["id"] for c in sim.customers()]
        for i in (ids[0], ids[-1]):
            sim.touch(i, note="changed mid-sync")
    elif isinstance(sim, SquareSimulator):
        ids = [c["id"] for c in sim.customer_list()]
        for i in (ids[0], ids[-1]):
            sim.touch(i, note="changed mid-sync")
    elif isinstance(sim, HubSpotSimulator):
        ids = sorted(sim.truth(), key=int)
        for i in (ids[0], ids[-1]):
            sim.touch(i, firstname="Changed")
    else:
        assert isinstance(sim, OdooSimulator)
        ids = sorted(sim.truth(), key=int)
        for i in (ids[0], ids[-1]):
            sim.touch("res.partner", int(i), name="Changed mid-sync")
    return [str(ids[0]), str(ids[-1])]


def arm(sim: Simulator, fault: str) -> Callable[[], None]:
    faults = sim.faults
    actions: dict[str, Callable[[], None]] = {
        "rate_limit": lambda: setattr(faults, "rate_limit", 4),
        "errors_500": lambda: (setattr(faults, "error_status", 500), setattr(faults, "errors", 3)),
        "errors_503": lambda: (setattr(faults, "error_status", 503), setattr(faults, "errors", 3)),
        "slow": lambda: (setattr(faults, "slow_by", SLOW_BY), setattr(faults, "slow", 2)),
        "reset": lambda: setattr(faults, "reset", 3),
        "malformed": lambda: setattr(faults, "malformed", 3),
        "changing": lambda: touched.extend(touch_first_and_last(sim)),
        "expired_token": lambda: (
            setattr(sim, "expire_sessions", 1)
            if isinstance(sim, OdooSimulator)
            else setattr(faults, "expired_token", True)
        ),
    }
    return actions[fault]


def cursor_moment(cursor: str | None) -> datetime | None:
    return datetime.fromisoformat(cursor) if cursor else None


def member_records(sim: Simulator) -> dict[str, dict[str, Any]]:
    members = {"shopify": "customers", "square": "customers", "hubspot": "contacts", "odoo": "partners"}[sim.system]
    return {members: source_truth(sim)[members]}


touched: list[str] = []


def run_through(fault: str, sim: Simulator, factory: sessionmaker) -> None:
    touched.clear()
    after_requests(sim, ARM_AFTER, arm(sim, fault))
    if fault == "expired_token" and not isinstance(sim, OdooSimulator):
        with connect(sim) as connector, pytest.raises(FatalError) as failure:
            sync(connector, factory)
        message = str(failure.value)
        assert "401" in message and "token" in message.lower(), message  # says what to fix
        assert_nothing_half_written(factory, sim)
        sim.faults.expired_token = False  # the operator puts in a fresh token and runs the sync again
        sim.after_request = None
        with connect(sim) as connector:
            sync(connector, factory)
        assert_hub_matches(factory, sim)
        return
    with connect(sim) as connector:
        first = sync(connector, factory)
    assert first.pulled > 0
    if fault == "changing":
        # The member read on page one changed after it was read: this sync may hold the old copy,
        # but its cursor must not pass the change, so the next incremental sync picks it up.
        assert touched, "the records never changed"
        held = stored(factory, sim.system)
        missed = any(held[stream][i] != truth[i] for stream, truth in member_records(sim).items() for i in touched)
        with connect(sim) as connector:
            second = sync(connector, factory)
        assert second.changed >= (1 if missed else 0)
    else:
        for name, value in (("rate_limit", 0), ("errors", 0), ("slow", 0), ("reset", 0), ("malformed", 0)):
            assert getattr(sim.faults, name) == value, f"fault {name} never fired"
    assert_hub_matches(factory, sim)


def assert_nothing_half_written(factory: sessionmaker, sim: Simulator) -> None:
    """After a fatal error mid-read: what is stored is true to the source, and no stream's cursor
    claims records that were not stored."""
    truth = source_truth_without_faults(sim)
    held = stored(factory, sim.system)
    with factory() as session:
        for stream, records in held.items():
            assert set(records) <= set(truth[stream])
            cursor = cursor_moment(read_cursor(session, sim.system, stream))
            if len(records) < len(truth[stream]):
                assert cursor is None, f"{stream}: cursor {cursor} moved although records are missing"
        for stream in truth:
            if stream not in held:
                assert read_cursor(session, sim.system, stream) is None


def source_truth_without_faults(sim: Simulator) -> dict[str, dict[str, Any]]:
    expired, sim.faults.expired_token = sim.faults.expired_token, False
    try:
        return source_truth(sim)
    finally:
        sim.faults.expired_token = expired


@pytest.mark.parametrize("fault", FAULTS)
def test_every_source_through_every_fault(sim, fault, tmp_path):
    run_through(fault, sim, sessions(f"sqlite:///{tmp_path / 'hub.db'}"))


REPRESENTATIVE = {"shopify": "reset", "square": "errors_503", "hubspot": "rate_limit", "odoo": "expired_token"}


@pytest.mark.parametrize("system", SYSTEMS)
def test_one_fault_per_source_on_each_backend(system, world, database_url):
    simulator = start(system, world)
    try:
        run_through(REPRESENTATIVE[system], simulator, sessions(database_url))
    finally:
        simulator.after_request = None
        simulator.stop()
