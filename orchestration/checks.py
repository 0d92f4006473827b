"""The checks that gate write-back. They sit on ``tiers`` — the state about to be written back —
and are blocking: when one fails, no ``writeback/*`` step of that run starts, and the check's
description in Dagster's UI says why. The checks themselves live in ``hub/checks.py``."""

from collections.abc import Callable

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    asset_check,
)
from sqlalchemy.orm import Session

from hub import checks
from hub.drift import mapping_reader
from hub.service import Hub
from mappings import load_mappings

GATED = AssetKey("tiers")


def _result(outcome: checks.Outcome) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={"why": outcome.description, **outcome.metadata},
    )


def _gate(name: str, description: str, run: Callable[[Hub, Session], checks.Outcome]) -> AssetChecksDefinition:
    @asset_check(asset=GATED, name=name, description=description, blocking=True, required_resource_keys={"hub"})
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        hub = context.resources.hub.hub()
        with hub.session() as session:
            return _result(run(hub, session))

    return _check


def _drift(hub: Hub, session: Session) -> checks.Outcome:
    kinds = {name: c.kind for name, c in hub.config.connectors.items()}
    return checks.no_schema_drift(session, mapping_reader(load_mappings(), kinds))


def writeback_gates() -> list[AssetChecksDefinition]:
    return [
        _gate(
            "golden_ids_unique",
            "Each golden id is one person's; no source record links to a merged member.",
            lambda hub, session: checks.golden_ids_unique(session),
        ),
        _gate(
            "ledger_reconciles",
            "Accounts, lots and entries of the points ledger add up to zero difference.",
            lambda hub, session: checks.ledger_reconciles(session),
        ),
        _gate("no_schema_drift", "No field a mapping reads disappeared or changed type.", _drift),
        _gate(
            "quarantine_rate",
            "No source has more of its records in quarantine than orchestration.max_quarantine_rate.",
            lambda hub, session: checks.quarantine_rate(session, hub.config.orchestration.max_quarantine_rate),
        ),
    ]
