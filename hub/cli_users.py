"""``memberhub users add | token | revoke-token | disable | list`` and ``memberhub serve``: who may
use the console and API, and running them."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.accounts import ROLES, AccessError

users_app = typer.Typer(help="Console and API accounts: add, token, revoke-token, disable, list.", no_args_is_help=True)
console = Console(soft_wrap=True)


def _hub():  # type: ignore[no-untyped-def]
    from hub.cli import _hub as hub

    return hub()


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option("--role", "-r", help=f"one of: {', '.join(ROLES)}")],
    store: Annotated[list[str] | None, typer.Option("--store", "-s", help="a clerk's store code (repeatable)")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (for scripts)")
    ] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="API tokens only, no console sign-in")] = False,
) -> None:
    """Add a user (用户). The password is asked for (twice) unless --password-stdin or --no-password."""
    from hub import accounts

    if role not in ROLES:
        raise AccessError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not no_password:
        password = typer.prompt("password / 密码", hide_input=True, confirmation_prompt=True)
    hub = _hub()
    with hub.session() as session, session.begin():
        principal = accounts.add_user(session, name, role, stores=store, password=password)
    stores = f" ({', '.join(principal.stores)})" if principal.stores else ""
    console.print(f"added {principal.name}: {principal.role}{stores} / 已添加用户")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue an API token for NAME. It is shown once: only its hash is kept (只显示一次)."""
    from hub import accounts

    hub = _hub()
    with hub.session() as session, session.begin():
        token = accounts.issue_token(session, name)
    print(token)
    print("keep it now: it cannot be shown again / 请立即保存，之后无法再次查看", file=sys.stderr)


@users_app.command("revoke-token")
def users_revoke_token(
    name: str,
    prefix: Annotated[
        str | None, typer.Argument(help="the token's prefix as `users list` shows it (or the whole token)")
    ] = None,
    revoke_all: Annotated[bool, typer.Option("--all", help="every active token of NAME")] = False,
) -> None:
    """Revoke an API token of NAME (吊销令牌): refused by every web worker from its next request on."""
    from hub import accounts

    if (prefix is None) == (not revoke_all):
        raise AccessError("give a token prefix (`memberhub users list` shows them) or --all, not both")
    hub = _hub()
    with hub.session() as session, session.begin():
        revoked = accounts.revoke_tokens(session, name, prefix)
    shown = ", ".join(revoked) or "none active"
    console.print(f"revoked {name}'s tokens: {shown} / 已吊销")


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Shut NAME out (停用): tokens refused by every web worker at once, console sessions ended."""
    from hub import accounts

    hub = _hub()
    with hub.session() as session, session.begin():
        accounts.disable_user(session, name)
    console.print(f"disabled {name} / 已停用")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False) -> None:
    """Every user with role, stores and active token prefixes."""
    from hub import accounts

    hub = _hub()
    with hub.session() as session:
        rows = accounts.list_users(session)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name / 用户", "role / 角色", "stores / 门店", "password / 密码", "tokens / 令牌")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["role"]),
            ", ".join(row["stores"]) or "—",  # type: ignore[arg-type]
            "yes" if row["password"] else "no",
            ", ".join(row["tokens"]) or "—",  # type: ignore[arg-type]
        )
    console.print(table)


def serve_command(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="mark session cookies Secure (when served over https)")
    ] = False,
) -> None:
    """The JSON API (/api/v1, OpenAPI at /api/v1/openapi.json) and the steward console (数据管理台)."""
    import uvicorn

    from hub.cli import _state

    hub = _hub()  # migrate once, before the workers start
    if _state["config"]:
        os.environ["MEMBERHUB_CONFIG"] = str(_state["config"])
    os.environ.setdefault("MEMBERHUB_DATABASE_URL", hub.database_url)
    if secure_cookies:
        os.environ["MEMBERHUB_SECURE_COOKIES"] = "1"
    console.print(f"serving on http://{host}:{port}/ (API: /api/v1, docs: /api/v1/docs)")
    uvicorn.run(
        "hub.web.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        proxy_headers=True,
        timeout_worker_healthcheck=60,  # a worker imports the whole hub first: seconds on a busy machine
    )
