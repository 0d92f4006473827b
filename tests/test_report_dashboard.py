"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against the
console app served by uvicorn on 127.0.0.1: an admin signs in, every chart is an SVG the browser draws,
the CSV behind a chart downloads with the session; a clerk is refused. The screenshot goes to
test-artifacts/dashboard.png (ignored by git) and its path is printed."""

from __future__ import annotations

import csv
import io
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright
from test_segments_world import AS_OF, build

from hub import accounts, segments
from hub.analytics import BUILDERS
from hub.db import session_scope, upgrade
from hub.service import Hub
from hub.web.app import create_app
from schemas import HubConfig

pytestmark = pytest.mark.browser
CHROMIUM = Path(os.environ.get("MEMBERHUB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PASSWORD = "correct horse battery"


@pytest.fixture
def served(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    with session_scope(url) as session:
        build(session)
    with session_scope(url) as session:
        segments.recompute(session, segments.load_segments(), default_tier="regular", as_of=AS_OF)
        accounts.add_user(session, "ada", "admin", stores=[], password=PASSWORD)
        accounts.add_user(session, "chen", "clerk", stores=["SH01"], password=PASSWORD)
    app = create_app(Hub(HubConfig(database_url=url)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_dashboard_charts_and_csv_in_chromium(served):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    base = served
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900}).new_page()
            sign_in(page, base, "ada")
            page.goto(f"{base}/dashboard")
            expect(page.locator("h1")).to_contain_text("Dashboard")
            charts = page.locator("#dashboard section.chart img")
            expect(charts).to_have_count(len(BUILDERS))
            page.wait_for_load_state("networkidle")
            widths = charts.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert all(w > 100 for w in widths), widths  # every SVG arrived and the browser drew it
            expect(page.locator("nav")).to_contain_text("Dashboard")

            answer = page.request.get(f"{base}/api/v1/reports/tier_distribution.csv")
            assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
            table = list(csv.reader(io.StringIO(answer.text().lstrip("\ufeff"))))
            assert table[0] == ["tier", "label", "members"] and table[2][1] == "银卡"
            shown = page.locator("#chart-tier_distribution details")
            shown.locator("summary").click()
            expect(shown.locator("tbody tr")).to_have_count(len(table) - 1)

            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 20_000

            page.click("form[action='/logout'] button")
            sign_in(page, base, "chen")
            refused = page.goto(f"{base}/dashboard")
            assert refused is not None and refused.status == 403
            assert page.request.get(f"{base}/api/v1/reports/overlap.csv").status == 403
        finally:
            browser.close()
    anonymous = httpx.get(f"{base}/api/v1/reports/overlap.csv")
    assert anonymous.status_code == 401
