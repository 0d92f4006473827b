"""The Dagster code location loads, validates and shows the whole graph."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from orchestration.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate_with_the_dagster_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MEMBERHUB_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_graph_runs_raw_to_writeback_per_system():
    defs = build_definitions(str(ROOT / "memberhub.yaml"))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    systems = ("shopify", "square", "hubspot", "odoo")
    assert keys == (
        {"canonical", "golden", "ledger", "tiers", "segments", "triggers/webhooks"}
        | {f"raw/{s}" for s in systems}
        | {f"writeback/{s}" for s in systems}
        | {f"tags/{s}" for s in systems}
    )
    assert graph.get(AssetKey("canonical")).parent_keys == {AssetKey(["raw", s]) for s in systems}
    assert graph.get(AssetKey(["writeback", "odoo"])).parent_keys == {AssetKey("tiers")}
    assert graph.get(AssetKey("ledger")).parent_keys == {AssetKey("golden")}
    assert graph.get(AssetKey("segments")).parent_keys == {AssetKey("ledger"), AssetKey("tiers")}
    assert graph.get(AssetKey(["tags", "hubspot"])).parent_keys == {AssetKey("segments")}
