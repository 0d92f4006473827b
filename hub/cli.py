"""The ``memberhub`` command. Errors print without a traceback unless ``--debug`` is given."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.cli_data import mappings_app, quarantine_app
from hub.cli_points import points_app
from hub.cli_privacy import keys_app, privacy_app
from hub.cli_sync import sync_app
from schemas.errors import HubError

app = typer.Typer(
    help="MemberHub: one member, one points balance, one tier across every system.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The hub database.", no_args_is_help=True)
connectors_app = typer.Typer(help="Source systems: list, check, discover, sync.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (connectors_app, "connectors"),
    (mappings_app, "mappings"),
    (points_app, "points"),
    (privacy_app, "privacy"),
    (keys_app, "keys"),
    (quarantine_app, "quarantine"),
    (sync_app, "sync"),
):
    app.add_typer(sub, name=name)

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
State = dict[str, Any]
_state: State = {"debug": False, "config": None}

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="configuration file (memberhub.yaml)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    config: ConfigOption = None,
) -> None:
    _state["debug"] = debug
    _state["config"] = config


def _hub():  # type: ignore[no-untyped-def]
    from hub.service import Hub

    hub = Hub(config_path=_state["config"])
    hub.upgrade()
    return hub


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False, default=str))


@contextmanager
def _progress(enabled: bool = True):  # type: ignore[no-untyped-def]
    """A live display of each step's progress; the yielded callback is ``report(step, n)``."""
    if not enabled or (not sys.stderr.isatty() and os.environ.get("MEMBERHUB_PROGRESS") != "1"):
        counts: dict[str, int] = {}

        def plain(step: str, n: int) -> None:
            counts[step] = counts.get(step, 0) + n

        yield plain
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:>8.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(step: str, n: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=None)
            bar.advance(tasks[step], n)

        yield report


