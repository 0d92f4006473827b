"""``memberhub sync``: write-back (回写) to one destination — what would be sent, sending it, and the
record of every run; and the points changes taken in from destinations (two-way)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

sync_app = typer.Typer(help="Write-back: plan (dry run), push, history, events.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _cli() -> Any:
    from hub import cli  # the app imports this module; its helpers are read when a command runs

    return cli


def _at(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@sync_app.command("plan")
def sync_plan(
    destination: str, as_json: JsonOption = False, sample: Annotated[int, typer.Option(help="updates to show")] = 5
) -> None:
    """What a push would send (dry run): counts per field and a sample. 回写预览"""
    cli = _cli()
    hub = cli._hub()
    hub.connector(destination).close()  # an unknown name fails here, listing the configured ones
    plan = hub.plan(destination)
    data = {
        "destination": destination,
        "to_send": len(plan.updates),
        "unchanged": plan.unchanged,
        "changed_fields": plan.changed_fields(),
        "sample": [
            {
                "external_id": u.external_id,
                "member_id": u.member_id,
                "points": u.points,
                "tier": u.tier,
                "acknowledged_points": u.acknowledged_points,
                "changed": sorted(u.changed),
            }
            for u in plan.updates[:sample]
        ],
    }
    if as_json:
        cli._print_json(data)
        return
    fields = ", ".join(f"{name} {n}" for name, n in data["changed_fields"].items())
    cli.console.print(
        f"{destination}: {data['to_send']} to send / 待回写, {data['unchanged']} unchanged / 未变 ({fields})"
    )
    for row in data["sample"]:
        was = "new" if row["acknowledged_points"] is None else f"was {row['acknowledged_points']}"
        cli.console.print(
            f"  {row['external_id']} ← {row['member_id']}: {row['points']} points ({was}), {row['tier']}"
            f"  [dim]changes {', '.join(row['changed'])}[/]"
        )


@sync_app.command("push")
def sync_push(destination: str, as_json: JsonOption = False) -> None:
    """Take in the points changed inside the destination, then send it the differences. 回写"""
    cli = _cli()
    hub = cli._hub()
    with cli._progress(not as_json) as report:
        counts = hub.push(destination, progress=report)
    if as_json:
        cli._print_json(counts)
    else:
        imported = counts["imported"]
        if imported["read"]:
            cli.console.print(
                f"{destination}: took in {imported['imported']} changes made there ({imported['points']:+} points), "
                f"{imported['own']} own writes recognised, {imported['unmatched']} unmatched, "
                f"{imported['refused']} refused"
            )
        cli.console.print(
            f"{destination}: sent / 已回写 {counts['sent']}, failed / 失败 {counts['failed']}, "
            f"unchanged / 未变 {counts['skipped']}"
            + (f", {counts['partial']} in part (see `memberhub sync failures`)" if counts["partial"] else "")
        )
        for error in counts["errors"][:10]:
            cli.err.print(f"  [red]{error}[/]")
    if counts["failed"]:
        raise typer.Exit(1)


@sync_app.command("history")
def sync_history(
    destination: Annotated[str | None, typer.Argument(help="one destination; default all")] = None,
    limit: Annotated[int, typer.Option(min=1, help="runs to show")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Every write-back run: started, finished, sent, failed, unchanged. 回写记录"""
    cli = _cli()
    runs = cli._hub().sync_history(destination, limit=limit)
    if as_json:
        cli._print_json(runs)
        return
    table = Table(
        "run", "destination\n目标", "status\n状态", "started\n开始", "finished\n结束", "sent\n已回写",
        "failed\n失败", "unchanged\n未变", "error\n错误", title="write-back runs / 回写记录",
    )  # fmt: skip
    for run in runs:
        table.add_row(
            str(run["id"]),
            run["destination"],
            run["status"],
            _at(run["started_at"]),
            _at(run["finished_at"]),
            str(run["sent"]),
            str(run["failed"]),
            str(run["skipped"]),
            (run["error"] or "")[:60],
        )
    cli.console.print(table)


@sync_app.command("failures")
def sync_failures(
    destination: str,
    limit: Annotated[int, typer.Option(min=1, help="rows to show")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Customers the destination refused last time, with its reason (sent again next run), and
    parts it cannot hold (a Square customer without a phone). 回写失败"""
    from sqlalchemy import select

    from hub import writeback
    from hub.tables import WritebackState

    cli = _cli()
    with cli._hub().session() as session:
        failed = writeback.failures(session, destination, limit=limit)
        partial = [
            {"external_id": r.external_id, "member_id": r.member_id, "skipped": r.skipped}
            for r in session.scalars(
                select(WritebackState)
                .where(WritebackState.destination == destination, WritebackState.skipped.is_not(None))
                .order_by(WritebackState.external_id)
                .limit(limit)
            )
        ]
    if as_json:
        cli._print_json({"failed": failed, "partial": partial})
        return
    for row in failed:
        cli.console.print(f"[red]failed[/] {row['external_id']} ({row['member_id']}): {row['error']}")
    for row in partial:
        cli.console.print(f"[yellow]in part[/] {row['external_id']} ({row['member_id']}): {row['skipped']}")
    if not failed and not partial:
        cli.console.print(f"{destination}: nothing failed / 无失败")


@sync_app.command("events")
def sync_events(
    destination: Annotated[str | None, typer.Argument(help="one destination; default all")] = None,
    limit: Annotated[int, typer.Option(min=1, help="events to show")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Points changes made inside destinations (till redemptions) and what the hub did with them."""
    from hub import two_way

    cli = _cli()
    with cli._hub().session() as session:
        events = two_way.recent(session, destination, limit=limit)
    if as_json:
        cli._print_json(events)
        return
    table = Table("destination", "event", "at", "kind", "points", "customer", "member", "outcome", "detail")
    for e in events:
        table.add_row(
            e["destination"],
            e["event_id"],
            _at(e["occurred_at"]),
            e["kind"],
            str(e["points"]),
            e["external_id"] or "-",
            e["member_id"] or "-",
            e["outcome"],
            (e["detail"] or "")[:50],
        )
    cli.console.print(table)
