"""``memberhub privacy``: export everything held about a person, forget a person. ``memberhub keys``:
the encryption keys — status, a new key version, rotation (re-sealing with the newest key)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

privacy_app = typer.Typer(
    help="Privacy requests / 隐私请求: export everything held about a person, forget a person.", no_args_is_help=True
)
keys_app = typer.Typer(help="Encryption keys / 加密密钥: status, new, rotate.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
ActorOption = Annotated[str | None, typer.Option("--actor", help="who asks; default cli:<login>")]
MemberArgument = Annotated[str, typer.Argument(help="golden member id (MH00000001), phone number or e-mail")]


def _cli() -> Any:
    from hub import cli  # the app imports this module; its helpers are read when a command runs

    return cli


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


# ------------------------------------------------------------------------------------- privacy
@privacy_app.command("export")
def privacy_export(
    member: MemberArgument,
    out: Annotated[Path | None, typer.Option("--out", help="write the JSON here instead of printing it")] = None,
    actor: ActorOption = None,
) -> None:
    """Everything the hub holds about a person, as JSON (the read is audited) / 导出个人数据."""
    from hub.privacy.requests import export
    from hub.search import ContactRules

    cli = _cli()
    hub = cli._hub()
    with hub.session() as session, session.begin():
        data = export(session, member, actor=_actor(actor), rules=ContactRules.of(hub.config.programme))
    text = json.dumps(data, ensure_ascii=False, indent=1, default=str)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n", encoding="utf-8")
    out.chmod(0o600)
    cli.console.print(f"{data['member_id']}: exported to {out} / 已导出")


@privacy_app.command("forget")
def privacy_forget(
    member: MemberArgument,
    reason: Annotated[str, typer.Option("--reason", help="why (the request's reference); kept in the audit log")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Erase a person's contact data; keep their ledger under a pseudonymous id; block their return / 删除个人数据."""
    from hub.privacy.requests import find_member, forget
    from hub.search import ContactRules

    cli = _cli()
    hub = cli._hub()
    rules = ContactRules.of(hub.config.programme)
    if not yes:
        with hub.session() as session:
            member_id = find_member(session, member, rules=rules)
        typer.confirm(f"erase the contact data of {member_id} for good? / 永久删除 {member_id} 的个人数据?", abort=True)
    with hub.session() as session, session.begin():
        counts = forget(session, member, actor=_actor(actor), reason=reason, rules=rules)
    if as_json:
        cli._print_json(counts)
        return
    cli.console.print(
        f"{counts['member_id']}: forgotten / 已删除 — {counts['source_members_erased']} source members and "
        f"{counts['raw_records_erased']} raw records erased, {counts['orders_pseudonymised']} orders and "
        f"{counts['ledger_entries_kept']} ledger entries kept under the pseudonymous id, "
        f"{counts['tombstones']} new tombstones"
    )


# ------------------------------------------------------------------------------------- keys
@keys_app.command("status")
def keys_status(as_json: JsonOption = False) -> None:
    """The current key version, where keys come from, and what each column still seals with older keys."""
    from hub.privacy.rotation import status

    cli = _cli()
    hub = cli._hub()
    with hub.session() as session:
        data = status(session)
    if as_json:
        cli._print_json(data)
        return
    cli.console.print(
        f"current key version / 当前密钥版本: [bold]{data['current_version']}[/] "
        f"(held: {', '.join(map(str, data['versions']))}; from {data['origin']})"
    )
    table = Table("column", "sealed", "older key / 旧密钥")
    for column, figures in data["columns"].items():
        table.add_row(column, str(figures["sealed"]), str(figures["older_key"]))
    cli.console.print(table)


@keys_app.command("new")
def keys_new() -> None:
    """A new key version: added to the generated key file, or printed for MEMBERHUB_ENCRYPTION_KEYS."""
    from hub.privacy.crypto import ENCRYPTION_KEYS_ENV, add_file_key, key_file, keyring, new_key

    cli = _cli()
    ring = keyring()
    if ring.origin == ENCRYPTION_KEYS_ENV:
        cli.console.print(
            f"add this to {ENCRYPTION_KEYS_ENV} (first), keep the older versions, then run `memberhub keys rotate`:\n"
            f"{ring.current + 1}:{new_key()}"
        )
        return
    version = add_file_key()
    cli.console.print(f"key version {version} added to {key_file()}; run `memberhub keys rotate` / 请运行密钥轮换")


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOption = False) -> None:
    """Re-seal every value with the newest key version (restartable; batches commit as they go)."""
    from hub.privacy.rotation import rotate

    cli = _cli()
    hub = cli._hub()
    with cli._progress(not as_json) as report:
        seen: dict[str, int] = {}

        def batch(column: str, done: int, _total: int) -> None:
            report(f"re-seal {column}", done - seen.get(column, 0))
            seen[column] = done

        counts = rotate(hub.session, on_batch=batch)
    if as_json:
        cli._print_json(counts)
        return
    total = sum(counts.values())
    cli.console.print(f"re-sealed {total} values with the newest key / 已用新密钥重新加密 {total} 个值")
