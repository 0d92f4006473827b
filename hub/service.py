"""The hub's steps behind one small facade: what Dagster assets, the CLI and tests all call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from connectors import Connector, connector_for
from hub import ingest, ledger, resolve, staging, tiers, writeback
from hub.config import default_database_url, load_config
from hub.db import engine_for, upgrade
from hub.tables import GoldenMember, MemberLink, QuarantineRow, SourceRecordRow, StagedMember
from mappings import load_mappings
from schemas import HubConfig
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

    def stage(self, progress: Progress = _quiet) -> dict[str, Any]:
        kinds = {name: c.kind for name, c in self.config.connectors.items()}
        with self.session() as session, session.begin():
            counts = staging.stage(
                session,
                load_mappings(),
                kinds,
                region=self.config.programme.default_region,
                on_batch=lambda n: progress("map", n),
            )
        return asdict(counts)

    def resolve(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(resolve.resolve(session))

    def post_ledger(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(ledger.post_orders(session, self.config.programme.points_per_unit))

    def evaluate_tiers(self) -> dict[str, Any]:
        with self.session() as session, session.begin():
            return asdict(tiers.evaluate(session, self.config.programme))

    def push(self, name: str, progress: Progress = _quiet) -> dict[str, Any]:
        with self.connector(name) as connector:
            counts = writeback.push(
                connector, self.session, self.config.programme, on_batch=lambda n: progress(f"write back {name}", n)
            )
        return asdict(counts)

    def plan(self, name: str) -> writeback.Plan:
        with self.session() as session:
            return writeback.plan(session, name, self.config.programme)

    # reading -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The figures ``memberhub demo`` prints, read from the database."""
        with self.session() as session:
            records = dict(
                session.execute(select(SourceRecordRow.source, func.count()).group_by(SourceRecordRow.source))
                .tuples()
                .all()
            )
            quarantined = dict(
                session.execute(select(QuarantineRow.source, func.count()).group_by(QuarantineRow.source))
                .tuples()
                .all()
            )
            golden = session.scalar(select(func.count()).where(GoldenMember.status == "active"))
            staged = session.scalar(select(func.count()).select_from(StagedMember))
            systems_per_member = (
                session.execute(
                    select(MemberLink.member_id, func.count(func.distinct(StagedMember.source)))
                    .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
                    .group_by(MemberLink.member_id)
                )
                .tuples()
                .all()
            )
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
            "in_several_systems": sum(v for k, v in overlap.items() if k > 1),
            "points_outstanding": sum(balances.values()),
            "tiers": per_tier,
        }
