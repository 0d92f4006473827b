"""Dagster's schedules, sensors and write-back gates do what they say: evaluated with Dagster's own
test contexts, their runs executed for real, on the hub database of each backend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import POSTGRES_URL
from dagster import (
    AssetKey,
    Backoff,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_reconstructable_job,
    build_run_status_sensor_context,
    build_schedule_context,
    execute_job,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from hub import checks
from hub.cli import app
from hub.status import status
from hub.tables import GoldenMember, PointsAccount, QuarantineRow, SourceRecordRow, TierReview
from orchestration.definitions import build_definitions
from orchestration.resources import HubResource
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "memberhub.yaml")
GATES = {"golden_ids_unique", "ledger_reconciles", "no_schema_drift", "quarantine_rate"}


def resources(database_url: str) -> dict[str, HubResource]:
    return {"hub": HubResource(config_path=CONFIG, database_url=database_url)}


# ------------------------------------------------------------------------------------- declared
def test_each_api_has_its_pool_and_connector_steps_retry_with_backoff():
    defs = build_definitions(CONFIG)
    graph = defs.resolve_asset_graph()
    for system in ("shopify", "square", "hubspot", "odoo"):
        for layer in ("raw", "writeback"):
            node = graph.get(AssetKey([layer, system]))
            assets_def = node.assets_def
            assert assets_def.op.pool == f"api-{system}"
            assert assets_def.op.retry_policy.backoff == Backoff.EXPONENTIAL
    gates = {key.name: key.asset_key for key in graph.asset_check_keys}
    assert set(gates) == GATES and set(gates.values()) == {AssetKey("tiers")}
    assert all(graph.get_check_spec(key).blocking for key in graph.asset_check_keys)


def test_crons_and_thresholds_come_from_the_configuration(tmp_path):
    path = tmp_path / "hub.yaml"
    path.write_text(
        "orchestration:\n  sync_cron: '*/5 * * * *'\n  nightly_cron: '0 3 * * *'\n  timezone: Europe/Berlin\n"
        "  event_poll_seconds: 2\n",
        encoding="utf-8",
    )
    defs = build_definitions(str(path))
    sync, nightly = defs.resolve_schedule_def("incremental_sync"), defs.resolve_schedule_def("nightly_points")
    assert (sync.cron_schedule, sync.execution_timezone) == ("*/5 * * * *", "Europe/Berlin")
    assert nightly.cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("webhook_events").minimum_interval_seconds == 2
    assert build_definitions(CONFIG).resolve_schedule_def("incremental_sync").cron_schedule == "*/15 * * * *"


# ------------------------------------------------------------------------------------- schedules
def test_the_incremental_sync_waits_for_a_sync_still_running():
    schedule = build_definitions(CONFIG).resolve_schedule_def("incremental_sync")
    moment = datetime(2026, 5, 1, 10, 15, tzinfo=ZoneInfo("Asia/Shanghai"))
    with instance_for_test() as instance:
        request = schedule(build_schedule_context(instance=instance, scheduled_execution_time=moment))
        assert isinstance(request, RunRequest)
        assert request.run_key == f"sync:{moment.isoformat()}" and request.tags["memberhub/trigger"] == "schedule"

        running = create_run_for_test(instance, job_name="sync_all", status=DagsterRunStatus.STARTED)
        skipped = schedule(build_schedule_context(instance=instance, scheduled_execution_time=moment))
        assert isinstance(skipped, SkipReason) and running.run_id in skipped.skip_message

        create_run_for_test(instance, job_name="nightly", status=DagsterRunStatus.STARTED)
        instance.report_run_canceled(running)
        assert isinstance(
            schedule(build_schedule_context(instance=instance, scheduled_execution_time=moment)), RunRequest
        )


def test_the_nightly_run_works_as_of_the_scheduled_night(database_url):
    defs = build_definitions(CONFIG, database_url)
    night = datetime(2026, 3, 1, 2, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    with instance_for_test() as instance:
        request = defs.resolve_schedule_def("nightly_points")(
            build_schedule_context(instance=instance, scheduled_execution_time=night)
        )
        assert request.run_config == {"ops": {"nightly_points": {"config": {"as_of": night.isoformat()}}}}
        job = defs.resolve_job_def("nightly")
        for _ in range(2):  # a second run of the same night changes nothing
            assert job.execute_in_process(run_config=request.run_config, instance=instance).success
    hub = HubResource(config_path=CONFIG, database_url=database_url).hub()
    with hub.session() as session:
        reviews = session.scalars(select(TierReview)).all()
    assert [r.reviewed_at for r in reviews] == [night.astimezone(UTC)]


# ------------------------------------------------------------------------------------- run sensors
def memberhub(*args: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    """The ``memberhub`` command in-process (typer's runner), on this hub database."""
    monkeypatch.setenv("MEMBERHUB_DATABASE_URL", database_url)
    return CliRunner().invoke(app, ["-c", CONFIG, *args])


def test_run_sensors_record_how_runs_end_and_status_shows_it(database_url, monkeypatch):
    defs = build_definitions(CONFIG, database_url)
    job = defs.resolve_job_def("nightly")
    bad = {"ops": {"nightly_points": {"config": {"as_of": "the night before last"}}}}
    good = {"ops": {"nightly_points": {"config": {"as_of": "2026-04-02T02:30:00+08:00"}}}}
    with instance_for_test() as instance:
        failed = job.execute_in_process(run_config=bad, instance=instance, raise_on_error=False)
        assert not failed.success
        context = build_run_status_sensor_context(
            sensor_name="record_run_failure",
            dagster_instance=instance,
            dagster_run=failed.dagster_run,
            dagster_event=failed.get_run_failure_event(),
            resources=resources(database_url),
        ).for_run_failure()
        defs.resolve_sensor_def("record_run_failure")(context)

        succeeded = job.execute_in_process(run_config=good, instance=instance, tags={"memberhub/trigger": "schedule"})
        context = build_run_status_sensor_context(
            sensor_name="record_run_success",
            dagster_instance=instance,
            dagster_run=succeeded.dagster_run,
            dagster_event=succeeded.get_run_success_event(),
            resources=resources(database_url),
        )
        defs.resolve_sensor_def("record_run_success")(context)

    hub = HubResource(config_path=CONFIG, database_url=database_url).hub()
    with hub.session() as session:
        report = status(session, hub.connector_names)
    [failure] = report["failures"]
    assert failure["run_id"] == failed.run_id and failure["job"] == "nightly"
    assert "nightly_points" in failure["error"] and "the night before last" in failure["error"]
    assert [(r["run_id"], r["status"]) for r in report["runs"]] == [
        (succeeded.run_id, "success"),
        (failed.run_id, "failure"),
    ]
    assert report["runs"][0]["trigger"] == "schedule" and report["runs"][0]["seconds"] is not None

    shown = memberhub("status", "--json", database_url=database_url, monkeypatch=monkeypatch)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["failures"][0]["run_id"] == failed.run_id
    assert set(data["connectors"]) == {"shopify", "square", "hubspot", "odoo"}
    assert data["reviews_open"] == 0 and data["quarantine"] == {}
    text = memberhub("status", database_url=database_url, monkeypatch=monkeypatch)
    assert text.exit_code == 0 and "failed / 失败" in text.stdout and "the night before last" in text.stdout


# ------------------------------------------------------------------------------------- checks
def test_quarantine_rate_fails_above_the_threshold(database_url):
    hub = HubResource(config_path=CONFIG, database_url=database_url).hub()
    with hub.session() as session, session.begin():
        for n in range(3):
            session.add(
                SourceRecordRow(source="shop", stream="customers", external_id=str(n), payload={}, content_hash="x")
            )
        session.add(QuarantineRow(source="shop", stream="customers", external_id=None, payload={}, reason="no id"))
    with hub.session() as session:
        over = checks.quarantine_rate(session, 0.05)
        under = checks.quarantine_rate(session, 0.3)
    assert not over.passed and "shop: 25.0%" in over.description and over.metadata["rate/shop"] == 0.25
    assert under.passed


def test_golden_ids_fail_when_a_merged_id_leads_nowhere(database_url):
    hub = HubResource(config_path=CONFIG, database_url=database_url).hub()
    with hub.session() as session, session.begin():
        session.add(GoldenMember(seq=1, member_id="MH00000001"))
        session.add(GoldenMember(seq=2, member_id="MH00000002", status="merged", merged_into="MH00000001"))
    with hub.session() as session:
        assert checks.golden_ids_unique(session).passed
    with hub.session() as session, session.begin():
        session.add(GoldenMember(seq=3, member_id="MH00000003", status="merged", merged_into="MH00000009"))
    with hub.session() as session:
        outcome = checks.golden_ids_unique(session)
    assert not outcome.passed and "MH00000003" in outcome.description


def test_a_failed_check_holds_write_back_and_says_why(tmp_path):
    from connectors.simulators import start_simulators
    from hub.demo import write_demo_config
    from hub.service import Hub
    from orchestration.runner import run_pipeline

    database_url = f"sqlite:///{tmp_path / 'hub.db'}"
    with start_simulators(members=30, seed=3, state_dir=tmp_path / "systems") as cluster:
        config_path = tmp_path / "hub.yaml"
        write_demo_config(config_path, cluster.connector_configs(), database_url)
        hub = Hub(config_path=config_path)
        hub.upgrade()
        with instance_for_test() as instance:
            first = run_pipeline(str(config_path), database_url=database_url, instance=instance)
            assert first["_failures"]["success"] and {c["passed"] for c in first["_checks"].values()} == {True}
            assert all(f"writeback/{s}" in first for s in cluster.simulators)

            with hub.session() as session, session.begin():  # a cached balance drifts from the ledger
                member = session.scalar(select(PointsAccount.member_id).order_by(PointsAccount.member_id).limit(1))
                session.execute(
                    update(PointsAccount)
                    .where(PointsAccount.member_id == member)
                    .values(balance=PointsAccount.balance + 7)
                )
            second = run_pipeline(str(config_path), database_url=database_url, instance=instance)
            run = instance.get_runs(limit=1)[0]
            evaluations = {}
            for record in instance.all_logs(run.run_id):
                event = record.dagster_event
                if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
                    data = event.asset_check_evaluation_data
                    evaluations[data.asset_check_key.name] = data

    assert not second["_failures"]["success"]
    assert second["_checks"]["ledger_reconciles"]["passed"] is False
    why = second["_checks"]["ledger_reconciles"]["why"]
    assert member in why and "account balance" in why
    assert not [key for key in second if key.startswith("writeback/")]  # no write-back step ran
    assert any("write-back held" in step for step in second["_failures"]["steps"])
    assert evaluations["ledger_reconciles"].description == why  # what Dagster's UI shows
    assert evaluations["ledger_reconciles"].metadata["why"].value == why
    assert {name for name, e in evaluations.items() if e.passed} == GATES - {"ledger_reconciles"}


# ------------------------------------------------------------------------------------- production set-up
@pytest.fixture
def dagster_postgres_url() -> Iterator[str]:
    """An empty schema for Dagster's run, event-log and schedule storage (dagster-postgres speaks psycopg2)."""
    schema = f"dagster_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg2")
    yield f"{url.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.mark.postgres
