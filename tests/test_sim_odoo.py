"""The Odoo simulator over real JSON-RPC: authentication, domains, ordering and paging, errors inside
HTTP 200, session expiry, access rights, writes, how refunds are recorded, and persistence."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from connectors.simulators import TOKENS
from connectors.simulators._world import generate_world
from connectors.simulators.odoo import DATABASE, LOGIN, UID, OdooSimulator

KEY = TOKENS["odoo"]


@pytest.fixture(scope="module")
def world():
    return generate_world(150, 13, systems=("odoo",))


@pytest.fixture
def sim(world, tmp_path):
    running = OdooSimulator(world, token=KEY, state_dir=tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reader(world):
    """One simulator for the tests that only read."""
    running = OdooSimulator(world, token=KEY)
    running.start()
    yield running
    running.stop()


class Rpc:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url)
        self.calls = 0

    def raw(self, service, method, *args):
        self.calls += 1
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": self.calls,
        }
        response = self.http.post("/jsonrpc", json=payload)
        assert response.status_code == 200
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == self.calls
        return body

    def __call__(self, model, method, *args, key=KEY, **kwargs):
        return self.raw("object", "execute_kw", DATABASE, UID, key, model, method, list(args), kwargs)

    def ok(self, model, method, *args, **kwargs):
        body = self(model, method, *args, **kwargs)
        assert "error" not in body, body
        return body["result"]

    def error(self, model, method, *args, **kwargs):
        body = self(model, method, *args, **kwargs)
        assert "result" not in body, body
        return body["error"]


@pytest.fixture
def rpc(sim):
    client = Rpc(sim.base_url)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def read(reader):
    client = Rpc(reader.base_url)
    yield client
    client.http.close()


def test_authenticate_answers_a_uid_or_false(read):
    assert read.raw("common", "authenticate", DATABASE, LOGIN, KEY, {})["result"] == UID
    assert read.raw("common", "authenticate", DATABASE, LOGIN, "wrong", {})["result"] is False
    assert read.raw("common", "authenticate", DATABASE, "someone", KEY, {})["result"] is False
    error = read.raw("common", "authenticate", "nodb", LOGIN, KEY, {})["error"]
    assert error["data"]["name"] == "psycopg2.OperationalError" and '"nodb" does not exist' in error["data"]["message"]
    assert read.raw("common", "version")["result"]["server_version"] == "17.0"


def test_every_generated_record_is_there_with_odoo_shapes(world, reader, read):
    partners = read.ok("res.partner", "search_read", [], order="id asc")
    assert len(partners) == len(world.members["odoo"]) == len(reader.truth())
    partner = partners[0]
    assert partner["write_date"][10] == " " and len(partner["write_date"]) == 19
    assert all(p["email"] is False or "@" in p["email"] for p in partners)
    assert any(p["mobile"] is False for p in partners) and any(p["phone"] is not False for p in partners)
    sale = read.ok("sale.order", "search_read", [], limit=1)[0]
    assert sale["name"].startswith("S") and sale["currency_id"] == [7, "CNY"]
    assert sale["warehouse_id"][1] == "WH-ONLINE 电商仓" and isinstance(sale["amount_total"], float)
    assert read.ok("sale.order.line", "search_count", [["order_id", "=", sale["id"]]]) == len(sale["order_line"])
    pos = read.ok("pos.order", "search_read", [["is_refunded", "=", False], ["amount_total", ">", 0]], limit=1)[0]
    assert pos["config_id"][1].endswith(" POS") and pos["state"] in ("paid", "done", "invoiced", "cancel")
    orders = world.orders["odoo"]
    online = sum(1 for o in orders if o.store_code == "ONLINE")
    refunds = sum(1 for o in orders if o.store_code != "ONLINE" and o.status == "refunded")
    assert read.ok("sale.order", "search_count", []) == online
    assert read.ok("pos.order", "search_count", []) == len(orders) - online + refunds


def test_a_refunded_till_sale_has_a_refund_order_naming_it(world, read):
    originals = read.ok("pos.order", "search_read", [["is_refunded", "=", True]])
    refunds = read.ok("pos.order", "search_read", [["amount_total", "<", 0]])
    expected = sum(1 for o in world.orders["odoo"] if o.store_code != "ONLINE" and o.status == "refunded")
    assert expected and len(originals) == len(refunds) == expected
    by_original = {r["refunded_order_ids"][0]: r for r in refunds}
    for original in originals:
        refund = by_original[original["id"]]
        assert refund["amount_total"] == -original["amount_total"] and refund["name"] == f"{original['name']} REFUND"
        assert refund["partner_id"] == original["partner_id"] and refund["write_date"] > original["write_date"]
        lines = read.ok("pos.order.line", "search_read", [["id", "in", refund["lines"]]])
        assert all(line["qty"] < 0 and line["refunded_orderline_id"] for line in lines)
    cancelled_online = sum(1 for o in world.orders["odoo"] if o.store_code == "ONLINE" and o.status != "paid")
    assert read.ok("sale.order", "search_count", [["state", "=", "cancel"]]) == cancelled_online


@pytest.mark.parametrize(
    ("domain", "check"),
    [
        ([["city", "=", "上海"]], lambda p: p["city"] == "上海"),
        ([["city", "!=", "上海"]], lambda p: p["city"] != "上海"),
        ([["email", "=", False]], lambda p: p["email"] is False),
        ([["email", "!=", False]], lambda p: p["email"] is not False),
        ([["id", ">", 40]], lambda p: p["id"] > 40),
        ([["id", ">=", 40], ["id", "<", 50]], lambda p: 40 <= p["id"] < 50),
        ([["id", "<=", 12]], lambda p: p["id"] <= 12),
        ([["id", "in", [10, 11, 999]]], lambda p: p["id"] in (10, 11)),
        ([["id", "not in", [10, 11]]], lambda p: p["id"] not in (10, 11)),
        ([["email", "ilike", "QQ.COM"]], lambda p: p["email"] and "qq.com" in p["email"].lower()),
        (["|", ["id", "=", 10], ["id", "=", 12]], lambda p: p["id"] in (10, 12)),
        (["!", ["id", "<", 100]], lambda p: p["id"] >= 100),
        ([["write_date", ">=", "2025-07-01 00:00:00"]], lambda p: p["write_date"] >= "2025-07-01 00:00:00"),
        ([["write_date", "<", "2025-07-01T08:00:00+08:00"]], lambda p: p["write_date"] < "2025-07-01 00:00:00"),
        ([["category_id", "in", [1]]], lambda p: 1 in p["category_id"]),
    ],
)
def test_domains_filter_as_odoo_does(read, domain, check):
    everything = read.ok("res.partner", "search_read", [], fields=["id", "city", "email", "write_date", "category_id"])
    expected = sorted(p["id"] for p in everything if check(p))
    got = read.ok("res.partner", "search", domain, order="id asc")
    assert got == expected and read.ok("res.partner", "search_count", domain) == len(expected)


def test_many2one_terms_compare_ids(read):
    order = read.ok("pos.order", "search_read", [], limit=1, order="id asc")[0]
    partner_id = order["partner_id"][0]
    mine = read.ok("pos.order", "search_read", [["partner_id", "=", partner_id]], fields=["partner_id"])
    assert mine and all(o["partner_id"][0] == partner_id for o in mine)
    by_name = read.ok("pos.order", "search", [["partner_id", "=", order["partner_id"][1]]])
    assert order["id"] in by_name


def test_offset_paging_in_write_date_order_reads_everything_once(read):
    seen, offset = [], 0
    while batch := read.ok(
        "res.partner", "search_read", [], fields=["write_date"], offset=offset, limit=17, order="write_date asc, id asc"
    ):
        seen.extend(batch)
        offset += len(batch)
    keys = [(p["write_date"], p["id"]) for p in seen]
    assert keys == sorted(keys) and len({p["id"] for p in seen}) == len(seen) == read.ok(
        "res.partner", "search_count", []
    )
    assert list(seen[0]) == ["id", "write_date"]
    newest = read.ok("res.partner", "search_read", [], fields=["id"], limit=3, order="write_date desc")
    assert [p["id"] for p in newest] == [p["id"] for p in reversed(seen[-3:])]


@pytest.mark.parametrize(
    ("call", "name", "words"),
    [
        (("res.partner", "search_read", [["nope", "=", 1]]), "builtins.ValueError", "Invalid field"),
        (("res.partner", "search_read", [["id", "~", 1]]), "builtins.ValueError", "Invalid leaf"),
        (("res.partner", "search_read", ["|", ["id", "=", 1]]), "builtins.ValueError", "Invalid domain"),
        (("res.partner", "frobnicate"), "builtins.AttributeError", "does not exist"),
        (("res.partner", "_private"), "odoo.exceptions.AccessError", "Private methods"),
        (("no.such.model", "search", []), "odoo.exceptions.UserError", "doesn't exist"),
        (("sale.order", "write", [1], {"state": "cancel"}), "odoo.exceptions.AccessError", "not allowed to modify"),
        (("res.partner", "create", {"name": "x"}), "odoo.exceptions.AccessError", "not allowed to create"),
        (("loyalty.card", "write", [99999], {"points": 1.0}), "odoo.exceptions.MissingError", "does not exist"),
        (
            ("loyalty.card", "create", {"program_id": 1, "partner_id": 99999}),
            "psycopg2.errors.ForeignKeyViolation",
            "res_partner",
        ),
        (("loyalty.card", "write", [1], {"points": "many"}), "builtins.ValueError", "not a number"),
    ],
)
def test_errors_come_back_inside_http_200(read, call, name, words):
    error = read.error(*call)
    assert error["code"] == 200 and error["message"] == "Odoo Server Error"
    assert error["data"]["name"] == name and words in error["data"]["message"]


def test_wrong_key_and_denied_rights_are_refused(sim, rpc):
    assert rpc.error("res.partner", "search", [], key="wrong")["data"]["name"] == "odoo.exceptions.AccessDenied"
    sim.deny("sale.order")
    error = rpc.error("sale.order", "search_read", [])
    assert error["data"]["name"] == "odoo.exceptions.AccessError" and "(sale.order)" in error["data"]["message"]
    sim.faults.expired_token = True
    assert rpc.error("res.partner", "search", [])["data"]["name"] == "odoo.exceptions.AccessDenied"


def test_expired_sessions_answer_code_100_for_n_calls(sim, rpc):
    sim.expire_sessions = 2
    for _ in range(2):
        error = rpc.error("res.partner", "search_count", [])
        assert error["code"] == 100 and error["message"] == "Odoo Session Expired"
    assert rpc.ok("res.partner", "search_count", []) == len(sim.truth())


def test_bad_json_rpc_is_an_error_not_a_crash(reader):
    response = httpx.post(f"{reader.base_url}/jsonrpc", content=b"{not json")
    assert response.status_code == 200 and response.json()["error"]["data"]["name"] == "werkzeug.exceptions.BadRequest"
    assert httpx.post(f"{reader.base_url}/elsewhere", json={}).status_code == 404


def test_writes_move_write_date_and_create_cards(sim, rpc):
    sim.bump_modified = True  # as Odoo itself does
    partner = 11
    before = rpc.ok("res.partner", "read", [partner], fields=["write_date"])[0]["write_date"]
    assert rpc.ok("res.partner", "write", [partner], {"x_loyalty_tier": "gold", "category_id": [[4, 2]]}) is True
    after = rpc.ok("res.partner", "read", [partner], fields=["write_date", "x_loyalty_tier", "category_id"])[0]
    assert after["write_date"] > before and after["x_loyalty_tier"] == "gold" and 2 in after["category_id"]
    assert rpc.ok("res.partner", "search", [["write_date", ">=", after["write_date"]]]) == [partner]
    card = rpc.ok("loyalty.card", "create", {"program_id": 1, "partner_id": partner, "points": 42.0})
    shown = rpc.ok("loyalty.card", "read", [card])[0]
    assert shown["partner_id"][0] == partner and shown["program_id"] == [1, "会员积分"] and shown["code"]
    assert (
        rpc.ok("loyalty.card", "create", [{"program_id": 1, "points": 1.0}, {"program_id": 2, "points": 2.0}])[1]
        == card + 2
    )
    assert sim.loyalty()[str(partner)] == (42, "gold")
    rpc.ok("loyalty.card", "write", [card], {"points": 1250.0})
    assert sim.loyalty()[str(partner)] == (1250, "gold")


def test_writes_survive_a_restart_with_the_same_state_dir(world, tmp_path):
    sim = OdooSimulator(world, token=KEY, state_dir=tmp_path, bump_modified=True)
    sim.start()
    rpc = Rpc(sim.base_url)
    card = rpc.ok("loyalty.card", "create", {"program_id": 1, "partner_id": 13, "points": 5.0})
    rpc.ok("res.partner", "write", [13], {"x_loyalty_tier": "silver"})
    stamp = rpc.ok("res.partner", "read", [13], fields=["write_date"])[0]["write_date"]
    sim.stop()
    again = OdooSimulator(world, token=KEY, state_dir=tmp_path, bump_modified=True)
    again.start()
    try:
        assert again.loyalty()["13"] == (5, "silver")
        rpc = Rpc(again.base_url)
        assert rpc.ok("res.partner", "read", [13], fields=["write_date"])[0]["write_date"] == stamp
        assert rpc.ok("loyalty.card", "create", {"program_id": 1, "points": 0.0}) == card + 1
        assert rpc.ok("res.partner", "search", [["write_date", ">=", stamp]]) == [13]
    finally:
        again.stop()


def test_generated_data_is_deterministic_and_loyalty_shows_native_cards(world):
    first, second = OdooSimulator(world, token=KEY), OdooSimulator(world, token=KEY)
    assert first.truth() == second.truth()
    assert first.tables["pos.order"].records == second.tables["pos.order"].records
    shown = Counter(points is None for points, _ in first.loyalty().values())
    assert shown[False] > 0 and shown[True] > shown[False]  # some partners already hold a card
    assert first.connector_settings() == {"database": DATABASE, "login": LOGIN}
