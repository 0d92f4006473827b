"""``memberhub report`` (the hub's figures: tables printed, charts and CSV written) and ``memberhub
segments`` (会员分类: list, show, members, explain, refresh, tags)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
NowOption = Annotated[
    datetime | None, typer.Option("--now", help="the moment to compute as (ISO 8601, UTC if no offset); default now")
]
segments_app = typer.Typer(
    help="Segments (会员分类): list, show, members, explain, refresh, tags.", no_args_is_help=True
)


def _cli() -> Any:
    from hub import cli

    return cli


def _when(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _labels() -> dict[str, str]:
    from hub.segments import load_segments

    return {s.name: s.label for s in load_segments()}


def report_command(
    out: Annotated[Path | None, typer.Option("--out", help="write NAME.svg and NAME.csv for every table here")] = None,
    table: Annotated[str | None, typer.Option("--table", help="only this table")] = None,
    as_json: JsonOption = False,
) -> None:
    """The hub's figures: members per source and overlap, golden members over time, merges and reviews,
    points per store and month, liability, tiers, segments, repeat rate and order value, cross-store flows."""
    from hub.analytics import BUILDERS, build
    from hub.analytics.charts import write
    from schemas.errors import ConfigError

    if table is not None and table not in BUILDERS:
        from mappings.engine import _hint

        raise ConfigError(f"no report table {table!r}{_hint(table, BUILDERS)}; tables: {', '.join(BUILDERS)}")
    cli = _cli()
    hub = cli._hub()
    with hub.session() as session:
        tables = build(session, hub.config.programme, segment_labels=_labels(), only=table)
    written = write(tables, out) if out is not None else []
    if as_json:
        data = {name: t.as_dicts() for name, t in tables.items()}
        if out is not None:
            data["_files"] = [str(p) for p in written]  # type: ignore[assignment]
        cli._print_json(data)
        return
    for t in tables.values():
        shown = Table(*t.columns, title=t.title, title_justify="left")
        for row in t.rows:
            shown.add_row(*("-" if v is None else str(v) for v in row))
        if not t.rows:
            shown.caption = "no data yet / 暂无数据"
        cli.console.print(shown)
    if out is not None:
        cli.console.print(f"wrote {len(written)} files (SVG charts and CSV tables) to {out}")


@segments_app.command("list")
def segments_list(as_json: JsonOption = False) -> None:
    """Every segment: its label, rule, tag and current size."""
    from hub import segments

    definitions = segments.load_segments()
    cli = _cli()
    with cli._hub().session() as session:
        sizes = segments.sizes(session)
    rows = [
        {"name": s.name, "label": s.label, "rule": s.rule, "tag": s.tag, "members": sizes.get(s.name, 0)}
        for s in definitions
    ]
    if as_json:
        cli._print_json(rows)
        return
    shown = Table("segment", "label / 名称", "members / 人数", "rule / 规则", "tag / 标签", title="会员分类 / segments")
    for row in rows:
        shown.add_row(row["name"], row["label"], str(row["members"]), row["rule"], row["tag"] or "-")
    cli.console.print(shown)


@segments_app.command("show")
def segments_show(name: str, as_json: JsonOption = False) -> None:
    """One segment: definition, size, and its latest entries and exits."""
    from hub import segments

    segment = segments.load_segments().get(name)
    cli = _cli()
    with cli._hub().session() as session:
        size = segments.sizes(session).get(name, 0)
        moves = segments.history(session, segment=name)[-20:]
    data = {"name": segment.name, "label": segment.label, "description": segment.description, "rule": segment.rule,
            "tag": segment.tag, "members": size, "recent_changes": moves}  # fmt: skip
    if as_json:
        cli._print_json(data)
        return
    cli.console.print(f"[bold]{segment.label}[/] ({segment.name}): {size} members / 人")
    cli.console.print(f"rule / 规则: {segment.rule}\ntag / 标签: {segment.tag or '-'}\n{segment.description}")
    for move in moves:
        cli.console.print(f"  {move['at']:%Y-%m-%d %H:%M} {move['member_id']} {move['change']}")


@segments_app.command("members")
def segments_members(
    name: str, limit: Annotated[int, typer.Option(help="rows to show")] = 50, as_json: JsonOption = False
) -> None:
    """The members of one segment, with tier, orders, spend and RFM."""
    from hub import segments

    segments.load_segments().get(name)
    cli = _cli()
    with cli._hub().session() as session:
        rows = segments.members_of(session, name, limit=limit)
    if as_json:
        cli._print_json(rows)
        return
    shown = Table("member", "since / 加入", "tier", "orders", "spend", "days since last", "RFM", title=name)
    for r in rows:
        shown.add_row(r["member_id"], f"{r['entered_at']:%Y-%m-%d}", str(r["tier"]), str(r["orders"]),
                      str(r["spend"]), str(r["days_since_last_order"]), str(r["rfm"] or "-"))  # fmt: skip
    cli.console.print(shown)


@segments_app.command("explain")
def segments_explain(member: str, as_json: JsonOption = False) -> None:
    """A member's view row: RFM, churn risk and the evidence behind it, and segments."""
    from hub import segments
    from schemas.errors import HubError

    cli = _cli()
    with cli._hub().session() as session:
        data = segments.explain(session, member)
    if data is None:
        raise HubError(f"no member {member!r} in the member view; run `memberhub segments refresh` first")
    if as_json:
        cli._print_json(data)
        return
    cli.console.print(
        f"[bold]{member}[/] tier {data['tier']}, {data['orders']} orders, spend {data['spend']}, "
        f"RFM {data['rfm'] or '-'}\nchurn risk / 流失风险: {data['churn_evidence']}\n"
        f"segments / 分类: {', '.join(data['segments']) or '-'}"
    )


@segments_app.command("refresh")
def segments_refresh(now: NowOption = None, as_json: JsonOption = False) -> None:
    """Recompute the member view, RFM, churn risk and every segment; record due marketing events."""
    from hub import segments

    cli = _cli()
    figures = segments.refresh(cli._hub(), as_of=_when(now))
    if as_json:
        cli._print_json(figures)
        return
    cli.console.print(
        f"{figures['members']} members; {figures['entered']} entered and {figures['left']} left a segment; "
        f"events / 营销事件: {figures['events'] or 'none'}"
    )
    for name, size in sorted(figures["sizes"].items()):
        cli.console.print(f"  {name}: {size}")


@segments_app.command("tags")
def segments_tags(
    destination: Annotated[str | None, typer.Argument(help="one connector; default every write-back connector")] = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write segment and event tags back (only what changed), then deliver pending trigger webhooks."""
    from hub import segment_writeback, triggers
    from hub.segments import load_segments

    cli = _cli()
    hub = cli._hub()
    definitions = load_segments()
    names = [destination] if destination else hub.writeback_names
    results = {n: segment_writeback.push_destination(hub, n, definitions, now=_when(now)) for n in names}
    delivered = triggers.deliver(hub.session, definitions.triggers)
    if as_json:
        cli._print_json({"tags": results, "webhooks": delivered.__dict__})
    else:
        for name, counts in results.items():
            cli.console.print(
                f"{name}: sent {counts['sent']}, failed {counts['failed']}, unchanged {counts['skipped']}"
            )
            for error in counts["errors"][:5]:
                cli.err.print(f"  [red]{error}[/]")
        cli.console.print(f"webhooks: delivered {delivered.delivered}, failed {delivered.failed}")
    if any(c["failed"] for c in results.values()) or delivered.failed:
        raise typer.Exit(1)
