"""Dagster resources: the hub (database + configuration) and an optional progress display."""

from __future__ import annotations

from collections.abc import Callable

from dagster import ConfigurableResource, ResourceDefinition

from hub.service import Hub


class HubResource(ConfigurableResource):
    """The hub database and configuration every asset works on."""

    config_path: str | None = None
    database_url: str | None = None

    def hub(self) -> Hub:
        return Hub(config_path=self.config_path, database_url=self.database_url)


def progress_resource(report: Callable[[str, int], None] | None = None) -> ResourceDefinition:
    """``report(step, n)`` is told of progress; the CLI draws bars with it, Dagster runs ignore it."""
    return ResourceDefinition.hardcoded_resource(report or (lambda step, n: None))
