"""``memberhub demo``: the simulated chain, the whole pipeline once, on the embedded default.

The simulators keep what was written to them under .memberhub/simulators, like real systems keep
their data, so a second demo pulls nothing new and sends nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from connectors.simulators import start_simulators
from hub.config import default_database_url, hub_home
from hub.service import Hub
from schemas import HubConfig


def write_demo_config(path: Path, cluster_configs: dict[str, Any], database_url: str) -> None:
    config = HubConfig(database_url=database_url, connectors=cluster_configs)
    data = config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    for name, settings in data["connectors"].items():
        settings["token"] = cluster_configs[name].token.get_secret_value()  # simulator tokens only
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by `memberhub demo`: the local simulators\n"
        + yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )


def run_demo(
    *, members: int = 300, seed: int = 7, progress: Callable[[str, int], None] | None = None, home: Path | None = None
) -> dict[str, Any]:
    from orchestration.runner import run_pipeline

    home = home or hub_home()
    database_url = default_database_url()
    config_path = home / "demo.yaml"
    with start_simulators(members=members, seed=seed, state_dir=home / "simulators") as cluster:
        write_demo_config(config_path, cluster.connector_configs(), database_url)
        hub = Hub(config_path=config_path)
        hub.upgrade()
        figures = run_pipeline(str(config_path), database_url=database_url, progress=progress)
        summary = hub.summary()
    failures = figures.pop("_failures")
    return {"run": figures, **summary, "success": failures["success"], "failures": failures["steps"]}
