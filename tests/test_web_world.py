"""A small chain for the web tests (fixtures only; modules use it with ``pytest_plugins``): the simulators pulled, mapped, resolved, posted
and tiered once, plus two pairs the resolver is unsure about, and one account per role.

Building it takes a few seconds, so it is built once per session into a SQLite file; each test gets a
copy (``web_world``). ``build_world`` also fills a PostgreSQL schema for the tests that run there.
Contact fields are sealed at rest: the world and every test that reads it use the same fixed test
keys (``KEYS``), set in the environment only while they run.
"""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from connectors.simulators import start_simulators
from hub import accounts, resolve
from hub.demo import write_demo_config
from hub.service import Hub
from hub.tables import LedgerEntryRow, MemberLink, ReviewQueueItem, SourceRecordRow, StagedMember

PASSWORD = "correct horse battery"
KEYS = {
    "MEMBERHUB_ENCRYPTION_KEYS": "1:" + base64.b64encode(bytes(range(32))).decode(),
    "MEMBERHUB_HASH_KEY": "web-tests-blind-index-secret-0123456789",
}
T = datetime(2025, 3, 1, tzinfo=UTC)
USERS = {
    "ada": ("admin", []),
    "li": ("steward", []),
    "chen": ("clerk", ["SH01"]),
    "zhao": ("clerk", ["GZ01"]),
    "sun": ("auditor", []),
}
# Two people the resolver cannot decide about: same name and city, different phones.
UNSURE = [
    ("pos-a1", "欧阳", "美兰", "+8613812345678", "SH01"),
    ("pos-a2", "欧阳", "美兰", "+8613900001111", "BJ01"),
    ("pos-b1", "司马", "光华", "+8615012340001", "GZ01"),
    ("pos-b2", "司马", "光华", "+8615098760002", "GZ01"),
]


@dataclass
class World:
    url: str
    config_path: Path
    tokens: dict[str, str] = field(default_factory=dict)
    staged: dict[str, int] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)
    sh01_member: str = ""
    gz01_member: str = ""
    other_member: str = ""
    """a member of neither SH01 nor GZ01"""

    def hub(self) -> Hub:
        return Hub(config_path=self.config_path)

    def member_of(self, key: str) -> str:
        with self.hub().session() as session:
            return session.scalar(select(MemberLink.member_id).where(MemberLink.staged_member_id == self.staged[key]))


def _stage_unsure(hub: Hub) -> dict[str, int]:
    ids = {}
    with hub.session() as session, session.begin():
        for source_id, family, given, phone, store in UNSURE:
            raw = SourceRecordRow(
                source="pos", stream="members", external_id=source_id, payload={}, content_hash=source_id
            )
            session.add(raw)
            session.flush()
            staged = StagedMember(
                source_record_id=raw.id,
                source="pos",
                source_id=source_id,
                channel="pos",
                family_name=family,
                given_name=given,
                full_name=family + given,
                name_pinyin={"欧阳": "ouyang meilan", "司马": "sima guanghua"}[family],
                phone=phone,
                city="上海",
                store_code=store,
                updated_at=T,
            )
            session.add(staged)
            session.flush()
            ids[source_id] = staged.id
        resolve.resolve(session)
    return ids


def build_world(directory: Path, url: str) -> World:
    """Fill the hub database at ``url``; the configuration file goes to ``directory``."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in KEYS.items():
            patch.setenv(name, value)
        return _build_world(directory, url)


def _build_world(directory: Path, url: str) -> World:
    resolve.forget_index()
    config_path = directory / "hub.yaml"
    with start_simulators(members=60, seed=11) as cluster:
        write_demo_config(config_path, cluster.connector_configs(), url)
        hub = Hub(config_path=config_path)
        hub.upgrade()
        for name in hub.connector_names:
            hub.sync(name)
    _offline(config_path)  # the simulators are gone: the web app needs the database only
    hub = Hub(config_path=config_path)
    hub.stage()
    hub.resolve()
    hub.post_ledger()
    hub.evaluate_tiers()
    world = World(url=url, config_path=config_path, staged=_stage_unsure(hub))
    with hub.session() as session, session.begin():
        for name, (role, stores) in USERS.items():
            accounts.add_user(session, name, role, stores=stores, password=PASSWORD)
            world.tokens[name] = accounts.issue_token(session, name)
        world.items = list(session.scalars(select(ReviewQueueItem.id).order_by(ReviewQueueItem.id)))
        world.other_member = session.scalar(
            select(LedgerEntryRow.member_id)
            .where(LedgerEntryRow.store_code == "ONLINE")
            .where(
                LedgerEntryRow.member_id.not_in(
                    select(LedgerEntryRow.member_id).where(LedgerEntryRow.store_code.in_(["SH01", "GZ01"]))
                )
            )
            .order_by(LedgerEntryRow.member_id)
            .limit(1)
        )
    world.sh01_member = world.member_of("pos-a1")
    world.gz01_member = world.member_of("pos-b1")
    assert len(world.items) == 2, "the two unsure pairs should wait for review"
    assert world.other_member
    return world


def _offline(config_path: Path) -> None:
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data.pop("connectors", None)
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def copy_world(template: World, directory: Path) -> World:
    """A private copy of a SQLite world: tests may change it freely."""
    directory.mkdir(parents=True, exist_ok=True)
    source = Path(template.url.removeprefix("sqlite:///"))
    target = directory / "hub.db"
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)  # a consistent copy, the write-ahead log included
    url = f"sqlite:///{target}"
    config_path = directory / "hub.yaml"
    data = yaml.safe_load(template.config_path.read_text(encoding="utf-8"))
    data["database_url"] = url
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    resolve.forget_index()
    return replace(template, url=url, config_path=config_path, tokens=dict(template.tokens))


@pytest.fixture(scope="session")
def web_world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("web-world")
    return build_world(directory, f"sqlite:///{directory / 'hub.db'}")


@pytest.fixture
def world_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def web_world(web_world_template: World, world_keys: None, tmp_path: Path) -> World:
    return copy_world(web_world_template, tmp_path / "world")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(world: World, *args: str) -> Iterator[str]:
    """``memberhub serve`` on the world, a real uvicorn on 127.0.0.1; yields its base URL."""
    port = free_port()
    env = {**os.environ, **KEYS}
    env.pop("MEMBERHUB_DATABASE_URL", None)
    command = [
        str(Path(sys.executable).parent / "memberhub"),
        "--config",
        str(world.config_path),
        "serve",
        "--port",
        str(port),
        *args,
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"memberhub serve exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if httpx.get(f"{base}/api/v1/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("memberhub serve did not answer within 30 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
