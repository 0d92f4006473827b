"""Materialise every asset in-process (no daemon): what ``memberhub run`` and ``memberhub demo`` do."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, materialize

from hub.config import hub_home
from hub.status import record_run
from orchestration.automation import step_error
from orchestration.definitions import build_definitions
from orchestration.jobs import TRIGGER
from orchestration.resources import HubResource

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def dagster_instance() -> DagsterInstance:
    """The persistent instance under DAGSTER_HOME (default .memberhub/dagster, with telemetry off), so `dagster dev`
    shows the runs that the CLI made."""
    given = os.environ.get("DAGSTER_HOME")
    home = Path(given or hub_home() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not given and not settings.exists():  # the hub's own instance: no telemetry, no welcome banner
        settings.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def run_pipeline(
    config_path: str | None,
    *,
    database_url: str | None = None,
    progress: Callable[[str, int], None] | None = None,
    instance: DagsterInstance | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every step once; return each asset's figures (its materialisation metadata) by asset key."""
    logging.getLogger("dagster").setLevel(logging.ERROR)
    defs = build_definitions(config_path, database_url, progress)
    assets = [*(defs.assets or []), *(defs.asset_checks or [])]
    started = datetime.now(UTC)
    result = materialize(
        assets,
        resources=defs.resources,
        instance=instance or dagster_instance(),
        run_config=QUIET,
        raise_on_error=False,
        tags={TRIGGER: "cli"},
    )
    figures: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization is not None:
            figures[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    failures = [f"{event.step_key}: {step_error(event)}" for event in result.all_events if event.is_step_failure]
    checks = {
        check.asset_check_key.name: {"passed": check.passed, "why": check.description}
        for check in result.get_asset_check_evaluations()
    }
    failures += [f"check {name} failed, write-back held: {c['why']}" for name, c in checks.items() if not c["passed"]]
    success = result.success and all(c["passed"] for c in checks.values())
    figures["_failures"] = {"steps": failures, "success": success}
    figures["_checks"] = checks
    hub = HubResource(config_path=config_path, database_url=database_url).hub()
    with hub.session() as session, session.begin():
        record_run(
            session,
            run_id=result.run_id,
            job_name="memberhub run",
            status="success" if success else "failure",
            trigger="cli",
            started_at=started,
            error="\n".join(failures) or None,
        )
    return figures
