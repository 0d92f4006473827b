"""The steward console without a browser: sign-in, cookies, CSRF, both languages complete, what each
role sees, and the forms doing what the API does. (test_console_browser.py drives it in Chromium.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_web_world import PASSWORD, World

from hub.tables import AuditLog
from hub.web.app import create_app
from hub.web.i18n import MESSAGES

pytest_plugins = ("test_web_world",)


def console(world: World, *, base_url: str = "http://testserver", **options) -> TestClient:
    return TestClient(create_app(world.hub(), **options), follow_redirects=False, base_url=base_url)


def sign_in(browser: TestClient, name: str, password: str = PASSWORD, next: str = "/") -> object:
    form = browser.get(f"/login?next={next}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return browser.post("/login", data={"name": name, "password": password, "csrf_token": token, "next": next})


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_both_languages_hold_every_message():
    assert set(MESSAGES["zh"]) == set(MESSAGES["en"])
    assert all(MESSAGES["zh"][k] and MESSAGES["en"][k] for k in MESSAGES["en"])


def test_pages_need_a_sign_in_and_a_wrong_password_is_refused(web_world):
    browser = console(web_world)
    assert browser.get("/review").headers["location"] == "/login?next=/review"
    failed = sign_in(browser, "li", "not the password")
    assert failed.status_code == 303 and "failed=1" in failed.headers["location"]
    assert "mh_session" not in browser.cookies
    no_csrf = browser.post("/login", data={"name": "li", "password": PASSWORD})
    assert no_csrf.status_code == 403


def test_the_session_cookie_is_httponly_samesite_and_secure_when_asked(web_world):
    plain = sign_in(console(web_world), "li")
    cookie = plain.headers["set-cookie"]
    assert "mh_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    secure = sign_in(console(web_world, secure_cookies=True, base_url="https://testserver"), "li")
    assert "Secure" in secure.headers["set-cookie"]


def test_forms_without_the_csrf_token_are_refused(web_world):
    browser = console(web_world)
    sign_in(browser, "li")
    item = web_world.items[0]
    refused = browser.post(f"/review/{item}/decision", data={"decision": "merge"})
    assert refused.status_code == 403 and "reload" in refused.text
    wrong = browser.post(f"/review/{item}/decision", data={"decision": "merge", "csrf_token": "forged"})
    assert wrong.status_code == 403
    assert web_world.member_of("pos-a1") != web_world.member_of("pos-a2")


def test_a_steward_reviews_merges_and_splits_in_the_console_in_chinese(web_world):
    browser = console(web_world)
    browser.cookies.set("mh_lang", "zh")
    sign_in(browser, "li")
    queue = browser.get("/review")
    assert "待审核" in queue.text and "欧阳美兰" in queue.text and "司马光华" in queue.text
    assert browser.get("/review", params={"store": "GZ01"}).text.count('class="row"') == 1
    item = browser.get(f"/review/{web_world.items[0]}")
    assert "匹配依据" in item.text and "+8613812345678" in item.text and "-3.32" in item.text
    merged = browser.post(
        f"/review/{web_world.items[0]}/decision",
        data={"decision": "merge", "note": "同一人", "csrf_token": csrf_of(item.text)},
    )
    assert merged.status_code == 303
    assert web_world.member_of("pos-a1") == web_world.member_of("pos-a2") == web_world.sh01_member
    page = browser.get(f"/members/{web_world.sh01_member}")
    assert "主记录" in page.text and "拆分" in page.text and "pos-a1" in page.text and "pos-a2" in page.text
    split = browser.post(
        f"/members/{web_world.sh01_member}/split",
        data={"leaving": [str(web_world.staged["pos-a2"])], "reason": "两个人", "csrf_token": csrf_of(page.text)},
    )
    assert split.status_code == 303
    assert web_world.member_of("pos-a2") != web_world.sh01_member
    audit = browser.get("/audit")
    assert audit.status_code == 403  # a steward does not read the audit log
    english = browser.get("/lang/en?next=/review", follow_redirects=True)
    assert "Review queue" in english.text and "待审核" not in english.text


def test_the_auditor_reads_the_audit_log_and_cannot_decide(web_world):
    browser = console(web_world)
    sign_in(browser, "sun")
    item = browser.get(f"/review/{web_world.items[0]}")
    assert item.status_code == 200 and 'id="decision-form"' not in item.text
    refused = browser.post(
        f"/review/{web_world.items[0]}/decision", data={"decision": "merge", "csrf_token": csrf_of(item.text)}
    )
    assert refused.status_code == 403
    log = browser.get("/audit")
    assert log.status_code == 200 and "pii.read" in log.text and "login" in log.text


def test_a_clerk_sees_own_stores_members_masked_and_no_review_queue(web_world):
    browser = console(web_world)
    signed = sign_in(browser, "chen")
    assert browser.get(signed.headers["location"], follow_redirects=True).url.path == "/search"
    assert browser.get("/review").status_code == 403
    found = browser.get("/search", params={"q": "13812345678"})
    assert web_world.sh01_member in found.text and "138****5678" in found.text
    page = browser.get(f"/members/{web_world.sh01_member}")
    assert "138****5678" in page.text and "+8613812345678" not in page.text and 'id="split-form"' in page.text
    assert 'name="leaving"' not in page.text and 'id="adjust-form"' in page.text
    adjusted = browser.post(
        f"/members/{web_world.sh01_member}/points",
        data={"delta": "25", "reason": "来店礼", "csrf_token": csrf_of(page.text)},
    )
    assert adjusted.status_code == 303
    assert "<strong>25</strong>" in browser.get(f"/members/{web_world.sh01_member}").text
    assert browser.get(f"/members/{web_world.other_member}").status_code == 404
    with web_world.hub().session() as session:
        assert session.scalar(select(AuditLog).where(AuditLog.action == "pii.read")) is None


def test_keyboard_script_and_a_nav_slot_for_later_sections(web_world):
    app = create_app(web_world.hub())
    app.state.nav.append(("/dashboard", "nav.search", "member.read"))
    browser = TestClient(app, follow_redirects=False)
    sign_in(browser, "li")
    page = browser.get("/review")
    assert 'href="/dashboard"' in page.text and "/static/console.js" in page.text
    script = browser.get("/static/console.js").text
    assert all(f'"{key}"' in script for key in ("j", "k", "m", "r", "d"))


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_page_renders_in_both_languages(web_world, lang):
    browser = console(web_world)
    browser.cookies.set("mh_lang", lang)
    sign_in(browser, "ada")
    other = MESSAGES["en" if lang == "zh" else "zh"]
    for path in (
        "/review",
        f"/review/{web_world.items[0]}",
        "/search?q=ouyang",
        f"/members/{web_world.sh01_member}",
        "/audit",
    ):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert MESSAGES[lang]["nav.review"] in page.text
        assert other["nav.audit"] not in page.text, path
