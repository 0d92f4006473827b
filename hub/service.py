"""The hub's steps behind one small facade: what Dagster assets, the CLI and tests all call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from connectors import Connector, connector_for
from hub import ingest, ledger, resolve, staging, tiers, two_way, writeback
from hub.config import default_database_url, load_config
from hub.db import engine_for, upgrade
from hub.tables import GoldenMember, MemberLink, QuarantineRow, ReviewQueueItem, SourceRecordRow, StagedMember
from mappings import Mapping, load_mappings
from schemas import HubConfig
from schemas.config import MAPPED_BY_NAME
from schemas.errors import ConfigError

Progress = Callable[[str, int], None]
"""progress(step, n): ``n`` more units of work are done in ``step``."""


def _quiet(step: str, n: int) -> None:
    return None


class Hub:
    def __init__(
        self, config: HubConfig | None = None, *, config_path: Path | str | None = None, database_url: str | None = None
    ) -> None:
        self.config = config if config is not None else load_config(config_path)
        self.database_url = database_url or self.config.database_url or default_database_url()
        self._sessions = sessionmaker(engine_for(self.database_url), expire_on_commit=False)

    # plumbing ----------------------------------------------------------------------------------
    def upgrade(self) -> None:
        upgrade(self.database_url)

    def session(self) -> Session:
        return self._sessions()

    def connector(self, name: str) -> Connector:
        settings = self.config.connectors.get(name)
        if settings is None:
            known = ", ".join(self.config.connectors) or "none configured"
            raise ConfigError(f"no connector named {name!r}; configured: {known}")
        return connector_for(name, settings)

    @property
    def connector_names(self) -> list[str]:
        return [name for name, c in self.config.connectors.items() if c.enabled]

    @property
    def writeback_names(self) -> list[str]:
        return [name for name, c in self.config.connectors.items() if c.enabled and c.writeback]

    # steps -------------------------------------------------------------------------------------
    def sync(self, name: str, *, full: bool = False, progress: Progress = _quiet) -> dict[str, Any]:
        with self.connector(name) as connector:
            counts = ingest.sync(
                connector, self.session, full=full, on_page=lambda _stream, c: progress(f"pull {name}", c.pulled)
            )
        return asdict(counts)

    def mapping_sources(self, mappings: dict[tuple[str, str], Mapping]) -> dict[str, str]:
        """Connector name -> the ``source:`` of its mapping files: the connector's own name when a
        mapping names it, or when its kind's records are shaped by one deployment (sql, spreadsheet);
        else its kind (every Shopify shop shares mappings/shopify/)."""
        named = {source for source, _stream in mappings}
        return {
            name: name if name in named or c.kind in MAPPED_BY_NAME else c.kind
            for name, c in self.config.connectors.items()
        }

    def stage(self, progress: Progress = _quiet) -> dict[str, Any]:
        mappings = load_mappings()
        with self.session() as session, session.begin():
            counts = staging.stage(
                session,
                mappings,
                self.mapping_sources(mappings),
                options=staging.StageOptions.of(self.config.programme),
                on_batch=lambda n: progress("map", n),
            )
        return asdict(counts)

    def resolve(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(resolve.resolve(session))

    def post_ledger(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(ledger.post_orders(session, self.config.programme))

    def evaluate_tiers(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(tiers.evaluate(session, self.config.programme))

    # nightly jobs: each idempotent, each in its own transaction; ``now`` defaults to the clock
    def release_points(self, now: datetime | None = None) -> dict[str, Any]:
        """Pending points whose return window has ended become spendable."""
        with self.session() as session, session.begin():
            return asdict(ledger.release_pending(session, now or datetime.now(UTC)))

    def expire_points(self, now: datetime | None = None) -> dict[str, Any]:
        """Lots whose validity has ended lapse."""
        with self.session() as session, session.begin():
            return asdict(ledger.expire(session, now or datetime.now(UTC)))

    def review_tiers(self, now: datetime | None = None) -> dict[str, Any]:
        """Upgrades, and once per review period the downgrades and retention checks."""
        with self.session() as session, session.begin():
            return asdict(tiers.review_tiers(session, self.config.programme, at=now or datetime.now(UTC)))

    def nightly(self, now: datetime | None = None) -> dict[str, Any]:
        """Release, then expire, then review tiers — the order a night's run takes."""
        now = now or datetime.now(UTC)
        return {
            "released": self.release_points(now),
            "expired": self.expire_points(now),
            "tiers": self.review_tiers(now),
        }

    def push(self, name: str, progress: Progress = _quiet) -> dict[str, Any]:
        """Take in the points changed inside ``name`` (two-way), then write it the differences."""
        with self.connector(name) as connector:
            imported = two_way.import_events(connector, self.session, self.config.programme)
            counts = writeback.push(
                connector, self.session, self.config.programme, on_batch=lambda n: progress(f"write back {name}", n)
            )
        return {**asdict(counts), "imported": asdict(imported)}

    def import_events(self, name: str) -> dict[str, Any]:
        """Points redeemed or adjusted inside ``name`` (a Square till) into the ledger; nothing for
        systems whose balances only the hub changes."""
        with self.connector(name) as connector:
            return asdict(two_way.import_events(connector, self.session, self.config.programme))

    def plan(self, name: str) -> writeback.Plan:
        with self.session() as session:
            return writeback.plan(session, name, self.config.programme)

    def sync_history(self, name: str | None = None, *, limit: int = 20) -> list[dict[str, Any]]:
        with self.session() as session:
            return writeback.history(session, name, limit=limit)

    # reading -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The figures ``memberhub demo`` prints, read from the database."""
        with self.session() as session:
            records = dict(
                session.execute(select(SourceRecordRow.source, func.count()).group_by(SourceRecordRow.source)).all()
            )
            quarantined = dict(
                session.execute(select(QuarantineRow.source, func.count()).group_by(QuarantineRow.source)).all()
            )
            review_open = session.scalar(select(func.count()).where(ReviewQueueItem.status == "open"))
            golden = session.scalar(select(func.count()).where(GoldenMember.status == "active"))
            staged = session.scalar(select(func.count()).select_from(StagedMember))
            systems_per_member = session.execute(
                select(MemberLink.member_id, func.count(func.distinct(StagedMember.source)))
                .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
                .group_by(MemberLink.member_id)
            ).all()
            per_tier: dict[str, int] = {}
            current = tiers.current_tiers(session)
            for member_id in session.scalars(select(GoldenMember.member_id).where(GoldenMember.status == "active")):
                tier = current.get(member_id, self.config.programme.tiers[0].name)
                per_tier[tier] = per_tier.get(tier, 0) + 1
            balances = ledger.balances(session)
        overlap: dict[int, int] = {}
        for _member, count in systems_per_member:
            overlap[count] = overlap.get(count, 0) + 1
        return {
            "records": records,
            "quarantined": quarantined,
            "staged_members": staged,
            "golden_members": golden,
            "review_open": review_open,
            "in_several_systems": sum(v for k, v in overlap.items() if k > 1),
            "points_outstanding": sum(balances.values()),
            "tiers": per_tier,
        }
