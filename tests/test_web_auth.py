"""Token revocation and the sign-in rate limit: a revoked token stops working at once on every web
worker, the tills' cached lookup included; too many failed sign-ins for a name or from an address get
429 with Retry-After until the oldest of them leaves the window."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_web_api import auth, client
from test_web_cli import memberhub
from test_web_console import console, sign_in
from test_web_world import PASSWORD, World, build_world, served

from hub import accounts
from hub.accounts import LOGIN_FAILURE_WINDOW, LOGIN_FAILURES_ALLOWED, AccessError, TooManyLogins
from hub.tables import AuditLog, LoginFailure, utcnow

pytest_plugins = ("test_web_world",)
LOOKUP = "/api/v1/members/lookup"


def revoke(world: World, name: str, prefix: str | None = None) -> list[str]:
    with world.hub().session() as session, session.begin():
        return accounts.revoke_tokens(session, name, prefix)


def test_a_revoked_token_is_refused_at_once_even_by_the_cached_lookup(web_world):
    api = client(web_world)
    phone = {"phone": "13812345678"}
    for _ in range(3):  # the lookup now answers from its token cache
        assert api.get(LOOKUP, params=phone, headers=auth(web_world, "ada")).status_code == 200
    assert api.get(LOOKUP, params=phone, headers=auth(web_world, "chen")).status_code == 200
    assert revoke(web_world, "ada") == [web_world.tokens["ada"][:12]]
    for path, params in ((LOOKUP, phone), ("/api/v1/me", {})):
        refused = api.get(path, params=params, headers=auth(web_world, "ada"))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    still = api.get(LOOKUP, params=phone, headers=auth(web_world, "chen"))  # re-checked, still good
    assert still.status_code == 200 and still.json()["items"][0]["member_id"] == web_world.sh01_member
    with web_world.hub().session() as session:
        audit = session.scalar(select(AuditLog).where(AuditLog.action == "token.revoke"))
        assert (audit.entity_id, audit.after) == ("ada", {"prefixes": [web_world.tokens["ada"][:12]]})


def test_a_cached_lookup_misses_nothing_else_either(web_world):
    """A 404 for a revoked token would tell its holder which phones are members: it gets 401."""
    api = client(web_world)
    assert api.get(LOOKUP, params={"phone": "13700000000"}, headers=auth(web_world, "li")).status_code == 404
    revoke(web_world, "li", web_world.tokens["li"][:12])
    assert api.get(LOOKUP, params={"phone": "13700000000"}, headers=auth(web_world, "li")).status_code == 401


def test_a_disabled_account_is_shut_out_at_once(web_world):
    api, browser = client(web_world), console(web_world)
    assert sign_in(browser, "ada").status_code == 303 and browser.get("/review").status_code == 200
    assert api.get(LOOKUP, params={"phone": "13812345678"}, headers=auth(web_world, "ada")).status_code == 200
    result = memberhub(web_world, "users", "disable", "ada")
    assert result.returncode == 0, result.stderr
    assert api.get(LOOKUP, params={"phone": "13812345678"}, headers=auth(web_world, "ada")).status_code == 401
    assert browser.get("/review").status_code == 303  # back to the sign-in form
    assert sign_in(console(web_world), "ada").headers["location"].startswith("/login?failed=1")


def test_revoking_by_prefix_or_whole_token_and_the_mistakes(web_world):
    with web_world.hub().session() as session, session.begin():
        second = accounts.issue_token(session, "sun")
    assert revoke(web_world, "sun", second) == [second[:12]]  # the whole token works as well
    with pytest.raises(AccessError, match="no active token"):
        revoke(web_world, "sun", second[:12])  # already revoked
    with pytest.raises(AccessError, match="no user 'nobody'"):
        revoke(web_world, "nobody")
    api = client(web_world)
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {second}"}).status_code == 401
    assert api.get("/api/v1/me", headers=auth(web_world, "sun")).status_code == 200  # the other one


def test_an_admin_revokes_a_token_over_the_api(web_world):
    api, prefix = client(web_world), web_world.tokens["zhao"][:12]
    assert api.get(LOOKUP, params={"phone": "15012340001"}, headers=auth(web_world, "zhao")).status_code == 200
    revoked = api.delete(f"/api/v1/users/zhao/tokens/{prefix}", headers=auth(web_world, "ada"))
    assert revoked.status_code == 200 and revoked.json() == {"name": "zhao", "revoked": [prefix]}
    assert api.get(LOOKUP, params={"phone": "15012340001"}, headers=auth(web_world, "zhao")).status_code == 401
    again = api.delete(f"/api/v1/users/zhao/tokens/{prefix}", headers=auth(web_world, "ada"))
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    with web_world.hub().session() as session:
        assert session.scalar(select(AuditLog.actor).where(AuditLog.action == "token.revoke")) == "admin:ada"


def test_the_lookup_follows_a_merged_member_id(web_world):
    api = client(web_world)
    absorbed = web_world.member_of("pos-a2")
    merged = api.post(
        f"/api/v1/review/{web_world.items[0]}/decision", json={"decision": "merge"}, headers=auth(web_world, "li")
    )
    assert merged.status_code == 200, merged.text
    looked = api.get(LOOKUP, params={"member_id": absorbed.lower()}, headers=auth(web_world, "ada")).json()
    assert [(i["member_id"], i["redirected_from"]) for i in looked["items"]] == [(web_world.sh01_member, absorbed)]
    clerk = api.get(LOOKUP, params={"member_id": absorbed}, headers=auth(web_world, "chen")).json()  # SH01 holds it
    assert clerk["items"][0]["member_id"] == web_world.sh01_member
    other = api.get(LOOKUP, params={"member_id": absorbed}, headers=auth(web_world, "zhao"))
    assert other.status_code == 404  # a GZ01 clerk


def test_the_lookup_checks_its_parameters_like_every_other_endpoint(web_world):
    api, headers = client(web_world), auth(web_world, "li")
    cases = [
        (api.get(LOOKUP, params={"phone": "1" * 41}, headers=headers), 422, "invalid_request"),
        (api.get(LOOKUP, params={"phone": "138", "email": "a@b.cn"}, headers=headers), 422, "one_key"),
        (api.get(f"{LOOKUP}?phone=1&phone=2", headers=headers), 422, "repeated_parameter"),
        (api.get(LOOKUP, params={"phone": "1\x00"}, headers=headers), 422, "invalid_text"),
        (api.get(LOOKUP, params={"phone": "1" * 41}), 401, "unauthorized"),
        (api.get(LOOKUP, params={"phone": "138"}, headers={"Authorization": "Basic x"}), 401, "unauthorized"),
        (api.get(LOOKUP, params={"email": "nobody@example.cn"}, headers=headers), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


@pytest.mark.postgres
def test_revocation_and_the_lookup_on_postgresql(postgres_url, world_keys, tmp_path):
    world = build_world(tmp_path, postgres_url)
    api = client(world)
    for user in ("chen", "ada"):
        looked = api.get(LOOKUP, params={"phone": "+86 138 1234 5678"}, headers=auth(world, user))
        assert [i["member_id"] for i in looked.json()["items"]] == [world.sh01_member], looked.text
    assert api.get(LOOKUP, params={"phone": "15012340001"}, headers=auth(world, "chen")).status_code == 404  # GZ01
    revoke(world, "chen")
    assert api.get(LOOKUP, params={"phone": "13812345678"}, headers=auth(world, "chen")).status_code == 401
    assert api.get(LOOKUP, params={"phone": "13812345678"}, headers=auth(world, "ada")).status_code == 200


def test_revoke_token_from_the_command_line_reaches_every_worker(web_world):
    token = web_world.tokens["li"]
    with served(web_world, "--workers", "2") as base:

        def lookups() -> set[int]:  # a new connection each: the kernel spreads them over both workers
            return {
                httpx.get(f"{base}{LOOKUP}", params={"phone": "13812345678"}, headers=auth(web_world, "li")).status_code
                for _ in range(24)
            }

        assert lookups() == {200}
        revoked = memberhub(web_world, "users", "revoke-token", "li", token[:12])
        assert revoked.returncode == 0 and token[:12] in revoked.stdout, revoked.stderr
        assert lookups() == {401}
    listed = json.loads(memberhub(web_world, "users", "list", "--json").stdout)
    assert next(u for u in listed if u["name"] == "li")["tokens"] == []
    refused = memberhub(web_world, "users", "revoke-token", "li")
    assert refused.returncode == 1 and "--all" in refused.stderr and "Traceback" not in refused.stderr
    assert memberhub(web_world, "users", "revoke-token", "sun", "--all").returncode == 0


def test_sign_in_is_refused_after_five_failures_for_a_name(web_world):
    browser = console(web_world)
    for _ in range(LOGIN_FAILURES_ALLOWED):
        assert sign_in(browser, "li", "not the password").status_code == 303
    blocked = sign_in(browser, "li")  # the right password no longer helps
    assert blocked.status_code == 429 and 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-ins" in blocked.text and "mh_session" not in browser.cookies
    assert sign_in(console(web_world), "sun").status_code == 429  # the same address, too
    with web_world.hub().session() as session:
        failed = session.scalars(select(AuditLog.entity_id).where(AuditLog.action == "login.failed")).all()
        assert failed == ["li"] * LOGIN_FAILURES_ALLOWED


def test_the_limit_counts_per_address_and_a_success_clears_the_names_count(web_world):
    now = utcnow()
    with web_world.hub().session() as session, session.begin():
        for name in ("a", "b", "c", "d"):
            accounts.record_login(session, name, "10.0.0.7", succeeded=False, now=now)
        accounts.check_login_allowed(session, "e", "10.0.0.7", now=now)  # four: still allowed
        accounts.record_login(session, "e", "10.0.0.7", succeeded=False, now=now)
        with pytest.raises(TooManyLogins) as raised:
            accounts.check_login_allowed(session, "li", "10.0.0.7", now=now + timedelta(minutes=5))
        assert raised.value.retry_after == 10 * 60
        accounts.check_login_allowed(session, "li", "10.0.0.8", now=now)  # another address
        accounts.check_login_allowed(session, "li", "10.0.0.7", now=now + LOGIN_FAILURE_WINDOW)  # window passed
        for _ in range(LOGIN_FAILURES_ALLOWED - 1):
            accounts.record_login(session, "li", "10.0.0.9", succeeded=False, now=now)
        accounts.record_login(session, "li", "10.0.0.9", succeeded=True, now=now)
        accounts.record_login(session, "li", "10.0.0.10", succeeded=False, now=now)
        accounts.check_login_allowed(session, "li", "10.0.0.10", now=now)  # the success reset the name
        accounts.record_login(session, "x", "10.0.0.9", succeeded=False, now=now)
        with pytest.raises(TooManyLogins):  # but not the address that guessed
            accounts.check_login_allowed(session, "y", "10.0.0.9", now=now)
        accounts.record_login(session, "z", None, succeeded=False, now=now + LOGIN_FAILURE_WINDOW * 2)
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 1  # old failures pruned


def test_a_signed_in_console_user_is_unaffected(web_world):
    browser = console(web_world)
    assert sign_in(browser, "li").status_code == 303
    for _ in range(LOGIN_FAILURES_ALLOWED):
        sign_in(console(web_world), "li", "not the password")
    assert browser.get("/review").status_code == 200  # a session already open stays open
    assert sign_in(TestClient(browser.app, follow_redirects=False), "li", PASSWORD).status_code == 429
