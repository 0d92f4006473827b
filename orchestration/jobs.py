"""The jobs: the whole incremental sync, the narrower run a webhook starts, and the nightly points jobs.

Every job carries ``PIPELINE_TAG``: docs/deploy.md limits runs with that tag to one at a time in the
run queue, so a scheduled sync and a webhook's run never resolve or post the ledger side by side.
"""

from datetime import datetime
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    Field,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)

from schemas import HubConfig

PIPELINE_TAG = {"memberhub/pipeline": "hub"}
TRIGGER = "memberhub/trigger"
HUB_STEPS = ("canonical", "golden", "ledger", "tiers")

sync_all = define_asset_job(
    "sync_all",
    selection=AssetSelection.all(),
    description="Pull every connector from its cursor, map, resolve, post, tier, check, write back.",
    tags=PIPELINE_TAG,
)

webhook_sync = define_asset_job(
    "webhook_sync",
    selection=AssetSelection.all(),
    description="Started by the webhook sensor for one system: pull it, then map, resolve, post and tier "
    "(each request narrows the selection to that system).",
    tags=PIPELINE_TAG,
)


def webhook_selection(config: HubConfig, system: str) -> list[AssetKey]:
    """What a webhook from ``system`` needs: its pull, the hub's steps after it, and its write-back,
    so a purchase's points reach the member in that system too."""
    keys = [AssetKey(["raw", system]), *(AssetKey(step) for step in HUB_STEPS)]
    if config.connectors[system].writeback:
        keys.append(AssetKey(["writeback", system]))
    return keys


@op(
    config_schema={"as_of": Field(str, is_required=False, description="ISO 8601 moment to run as; default the clock")},
    required_resource_keys={"hub"},
    description="Release pending points, expire lapsed lots, review tiers (Hub.nightly).",
)
def nightly_points(context: OpExecutionContext) -> dict[str, Any]:
    as_of = context.op_config.get("as_of")
    figures = context.resources.hub.hub().nightly(datetime.fromisoformat(as_of) if as_of else None)
    context.add_output_metadata(
        {f"{step}/{k}": v for step, counts in figures.items() for k, v in counts.items() if isinstance(v, int)}
    )
    return figures


@job(name="nightly", tags=PIPELINE_TAG, description="The night's points jobs; the next sync writes the results back.")
def nightly() -> None:
    nightly_points()


JOBS = [sync_all, webhook_sync]
