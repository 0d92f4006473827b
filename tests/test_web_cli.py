"""``memberhub users add | token | list`` and ``memberhub serve`` as an operator uses them: real
processes, a real uvicorn on 127.0.0.1, tokens stored only as hashes and shown once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from test_web_world import KEYS, World, served

from hub import accounts
from hub.accounts import AccessError, digest
from hub.tables import Account, ApiToken

pytest_plugins = ("test_web_world",)
MEMBERHUB = str(Path(sys.executable).parent / "memberhub")


def memberhub(world: World, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **KEYS}
    env.pop("MEMBERHUB_DATABASE_URL", None)
    return subprocess.run(
        [MEMBERHUB, "--config", str(world.config_path), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_users_add_token_list_and_the_token_opens_the_served_api(web_world):
    added = memberhub(
        web_world,
        "users",
        "add",
        "wu",
        "--role",
        "clerk",
        "--store",
        "GZ01",
        "--store",
        "SH01",
        "--password-stdin",
        stdin="a long enough secret\n",
    )
    assert added.returncode == 0, added.stderr
    issued = memberhub(web_world, "users", "token", "wu")
    assert issued.returncode == 0 and "cannot be shown again" in issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("mht_") and len(token) > 40
    with web_world.hub().session() as session:
        account = session.scalar(select(Account).where(Account.name == "wu"))
        assert account.stores == ["GZ01", "SH01"] and account.password_hash.startswith("$argon2id$")
        hashes = session.scalars(select(ApiToken.token_hash).where(ApiToken.account_id == account.id)).all()
        assert hashes == [digest(token)]  # the token itself is nowhere in the database
    listed = json.loads(memberhub(web_world, "users", "list", "--json").stdout)
    wu = next(u for u in listed if u["name"] == "wu")
    assert (wu["role"], wu["stores"], wu["password"], wu["tokens"]) == ("clerk", ["GZ01", "SH01"], True, [token[:12]])
    with served(web_world) as base:
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert (me["name"], me["role"], me["stores"]) == ("wu", "clerk", ["GZ01", "SH01"])
        gz = httpx.get(f"{base}/api/v1/members/{web_world.gz01_member}", headers={"Authorization": f"Bearer {token}"})
        assert gz.status_code == 200
        assert httpx.get(f"{base}/login").status_code == 200


def test_users_add_explains_mistakes_without_a_traceback(web_world):
    cases = [
        (("users", "add", "x", "--role", "boss", "--no-password"), "unknown role 'boss'"),
        (("users", "add", "x", "--role", "clerk", "--no-password"), "a clerk needs at least one store"),
        (("users", "token", "nobody"), "no user 'nobody'"),
    ]
    for args, message in cases:
        result = memberhub(web_world, *args)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_accounts_refuse_what_makes_no_sense(web_world):
    with web_world.hub().session() as session, session.begin():
        for kwargs, message in [
            ({"name": "x", "role": "admin", "stores": ["SH01"]}, "only clerks"),
            ({"name": "li", "role": "steward"}, "exists already"),
            ({"name": "y", "role": "auditor", "password": "short"}, "at least 8 characters"),
        ]:
            with pytest.raises(AccessError, match=message):
                accounts.add_user(session, **kwargs)
        assert accounts.authenticate_password(session, "li", "correct horse battery") is not None
        assert accounts.authenticate_password(session, "li", "wrong horse battery") is None
        assert accounts.authenticate_password(session, "nobody", "correct horse battery") is None
        assert accounts.authenticate_token(session, "mht_" + "x" * 43) is None
