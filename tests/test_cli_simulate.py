"""``memberhub simulate --faults`` and ``memberhub connectors discover`` as a person or script runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from connectors.simulators import TOKENS, start_simulators
from connectors.simulators._server import parse_faults
from hub.discover import describe, first_value

ROOT = Path(__file__).resolve().parents[1]
MEMBERHUB = str(Path(sys.executable).parent / "memberhub")
FAULTS = "shopify:errors=2,shopify:error_status=503,hubspot:rate_limit=1"


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "MEMBERHUB_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    env.pop("MEMBERHUB_DATABASE_URL", None)
    return env


def test_simulate_injects_the_faults_it_is_given(tmp_path):
    process = subprocess.Popen(
        [MEMBERHUB, "simulate", "--systems", "shopify,hubspot", "--members", "20", "--port", "0", "--faults", FAULTS],
        cwd=ROOT,
        env=environment(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(urls) < 2:
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            line = process.stdout.readline()
            found = re.match(r"(\w+)\s+(http://\S+)", line.strip())
            if found:
                urls[found[1]] = found[2]
        shop = f"{urls['shopify']}/admin/api/2025-01/customers.json"
        headers = {"X-Shopify-Access-Token": TOKENS["shopify"]}
        assert [httpx.get(shop, headers=headers).status_code for _ in range(3)] == [503, 503, 200]
        contacts = f"{urls['hubspot']}/crm/v3/objects/contacts"
        auth = {"Authorization": f"Bearer {TOKENS['hubspot']}"}
        first, second = httpx.get(contacts, headers=auth), httpx.get(contacts, headers=auth)
        assert (first.status_code, first.json()["errorType"]) == (429, "RATE_LIMIT")
        assert second.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0  # SIGTERM stops it cleanly


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (
            "shopfy:errors=1",
            "unknown system 'shopfy' in --faults 'shopfy:errors=1'; did you mean 'shopify'? valid: shopify",
        ),
        (
            "square:rate_limt=5",
            "unknown fault 'rate_limt' in --faults 'square:rate_limt=5'; did you mean 'rate_limit'?",
        ),
        ("square:errors", "is not SYSTEM:FAULT=VALUE"),
    ],
)
def test_simulate_explains_a_bad_fault(tmp_path, faults, expected):
    done = subprocess.run(
        [MEMBERHUB, "simulate", "--systems", "shopify,square", "--port", "0", "--faults", faults],
        cwd=ROOT,
        env=environment(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_fault_names_closest_first():
    with pytest.raises(ValueError, match=r"did you mean 'malformed'\? valid: malformed, "):
        parse_faults("odoo:malformd=1", ["odoo"])
    parsed = parse_faults("odoo:expired_token=true, odoo:slow=2, odoo:slow_by=0.5", ["odoo"])
    assert (parsed["odoo"].expired_token, parsed["odoo"].slow, parsed["odoo"].slow_by) == (True, 2, 0.5)


# ------------------------------------------------------------------------------------- discover
def test_describe_flattens_nested_objects_and_lists_of_objects():
    records = [
        {"id": 1, "email": None, "customer": {"id": 7, "tags": ["a"]}, "items": [{"sku": "X1", "qty": 2}]},
        {"id": 2, "email": "a@b.cn", "customer": {"id": 8, "tags": []}, "items": []},
    ]
    seen = {f.path: f for f in describe("orders", "orders", "id", records).fields}
    assert list(seen) == [
        "customer",
        "customer.id",
        "customer.tags",
        "email",
        "id",
        "items",
        "items[].qty",
        "items[].sku",
    ]
    assert (seen["email"].types, seen["email"].example, seen["email"].present) == (["string", "null"], "a@b.cn", 2)
    assert (seen["items[].sku"].types, seen["items[].sku"].example, seen["items[].sku"].present) == (
        ["string"],
        "X1",
        1,
    )
    assert seen["customer.id"].example == 7 and seen["customer"].example is None
    assert first_value(records[0], "items[].qty") == 2


def test_connectors_discover_prints_fields_of_every_stream(tmp_path):
    cluster = start_simulators(("shopify", "hubspot"), members=30, seed=3)
    try:
        configs = cluster.connector_configs()
        config = tmp_path / "memberhub.yaml"
        lines = ["connectors:"]
        for name, settings in configs.items():
            lines += [f"  {name}:", f"    kind: {name}", f"    base_url: {settings.base_url}"]
            lines += [f"    token: {settings.token.get_secret_value()}", "    page_size: 5"]
        config.write_text("\n".join(lines) + "\n")
        env = environment(tmp_path / "home")
        done = subprocess.run(
            [MEMBERHUB, "--config", str(config), "connectors", "discover", "shopify", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        streams = {s["stream"]: s for s in json.loads(done.stdout)}
        assert set(streams) == {"customers", "orders"}
        assert streams["customers"]["sampled"] == 5
        fields = {f["field"]: f for f in streams["orders"]["fields"]}
        assert fields["customer.id"]["type"] == "number"
        assert fields["line_items[].sku"]["type"].startswith("string")
        assert isinstance(fields["line_items[].quantity"]["example"], int)

        human = subprocess.run(
            [MEMBERHUB, "--config", str(config), "connectors", "discover", "hubspot"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert human.returncode == 0, human.stderr
        assert "hubspot / contacts" in human.stdout and "properties.email" in human.stdout
    finally:
        cluster.stop()
