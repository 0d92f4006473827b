"""The Dagster code location. ``workspace.yaml`` loads ``defs`` from here; ``memberhub run`` and
``memberhub demo`` materialise the same assets in-process.

The same definitions run on the embedded default (SQLite, in-process or ``dagster dev``) and in
production (dagster-postgres storage, the daemon, the multiprocess, Celery or Kubernetes executor):
only the instance's ``dagster.yaml`` differs (docs/deploy.md)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from dagster import Definitions, ExecutorDefinition, JobDefinition

from hub.config import load_config
from orchestration.assets import hub_assets
from orchestration.automation import run_sensors, schedules, webhook_sensor
from orchestration.checks import writeback_gates
from orchestration.jobs import JOBS, nightly
from orchestration.resources import HubResource, progress_resource
from orchestration.segment_assets import segment_assets
from schemas.errors import ConfigError

EXECUTOR_ENV = "MEMBERHUB_DAGSTER_EXECUTOR"
EXECUTORS = {
    "in_process": ("dagster", "in_process_executor"),
    "multiprocess": ("dagster", "multiprocess_executor"),
    "celery": ("dagster_celery", "celery_executor"),
    "k8s": ("dagster_k8s", "k8s_job_executor"),
}
"""Executors by name (``MEMBERHUB_DAGSTER_EXECUTOR``): module and attribute. Unset: Dagster's
default, multiprocess, with in-process selectable per run."""


def executor_from_environment() -> ExecutorDefinition | None:
    name = os.environ.get(EXECUTOR_ENV, "").strip()
    if not name:
        return None
    if name not in EXECUTORS:
        choices = ", ".join(EXECUTORS)
        raise ConfigError(f"{EXECUTOR_ENV}={name!r} is not an executor; valid: {choices}")
    module, attribute = EXECUTORS[name]
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError:
        raise ConfigError(f"{EXECUTOR_ENV}={name} needs the {module.replace('_', '-')} package installed") from None


def build_definitions(
    config_path: str | None = None, database_url: str | None = None, progress: Callable[[str, int], None] | None = None
) -> Definitions:
    config = load_config(config_path)
    return Definitions(
        assets=[*hub_assets(config), *segment_assets(config)],
        asset_checks=writeback_gates(),
        jobs=[*JOBS, nightly],
        schedules=schedules(config),
        sensors=[webhook_sensor(config), *run_sensors()],
        executor=executor_from_environment(),
        resources={
            "hub": HubResource(config_path=config_path, database_url=database_url),
            "progress": progress_resource(progress),
        },
    )


def job_for(name: str, config_path: str | None = None, database_url: str | None = None) -> JobDefinition:
    """One job of these definitions. A reconstructable job (``build_reconstructable_job``) points at
    this, so the multiprocess executor's step processes rebuild the job from the same arguments."""
    return build_definitions(config_path, database_url).resolve_job_def(name)


defs = build_definitions(os.environ.get("MEMBERHUB_CONFIG", "memberhub.yaml"))
