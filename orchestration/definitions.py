"""The Dagster code location. ``workspace.yaml`` loads ``defs`` from here; ``memberhub run`` and
``memberhub demo`` materialise the same assets in-process."""

from __future__ import annotations

import os
from collections.abc import Callable

from dagster import AssetSelection, Definitions, define_asset_job

from hub.config import load_config
from orchestration.assets import hub_assets
from orchestration.resources import HubResource, progress_resource


def build_definitions(
    config_path: str | None = None, database_url: str | None = None, progress: Callable[[str, int], None] | None = None
) -> Definitions:
    config = load_config(config_path)
    assets = hub_assets(config)
    return Definitions(
        assets=assets,
        jobs=[
            define_asset_job(
                "sync_all", selection=AssetSelection.all(), description="Pull, resolve, post, tier, write back."
            )
        ],
        resources={
            "hub": HubResource(config_path=config_path, database_url=database_url),
            "progress": progress_resource(progress),
        },
    )


defs = build_definitions(os.environ.get("MEMBERHUB_CONFIG", "memberhub.yaml"))
