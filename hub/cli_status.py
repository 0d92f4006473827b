"""``memberhub status``: the last runs and failures, open reviews, quarantine, how far behind each
connector is, and webhooks waiting for their pull. Registered on the main app by hub/cli.py."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def status_command(
    runs: Annotated[int, typer.Option(min=1, help="how many recent runs and failures to show")] = 10,
    as_json: JsonOption = False,
) -> None:
    """How the hub is doing: last runs, failures, open reviews, quarantine, cursor age per connector."""
    from hub import cli
    from hub.status import status

    hub = cli._hub()
    with hub.session() as session:
        report = status(session, hub.connector_names, runs=runs)
    if as_json:
        cli._print_json(report)
        return
    _print(cli.console, report)


def _print(console: Any, report: dict[str, Any]) -> None:
    table = Table("finished", "job", "trigger", "status", "seconds", title="最近运行 / last runs", title_justify="left")
    for run in report["runs"]:
        colour = "green" if run["status"] == "success" else "red"
        table.add_row(
            run["finished_at"][:19],
            run["job"],
            run["trigger"] or "-",
            f"[{colour}]{run['status']}[/]",
            "-" if run["seconds"] is None else str(run["seconds"]),
        )
    console.print(table if report["runs"] else "no runs recorded yet / 尚无运行记录")
    for failure in report["failures"]:
        console.print(
            f"[red]failed / 失败[/] {failure['finished_at'][:19]} {failure['job']} ({failure['run_id'][:8]}): "
            + escape(failure["error"] or "")
        )
    connectors = Table(
        "connector", "cursor age", "cursor moved", "webhooks waiting", title="连接器 / connectors", title_justify="left"
    )
    for name, entry in report["connectors"].items():
        waiting = report["webhooks_waiting"].get(name, {}).get("waiting", 0)
        connectors.add_row(name, _age(entry["age_seconds"]), (entry["moved_at"] or "never")[:19], str(waiting))
    console.print(connectors)
    held = report["quarantine"]
    console.print(
        f"open reviews / 待审核: [bold]{report['reviews_open']}[/]; quarantined / 隔离: "
        + (", ".join(f"{source} {n}" for source, n in held.items()) if held else "none")
    )