def test_the_same_definitions_run_on_postgres_storage_with_the_multiprocess_executor(
    postgres_url, dagster_postgres_url, monkeypatch
):
    """Only configuration changes: the instance's storage (dagster.yaml's ``storage: postgres``) and
    the executor. The step runs in a child process that rebuilds the job from the code location."""
    HubResource(config_path=CONFIG, database_url=postgres_url).hub().upgrade()
    job = build_reconstructable_job(
        "orchestration.definitions", "job_for", reconstructable_args=("nightly", CONFIG, postgres_url)
    )
    run_config = {
        "execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
        "ops": {"nightly_points": {"config": {"as_of": "2026-06-01T02:30:00+08:00"}}},
    }
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", dagster_postgres_url)
    production = yaml.safe_load((ROOT / "orchestration" / "dagster.production.yaml").read_text(encoding="utf-8"))
    with instance_for_test(overrides=production) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        with execute_job(job, instance=instance, run_config=run_config) as result:
            assert result.success
            kinds = {event.event_type_value for event in result.all_events}
            assert "STEP_WORKER_STARTED" in kinds  # a child process ran the step
        [stored] = instance.get_run_records()
        assert stored.dagster_run.status == DagsterRunStatus.SUCCESS
    hub = HubResource(config_path=CONFIG, database_url=postgres_url).hub()
    with hub.session() as session:
        assert session.scalar(select(TierReview.period)) is not None


def test_the_executor_is_chosen_by_configuration(monkeypatch):
    monkeypatch.setenv("MEMBERHUB_DAGSTER_EXECUTOR", "in_process")
    assert build_definitions(CONFIG).resolve_job_def("sync_all").executor_def.name == "in_process"
    monkeypatch.setenv("MEMBERHUB_DAGSTER_EXECUTOR", "multiprocess")
    assert build_definitions(CONFIG).resolve_job_def("nightly").executor_def.name == "multiprocess"
    monkeypatch.setenv("MEMBERHUB_DAGSTER_EXECUTOR", "threads")
    with pytest.raises(ConfigError, match="valid: in_process, multiprocess, celery, k8s"):
        build_definitions(CONFIG)