# ------------------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the hub database to the newest schema."""
    hub = _hub()
    console.print(f"database is up to date: {_safe_url(hub.database_url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------------- demo / run
@app.command()
def demo(
    members: Annotated[int, typer.Option(help="people in the simulated chain")] = 300,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Start the simulators, run the whole pipeline once on the embedded default, print a summary."""
    from hub.demo import run_demo

    started = time.perf_counter()
    with _progress(not as_json) as report:
        summary = run_demo(members=members, seed=seed, progress=report)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        _print_json(summary)
    else:
        _print_summary(summary)
    if not summary["success"]:
        raise typer.Exit(1)


@app.command()
def run(as_json: JsonOption = False) -> None:
    """Run the pipeline once against the configured systems (in-process Dagster, no daemon)."""
    from orchestration.runner import run_pipeline

    hub = _hub()
    with _progress(not as_json) as report:
        figures = run_pipeline(
            str(_state["config"]) if _state["config"] else None, database_url=hub.database_url, progress=report
        )
    summary = {
        "run": figures,
        **hub.summary(),
        "success": figures["_failures"]["success"],
        "failures": figures["_failures"]["steps"],
    }
    if as_json:
        _print_json(summary)
    else:
        _print_summary(summary)
    if not summary["success"]:
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any]) -> None:
    run = summary["run"]
    table = Table(title="MemberHub 运行摘要 / run summary", show_header=True)
    columns = (
        "source\n来源",
        "pulled\n拉取",
        "new\n新增",
        "stored\n已存",
        "quarantined\n隔离",
        "sent\n回写",
        "failed\n失败",
        "same\n未变",
    )
    for i, title in enumerate(columns):
        table.add_column(title, justify="left" if i == 0 else "right")
    for source in sorted(summary["records"] | {k.split("/", 1)[1]: 0 for k in run if k.startswith("raw/")}):
        raw = run.get(f"raw/{source}", {})
        wb = run.get(f"writeback/{source}", {})
        figures = (
            raw.get("pulled", 0),
            raw.get("new", 0) + raw.get("changed", 0),
            summary["records"].get(source, 0),
            summary["quarantined"].get(source, 0),
            wb.get("sent", 0),
            wb.get("failed", 0),
            wb.get("skipped", 0),
        )
        table.add_row(source, *(str(f) for f in figures))
    console.print(table)
    golden = run.get("golden", {})
    ledger = run.get("ledger", {})
    console.print(
        f"golden members / 会员主记录: [bold]{summary['golden_members']}[/] "
        f"(from {summary['staged_members']} source members; {summary['in_several_systems']} found in 2+ systems)\n"
        f"auto-merged this run / 本次自动合并: {golden.get('auto_merged', 0)} records "
        f"joined another system's record; waiting for review / 待审核: {summary.get('review_open', 0)}\n"
        f"points posted this run / 本次积分入账: {ledger.get('points', 0)} in {ledger.get('entries', 0)} entries; "
        f"outstanding / 积分余额合计: {summary['points_outstanding']}\n"
        "members per tier / 各等级会员: " + ", ".join(f"{k} {v}" for k, v in summary["tiers"].items())
    )
    for failure in summary.get("failures", []):
        err.print(f"[red]failed:[/] {failure}")
    if "seconds" in summary:
        console.print(f"took {summary['seconds']} s")


@app.command()
def simulate(
    systems: Annotated[
        str, typer.Option(help="comma-separated: shopify,square,hubspot,odoo")
    ] = "shopify,square,hubspot,odoo",
    members: Annotated[int, typer.Option(help="people in the simulated chain")] = 300,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 7,
    port: Annotated[int, typer.Option(help="first port; the others follow (0: any free ports)")] = 8701,
    state_dir: Annotated[Path | None, typer.Option(help="keep written points and tiers here between runs")] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="faults to inject, SYSTEM:FAULT=VALUE comma-separated, e.g. "
            "shopify:rate_limit=5,square:errors=3,hubspot:slow_seconds=2 (counts are requests; "
            "faults: rate_limit, errors, error_status, slow_seconds, slow, slow_by, reset, malformed, expired_token)"
        ),
    ] = "",
) -> None:
    """Run the simulators in the foreground and print their base URLs (Ctrl-C stops them)."""
    import signal

    from connectors.simulators import start_simulators
    from connectors.simulators._server import parse_faults
    from schemas.errors import ConfigError

    chosen = tuple(s.strip() for s in systems.split(",") if s.strip())
    try:
        injected = parse_faults(faults, chosen)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cluster = start_simulators(chosen, members=members, seed=seed, base_port=port, state_dir=state_dir)
    for name, sim_faults in injected.items():
        cluster.simulators[name].faults = sim_faults
    for name, url in cluster.base_urls.items():
        console.print(f"{name:8} {url}")
    for name, sim_faults in injected.items():
        console.print(f"{name:8} faults: {sim_faults}")
    console.print("simulators running; Ctrl-C to stop")
    sys.stdout.flush()  # a script reading the URLs from a pipe sees them now
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly: written state is saved
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


# ------------------------------------------------------------------------------------- connectors
@connectors_app.command("list")
def connectors_list(as_json: JsonOption = False) -> None:
    """The configured connectors and their cursors."""
    from hub.ingest import read_cursor

    hub = _hub()
    rows = []
    with hub.session() as session:
        for name, settings in hub.config.connectors.items():
            connector = hub.connector(name)
            cursors = {s.name: read_cursor(session, name, s.name) for s in connector.streams}
            rows.append(
                {
                    "name": name,
                    "kind": settings.kind,
                    "base_url": settings.base_url,
                    "enabled": settings.enabled,
                    "writeback": settings.writeback,
                    "cursors": cursors,
                }
            )
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "kind", "base_url", "enabled", "cursors")
    for row in rows:
        table.add_row(
            row["name"],
            row["kind"],
            row["base_url"],
            str(row["enabled"]),
            ", ".join(f"{k}: {v or '-'}" for k, v in row["cursors"].items()),
        )
    console.print(table)


@connectors_app.command("check")
def connectors_check(name: str, as_json: JsonOption = False) -> None:
    """Reachability, authentication and a sample read, each step explained."""
    hub = _hub()
    with hub.connector(name) as connector:
        steps = connector.check()
    if as_json:
        _print_json([{"step": s.name, "ok": s.ok, "detail": s.detail} for s in steps])
    else:
        for step in steps:
            mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
            console.print(f"{mark} {step.name}: {step.detail}")
    if not all(s.ok for s in steps):
        raise typer.Exit(1)


@connectors_app.command("discover")
def connectors_discover(
    name: str,
    pages: Annotated[int, typer.Option(min=1, help="pages to sample per stream")] = 1,
    as_json: JsonOption = False,
) -> None:
    """The streams a connector serves and the fields seen in a sample of each: JSON type and an example."""
    from hub.discover import discover, shorten

    hub = _hub()
    with hub.connector(name) as connector:
        found = discover(connector, pages=pages)
    if as_json:
        _print_json([stream.as_dict() for stream in found])
        return
    for stream in found:
        table = Table("field", "type", "present", "example", title=f"{name} / {stream.name} ({stream.kind})")
        for seen in stream.fields:
            table.add_row(seen.path, "|".join(seen.types), f"{seen.present}/{stream.sampled}", shorten(seen.example))
        console.print(table)


@connectors_app.command("sync")
def connectors_sync(
    name: str, full: Annotated[bool, typer.Option(help="ignore the cursor")] = False, as_json: JsonOption = False
) -> None:
    """Pull one connector's streams into the hub (no mapping or write-back)."""
    hub = _hub()
    with _progress(not as_json) as report:
        counts = hub.sync(name, full=full, progress=report)
    if as_json:
        _print_json(counts)
    else:
        console.print(
            f"{name}: pulled {counts['pulled']}, new {counts['new']}, changed {counts['changed']}, "
            f"unchanged {counts['unchanged']}"
        )


from hub.cli_match import match_command  # noqa: E402 - registered here, defined beside

app.command("match")(match_command)

from hub.cli_status import status_command  # noqa: E402 - registered here, defined beside

app.command("status")(status_command)

from hub.cli_users import serve_command, users_app  # noqa: E402 - registered here, defined beside

app.add_typer(users_app, name="users")
app.command("serve")(serve_command)

from hub.cli_report import report_command, segments_app  # noqa: E402 - registered here, defined beside

app.command("report")(report_command)
app.add_typer(segments_app, name="segments")


def main() -> None:
    try:
        app()
    except HubError as exc:
        if _state["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)  # plain: never wrapped or cut, whatever the terminal
        sys.exit(1)


if __name__ == "__main__":
    main()
