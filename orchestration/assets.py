"""One asset per step of the data flow. Bodies are a line or two: the work lives in ``hub/``."""

from collections.abc import Callable
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Backoff,
    Failure,
    MaterializeResult,
    RetryPolicy,
    asset,
)

from hub import events
from hub.tables import utcnow
from schemas import HubConfig
from schemas.errors import FatalError

CONNECTOR_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)
"""Whole-step retries for faults that outlived the HTTP client's own retries (an outage)."""


def _talk_to(name: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a step that talks to a system; a fatal fault fails it at once, without step retries."""
    try:
        return call()
    except FatalError as exc:
        raise Failure(description=f"{name}: {exc}", allow_retries=False) from exc


def _result(counts: dict[str, Any]) -> MaterializeResult:
    return MaterializeResult(metadata={k: v for k, v in counts.items() if isinstance(v, int | str | float | dict)})


def raw_asset(name: str) -> AssetsDefinition:
    @asset(
        key=AssetKey(["raw", name]),
        group_name="raw",
        retry_policy=CONNECTOR_RETRY,
        required_resource_keys={"hub", "progress"},
        pool=f"api-{name}",
        description=f"Records pulled from {name}, raw.",
    )
    def _raw(context: AssetExecutionContext) -> MaterializeResult:
        hub = context.resources.hub.hub()
        started = utcnow()
        counts = _talk_to(name, lambda: hub.sync(name, progress=context.resources.progress))
        with hub.session() as session, session.begin():  # webhooks that arrived before this pull: covered
            counts["webhooks_covered"] = events.mark_processed(session, name, started)
        return _result(counts)

    return _raw


def writeback_asset(name: str) -> AssetsDefinition:
    @asset(
        key=AssetKey(["writeback", name]),
        group_name="writeback",
        deps=[AssetKey("tiers")],
        retry_policy=CONNECTOR_RETRY,
        required_resource_keys={"hub", "progress"},
        pool=f"api-{name}",
        description=f"Points and tiers written back to {name}.",
    )
    def _writeback(context: AssetExecutionContext) -> MaterializeResult:
        hub = context.resources.hub.hub()
        counts = _talk_to(name, lambda: hub.push(name, progress=context.resources.progress))
        counts["errors"] = len(counts["errors"])
        return _result(counts)

    return _writeback


def hub_assets(config: HubConfig) -> list[AssetsDefinition]:
    names = [n for n, c in config.connectors.items() if c.enabled]
    raw = [raw_asset(n) for n in names]

    @asset(
        deps=[a.key for a in raw],
        group_name="hub",
        required_resource_keys={"hub", "progress"},
        description="Canonical members and orders mapped from raw records; failures quarantined.",
    )
    def canonical(context: AssetExecutionContext) -> MaterializeResult:
        return _result(context.resources.hub.hub().stage(progress=context.resources.progress))

    @asset(
        deps=[canonical],
        group_name="hub",
        required_resource_keys={"hub"},
        description="Golden members: one per person, with links to their source records.",
    )
    def golden(context: AssetExecutionContext) -> MaterializeResult:
        return _result(context.resources.hub.hub().resolve())

    @asset(
        deps=[golden],
        group_name="hub",
        required_resource_keys={"hub"},
        description="The points ledger: orders earn, refunds and cancellations reverse.",
    )
    def ledger(context: AssetExecutionContext) -> MaterializeResult:
        return _result(context.resources.hub.hub().post_ledger())

    @asset(
        deps=[ledger],
        group_name="hub",
        required_resource_keys={"hub"},
        description="Each golden member's tier from lifetime qualifying spend.",
    )
    def tiers(context: AssetExecutionContext) -> MaterializeResult:
        counts = context.resources.hub.hub().evaluate_tiers()
        return MaterializeResult(metadata={"changed": counts["changed"], **counts["per_tier"]})

    writebacks = [writeback_asset(n) for n, c in config.connectors.items() if c.enabled and c.writeback]
    return [*raw, canonical, golden, ledger, tiers, *writebacks]
