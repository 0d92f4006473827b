"""How the hub is doing, read from its database (``memberhub status``): the last orchestrated runs and
the failures among them, the review queue, quarantine, how far behind each connector's cursor is,
and webhooks still waiting for their pull. Runs are recorded by Dagster's run-status sensors and by
the in-process runner (``record_run``), so this needs no Dagster instance to read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import events, quarantine
from hub.tables import ConnectorState, PipelineRunRow, ReviewQueueItem, utcnow

ERROR_LIMIT = 4000
"""A recorded failure keeps this many characters of its reason."""


def record_run(
    session: Session,
    *,
    run_id: str,
    job_name: str,
    status: str,
    trigger: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    error: str | None = None,
) -> None:
    """Write down how a run ended; recording the same run again updates it (a sensor re-evaluated)."""
    session.merge(
        PipelineRunRow(
            run_id=run_id,
            job_name=job_name,
            status=status,
            trigger=trigger,
            started_at=started_at,
            finished_at=finished_at or utcnow(),
            error=error[:ERROR_LIMIT] if error else None,
        )
    )


def _run(row: PipelineRunRow) -> dict[str, Any]:
    seconds = None
    if row.started_at is not None:
        seconds = round((row.finished_at - row.started_at).total_seconds(), 1)
    return {
        "run_id": row.run_id,
        "job": row.job_name,
        "status": row.status,
        "trigger": row.trigger,
        "finished_at": row.finished_at.isoformat(),
        "seconds": seconds,
        "error": row.error,
    }


def _moment(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        moment = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def cursors(session: Session, now: datetime) -> dict[str, dict[str, Any]]:
    """Connector -> its streams' cursors; ``age_seconds`` is how long ago the oldest stream's cursor
    (the newest change it has pulled) was, ``moved_at`` when a pull last moved one."""
    out: dict[str, dict[str, Any]] = {}
    for state in session.scalars(select(ConnectorState).order_by(ConnectorState.connector, ConnectorState.stream)):
        entry = out.setdefault(state.connector, {"streams": {}, "age_seconds": None, "moved_at": None})
        entry["streams"][state.stream] = state.cursor
        moment = _moment(state.cursor)
        if moment is not None:
            age = round((now - moment).total_seconds())
            entry["age_seconds"] = age if entry["age_seconds"] is None else max(entry["age_seconds"], age)
        if entry["moved_at"] is None or state.updated_at.isoformat() > entry["moved_at"]:
            entry["moved_at"] = state.updated_at.isoformat()
    return out


def status(session: Session, connectors: list[str], *, runs: int = 10, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``memberhub status`` shows, as plain data (``--json`` prints it as it is)."""
    now = now or utcnow()
    last = session.scalars(select(PipelineRunRow).order_by(PipelineRunRow.finished_at.desc()).limit(runs))
    failures = session.scalars(
        select(PipelineRunRow)
        .where(PipelineRunRow.status == "failure")
        .order_by(PipelineRunRow.finished_at.desc())
        .limit(runs)
    )
    held: dict[str, int] = {}
    for row in quarantine.summary(session):
        held[row["source"]] = held.get(row["source"], 0) + row["count"]
    found = cursors(session, now)
    waiting = {
        system: {"waiting": b["waiting"], "oldest": b["oldest"].isoformat()}
        for system, b in events.backlog(session).items()
    }
    return {
        "at": now.isoformat(),
        "runs": [_run(r) for r in last],
        "failures": [_run(r) for r in failures],
        "reviews_open": int(session.scalar(select(func.count()).where(ReviewQueueItem.status == "open")) or 0),
        "quarantine": held,
        "connectors": {
            name: found.get(name, {"streams": {}, "age_seconds": None, "moved_at": None})
            for name in sorted(set(connectors) | set(found))
        },
        "webhooks_waiting": waiting,
    }


__all__ = ["cursors", "record_run", "status"]
