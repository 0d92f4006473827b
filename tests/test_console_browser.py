"""The console in a real headless Chromium (Debian's ``chromium`` package, driven by Playwright)
against ``memberhub serve``: a steward signs in, reviews a pair with the keyboard, merges it, splits
it again, and an auditor finds both decisions in the audit log. A screenshot of that page is saved
under test-artifacts/ (ignored by git) and its path printed.

The browser is part of the test run: with no /usr/bin/chromium the test fails and says how to
install it (``.ci/services.sh`` does), it never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from test_web_world import PASSWORD, World, served

pytestmark = pytest.mark.browser
pytest_plugins = ("test_web_world",)

CHROMIUM = Path(os.environ.get("MEMBERHUB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_review_merge_split_and_audit_in_chromium(web_world: World):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/services.sh)")
    ARTIFACTS.mkdir(exist_ok=True)
    pair = web_world.items[0]
    with served(web_world) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(locale="en-US").new_page()
            page.set_default_timeout(30_000)  # a merge re-resolves the hub: slow on a busy machine
            expect.set_options(timeout=30_000)
            sign_in(page, base, "li")
            expect(page).to_have_url(f"{base}/review")
            expect(page.locator("#review-list tr.row")).to_have_count(2)

            page.keyboard.press("j")  # the likeliest pair first
            expect(page.locator("tr.row.selected")).to_have_count(1)
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{base}/review/{pair}")
            expect(page.locator("table.evidence")).to_contain_text("different")
            page.screenshot(path=str(ARTIFACTS / "console-review-pair.png"), full_page=True)
            page.keyboard.press("m")
            expect(page.locator("#item-status")).to_have_text("merged")
            survivor = web_world.member_of("pos-a1")
            assert web_world.member_of("pos-a2") == survivor

            page.click("a.member-a")
            expect(page).to_have_url(f"{base}/members/{survivor}")
            expect(page.locator("#source-records tbody tr")).to_have_count(2)
            page.check(f"input[name=leaving][value='{web_world.staged['pos-a2']}']")
            page.fill("#split-form input[name=reason]", "two people after all")
            page.click("#split-button")
            expect(page.locator("#source-records tbody tr")).to_have_count(1)
            assert web_world.member_of("pos-a2") != survivor

            page.click("form[action='/logout'] button")
            sign_in(page, base, "sun")
            page.goto(f"{base}/audit")
            log = page.locator("#audit-log")
            expect(log).to_contain_text("review.merge")
            expect(log).to_contain_text("steward_split")
            expect(log).to_contain_text("steward:li")
            page.click("#lang-switch")
            expect(page.locator("h1")).to_contain_text("审计日志")
            shot = ARTIFACTS / "console-audit-log.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
