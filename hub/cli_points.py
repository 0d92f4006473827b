"""``memberhub points``: a member's balance, lots and history; audited adjustments; the nightly
jobs; and what auditors ask for — reconciliation and liabilities per store."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from schemas.errors import HubError

points_app = typer.Typer(
    help="Points ledger: show, adjust, reconcile, liabilities, expire, release.", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
NowOption = Annotated[
    datetime | None, typer.Option("--now", help="the moment to run as (ISO 8601, UTC if no offset); default now")
]


def _cli() -> Any:
    from hub import cli  # the app imports this module; its helpers are read when a command runs

    return cli


def _member(session: Any, member: str) -> str:
    from sqlalchemy import select

    from hub.resolve import active_member_id
    from hub.tables import GoldenMember, LedgerEntryRow

    member_id = active_member_id(session, member)
    known = session.scalar(select(GoldenMember.member_id).where(GoldenMember.member_id == member_id))
    if known is None and session.scalar(select(LedgerEntryRow.id).where(LedgerEntryRow.member_id == member_id)) is None:
        raise HubError(f"no member {member!r}; golden member ids look like MH00000001")
    return member_id


def _when(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _at(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@points_app.command("show")
def points_show(member: str, as_json: JsonOption = False) -> None:
    """A member's balance, pending points, debt, open lots (with expiry) and history."""
    from hub import ledger

    cli = _cli()
    hub = cli._hub()
    with hub.session() as session:
        data = ledger.statement(session, _member(session, member))
    if as_json:
        cli._print_json(data)
        return
    console = cli.console
    console.print(
        f"{data['member_id']}: balance / 积分余额 [bold]{data['balance']}[/], pending / 冻结 {data['pending']}"
        + (f", [red]debt / 欠分 {data['debt']}[/]" if data["debt"] else "")
    )
    lots = Table(
        "lot", "store", "earned", "points", "left", "expires / 到期", "pending until / 冻结至", title="lots / 积分批次"
    )
    for lot in data["lots"]:
        lots.add_row(
            str(lot["id"]),
            lot["store_code"] or "-",
            _at(lot["earned_at"]),
            str(lot["points"]),
            str(lot["remaining"]),
            _at(lot["expires_at"]),
            _at(lot["available_at"]) if lot["pending"] else "-",
        )
    console.print(lots)
    table = Table("at", "kind", "points", "pending", "store", "source", "document", "by", title="history / 积分流水")
    for e in data["history"]:
        table.add_row(
            _at(e["at"]),
            e["kind"],
            str(e["points"]),
            str(e["pending"]) if e["pending"] else "",
            e["store"] or "-",
            e["source"],
            e["document"] + (f" ({e['reason']})" if e["kind"] == "adjust" and e["reason"] else ""),
            e["actor"],
        )
    console.print(table)


@points_app.command("adjust", context_settings={"ignore_unknown_options": True})
def points_adjust(
    member: str,
    delta: Annotated[int, typer.Argument(help="points to add, or take away when negative (e.g. -50)")],
    reason: Annotated[str, typer.Option("--reason", help="why; kept in the ledger and the audit log")],
    actor: Annotated[str | None, typer.Option("--actor", help="who asks; default cli:<login>")] = None,
    document: Annotated[
        str | None, typer.Option("--document", help="an id for this adjustment; repeating it changes nothing")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="the store to book it to")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add or take away points by hand: audited; a deduction cannot take the balance below zero."""
    from hub import ledger

    cli = _cli()
    hub = cli._hub()
    who = actor or f"cli:{getpass.getuser()}"
    with hub.session() as session, session.begin():
        member_id = _member(session, member)
        before = ledger.balance(session, member_id)
        after = ledger.adjust(
            session,
            member_id,
            delta,
            reason=reason,
            actor=who,
            programme=hub.config.programme,
            document=document,
            store_code=store,
        )
    data = {"member_id": member_id, "delta": delta, "balance_before": before, "balance": after, "actor": who}
    if as_json:
        cli._print_json(data)
    else:
        cli.console.print(f"{member_id}: {before} → [bold]{after}[/] ({delta:+d}, {reason}) by {who}")


@points_app.command("reconcile")
def points_reconcile(as_json: JsonOption = False) -> None:
    """Check every cached balance and lot against the ledger; exit 1 on any difference."""
    from dataclasses import asdict

    from hub import ledger

    cli = _cli()
    hub = cli._hub()
    with hub.session() as session:
        differences = ledger.reconcile(session)
    if as_json:
        cli._print_json({"differences": [asdict(d) for d in differences]})
    elif not differences:
        cli.console.print("[green]ledger reconciles[/]: 0 differences")
    else:
        for d in differences[:50]:
            cli.console.print(f"[red]{d.check}[/] {d.key}: ledger says {d.expected}, found {d.found}")
    if differences:
        raise typer.Exit(1)


@points_app.command("liabilities")
def points_liabilities(as_json: JsonOption = False) -> None:
    """Outstanding points per store where they were earned; the stores add up to the total."""
    from hub import ledger

    cli = _cli()
    hub = cli._hub()
    with hub.session() as session:
        per_store = ledger.liabilities(session)
    rows = [
        {"store": store, "available": v.available, "pending": v.pending, "total": v.total}
        for store, v in sorted(per_store.items(), key=lambda item: item[0] or "")
    ]
    total = {k: sum(r[k] for r in rows) for k in ("available", "pending", "total")}
    if as_json:
        cli._print_json({"stores": rows, "total": total})
        return
    table = Table("store / 门店", "available / 可用", "pending / 冻结", "total / 合计")
    for r in rows:
        table.add_row(r["store"] or "-", str(r["available"]), str(r["pending"]), str(r["total"]))
    table.add_row("[bold]total[/]", str(total["available"]), str(total["pending"]), f"[bold]{total['total']}[/]")
    cli.console.print(table)


@points_app.command("expire")
def points_expire(now: NowOption = None, as_json: JsonOption = False) -> None:
    """Expire lots whose validity has ended (idempotent; the nightly job)."""
    cli = _cli()
    counts = cli._hub().expire_points(_when(now))
    if as_json:
        cli._print_json(counts)
    else:
        cli.console.print(f"expired {counts['points']} points in {counts['lots']} lots of {counts['members']} members")


@points_app.command("release")
def points_release(now: NowOption = None, as_json: JsonOption = False) -> None:
    """Release pending points whose return window has ended (idempotent; the nightly job)."""
    cli = _cli()
    counts = cli._hub().release_points(_when(now))
    if as_json:
        cli._print_json(counts)
    else:
        cli.console.print(f"released {counts['points']} points in {counts['lots']} lots of {counts['members']} members")
