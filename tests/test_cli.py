"""The command line as a person or a script uses it: real processes, real simulators."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERHUB = str(Path(sys.executable).parent / "memberhub")


def memberhub(*args, home, timeout=600, **env):
    environment = {**os.environ, "MEMBERHUB_HOME": str(home), **env}
    environment.pop("DAGSTER_HOME", None)
    environment.pop("MEMBERHUB_DATABASE_URL", None)
    return subprocess.run(
        [MEMBERHUB, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_end_to_end_and_a_second_run_changes_nothing(tmp_path):
    home = tmp_path / "home"
    first = memberhub("demo", "--members", "120", "--json", home=home)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["success"] is True and summary["failures"] == []
    assert set(summary["records"]) == {"shopify", "square", "hubspot", "odoo"}
    assert summary["golden_members"] == 120
    assert summary["run"]["ledger"]["points"] == summary["points_outstanding"] > 0
    assert sum(summary["tiers"].values()) == 120
    assert all(summary["run"][f"writeback/{s}"]["sent"] > 0 for s in summary["records"])
    assert (home / "hub.db").exists() and (home / "dagster").is_dir()

    second = json.loads(memberhub("demo", "--members", "120", "--json", home=home).stdout)
    assert second["success"] is True
    assert all(second["run"][f"raw/{s}"]["new"] + second["run"][f"raw/{s}"]["changed"] == 0 for s in second["records"])
    assert second["run"]["ledger"]["entries"] == 0
    assert all(second["run"][f"writeback/{s}"]["sent"] == 0 for s in second["records"])
    assert second["points_outstanding"] == summary["points_outstanding"]

    shown = memberhub("points", "show", "MH00000001", "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["member_id"] == "MH00000001"


def test_human_summary_is_bilingual(tmp_path):
    done = memberhub("demo", "--members", "30", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "golden members / 会员主记录" in done.stdout
    assert "members per tier / 各等级会员" in done.stdout


def test_errors_print_without_traceback_unless_debug(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("connectors:\n  shop:\n    kind: shopfy\n    base_url: http://127.0.0.1:9\n")
    done = memberhub("--config", str(bad), "connectors", "list", home=tmp_path / "home")
    assert done.returncode == 1
    assert f"{bad}:3: connectors.shop.kind" in done.stderr and "did you mean 'shopify'?" in done.stderr
    assert "Traceback" not in done.stderr
    debug = memberhub("--debug", "--config", str(bad), "connectors", "list", home=tmp_path / "home")
    assert "Traceback" in debug.stderr


def test_unknown_member_is_explained(tmp_path):
    done = memberhub("points", "show", "MH99999999", home=tmp_path / "home")
    assert done.returncode == 1
    assert "no member 'MH99999999'" in done.stderr
