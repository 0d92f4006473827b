"""When runs start without a person: the incremental sync and the nightly jobs on schedules, a run
for each system whose webhooks arrived, and sensors that write down how every run ended (for
``memberhub status``). Cron strings and thresholds come from the ``orchestration:`` section of the
configuration file."""

from datetime import UTC, datetime

from dagster import (
    DagsterEvent,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    schedule,
    sensor,
)

from hub import events
from hub.status import record_run
from orchestration.jobs import TRIGGER, nightly, sync_all, webhook_selection, webhook_sync
from orchestration.resources import HubResource
from schemas import HubConfig

BUSY = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


# ------------------------------------------------------------------------------------- schedules
def schedules(config: HubConfig) -> list[ScheduleDefinition]:
    settings = config.orchestration

    @schedule(
        name="incremental_sync",
        cron_schedule=settings.sync_cron,
        execution_timezone=settings.timezone,
        job=sync_all,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Every connector from its cursor, through to write-back.",
    )
    def incremental_sync(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        running = context.instance.get_runs(RunsFilter(job_name=sync_all.name, statuses=BUSY), limit=1)
        if running:
            return SkipReason(f"sync_all run {running[0].run_id} has not finished yet; the next tick catches up")
        moment = context.scheduled_execution_time or datetime.now(UTC)
        return RunRequest(run_key=f"sync:{moment.isoformat()}", tags={TRIGGER: "schedule"})

    @schedule(
        name="nightly_points",
        cron_schedule=settings.nightly_cron,
        execution_timezone=settings.timezone,
        job=nightly,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Release pending points, expire lapsed lots, review tiers — as of the scheduled moment.",
    )
    def nightly_points(context: ScheduleEvaluationContext) -> RunRequest:
        moment = context.scheduled_execution_time or datetime.now(UTC)
        return RunRequest(
            run_key=f"nightly:{moment.isoformat()}",
            run_config={"ops": {"nightly_points": {"config": {"as_of": moment.isoformat()}}}},
            tags={TRIGGER: "schedule"},
        )

    return [incremental_sync, nightly_points]


# ------------------------------------------------------------------------------------- sensors
def webhook_sensor(config: HubConfig) -> SensorDefinition:
    """One run per system with webhooks newer than the cursor (the highest event row id seen). A run
    that fails leaves its events unprocessed; the next scheduled sync covers them."""

    @sensor(
        name="webhook_events",
        job=webhook_sync,
        minimum_interval_seconds=config.orchestration.event_poll_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Turns newly stored webhooks into an incremental run of the system that sent them.",
    )
    def webhook_events(context: SensorEvaluationContext, hub: HubResource) -> SensorResult | SkipReason:
        seen = int(context.cursor or 0)
        with hub.hub().session() as session:
            waiting = events.waiting(session, after_id=seen)
        requests = [
            RunRequest(
                run_key=f"webhook:{system}:{top}",
                asset_selection=webhook_selection(config, system),
                tags={TRIGGER: "webhook", "memberhub/system": system, "memberhub/events": str(count)},
            )
            for system, (count, top) in sorted(waiting.items())
            if system in config.connectors and config.connectors[system].enabled
        ]
        if not waiting:
            return SkipReason("no new webhook events")
        return SensorResult(run_requests=requests, cursor=str(max(top for _count, top in waiting.values())))

    return webhook_events


def _trigger(context: RunStatusSensorContext) -> str:
    return context.dagster_run.tags.get(TRIGGER) or (
        "schedule" if "dagster/schedule_name" in context.dagster_run.tags else "manual"
    )


def _times(context: RunStatusSensorContext) -> tuple[datetime | None, datetime | None]:
    record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
    if record is None:
        return None, None
    started, ended = record.start_time, record.end_time
    return (
        datetime.fromtimestamp(started, UTC) if started else None,
        datetime.fromtimestamp(ended, UTC) if ended else None,
    )


def step_error(event: DagsterEvent) -> str:
    """What went wrong in a failed step: the innermost cause (Dagster wraps the user's exception)."""
    error = event.event_specific_data.error if event.event_specific_data is not None else None
    if error is None:
        return event.message or "failed"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_reason(context: RunFailureSensorContext) -> str:
    """The run's failure message and each failed step's error, as one text."""
    lines = [context.failure_event.message or "run failed"]
    lines += [f"{event.step_key}: {step_error(event)}" for event in context.get_step_failure_events()]
    return "\n".join(lines)


def _record(context: RunStatusSensorContext, hub: HubResource, status: str, error: str | None = None) -> None:
    """One row in ``pipeline_runs`` for the run a status sensor saw."""
    started, ended = _times(context)
    with hub.hub().session() as session, session.begin():
        record_run(
            session,
            run_id=context.dagster_run.run_id,
            job_name=context.dagster_run.job_name,
            status=status,
            trigger=_trigger(context),
            started_at=started,
            finished_at=ended,
            error=error,
        )


def run_sensors() -> list[SensorDefinition]:
    @run_failure_sensor(
        name="record_run_failure",
        default_status=DefaultSensorStatus.RUNNING,
        description="Writes every failed run, with its failed steps' errors, where `memberhub status` shows it.",
    )
    def record_run_failure(context: RunFailureSensorContext, hub: HubResource) -> None:
        _record(context, hub, "failure", failure_reason(context))

    @run_status_sensor(
        name="record_run_success",
        run_status=DagsterRunStatus.SUCCESS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Writes every finished run where `memberhub status` shows it.",
    )
    def record_run_success(context: RunStatusSensorContext, hub: HubResource) -> None:
        _record(context, hub, "success")

    return [record_run_failure, record_run_success]
