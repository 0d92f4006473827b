"""Odoo 17's external API (JSON-RPC on ``/jsonrpc``), simulated: partners, sales and POS orders with
their lines, products, and the loyalty programme's cards.

Kept from the real server (see /work/shared/specs/API_NOTES.md):

- ``common.authenticate(db, login, api_key, {})`` answers a uid, or ``false`` for bad credentials;
  ``object.execute_kw(db, uid, api_key, model, method, args, kwargs)`` runs ``search_read``,
  ``search``, ``search_count``, ``read``, ``write``, ``create`` and ``fields_get``;
- domains in prefix notation (``&``, ``|``, ``!``; implicit AND) with ``=``, ``!=``, ``>``, ``>=``,
  ``<``, ``<=``, ``in``, ``not in``, ``like``, ``ilike``, ``=like``, ``=ilike``; many2one terms compare
  ids (or names, given text); ``active_test``: archived partners are left out unless asked for;
- ``order`` such as ``"write_date asc, id asc"``; ``limit``/``offset`` paging only;
- datetimes are naive UTC strings ``YYYY-MM-DD HH:MM:SS``; an empty field is ``false``; many2one
  values are ``[id, "Name"]``; a write moves the record's ``write_date`` to now — for partners only
  with ``bump_modified=True`` (what Odoo really does: the hub's tier write then comes back on the
  next read), off by default because the demo promises that a second run finds nothing new;
- errors come back as HTTP 200 with ``{"error": {"code": 200, "message": "Odoo Server Error",
  "data": {"name": "odoo.exceptions.AccessError", "message": ...}}}``; ``code: 100`` is "Odoo Session
  Expired" (``expire_sessions = N`` makes the next N ``execute_kw`` calls answer it);
- the integration user may read everything and may only write partners and loyalty cards and create
  loyalty cards; ``deny(model, operation)`` takes a right away to provoke an AccessError.

How refunds look, as Odoo records them:

- At the till (``pos.order``) a refund is its own order, as the POS "Refund" button makes it: name
  ``"<original> REFUND"``, negative ``amount_total``/``amount_paid`` and line quantities, lines linked
  by ``refunded_orderline_id``, and ``refunded_order_ids`` naming the original. The original stays
  ``done`` and shows ``is_refunded: true`` / ``refund_orders_count`` (computed fields: its
  ``write_date`` does not move, so the connector re-reads the originals a refund names).
- Online (``sale.order``) a fully refunded order is cancelled (state ``cancel``), as a shop cancels an
  order whose payment it returned.

The mappings turn the refunded original into status ``refunded`` with ``refunded == total`` and the
refund receipt into ``cancelled`` (it is not a sale and carries no points), so the hub earns nothing
net for either. ``loyalty()`` reads the cards of the chain's loyalty programme (id 1); a second
programme (gift cards) exists so a connector has to pick the right one.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.simulators._server import Request, Response, Simulator
from connectors.simulators._world import PRODUCTS, STORE_BY_CODE, World

DATABASE = "memberhub"
LOGIN = "memberhub-api@example.com"
UID = 2
CNY = [7, "CNY"]
LOYALTY_PROGRAM = 1
ONLINE_WAREHOUSE = 1
SERVER_VERSION = "17.0"

# field types: (type, relation)
M2O, O2M, M2M = "many2one", "one2many", "many2many"
_STAMPS = {"create_date": ("datetime", None), "write_date": ("datetime", None)}
MODELS: dict[str, dict[str, tuple[str, str | None]]] = {
    "res.partner": {
        "id": ("integer", None),
        "name": ("char", None),
        "display_name": ("char", None),
        "email": ("char", None),
        "phone": ("char", None),
        "mobile": ("char", None),
        "ref": ("char", None),
        "city": ("char", None),
        "lang": ("selection", None),
        "tz": ("selection", None),
        "is_company": ("boolean", None),
        "company_type": ("selection", None),
        "customer_rank": ("integer", None),
        "active": ("boolean", None),
        "category_id": (M2M, "res.partner.category"),
        "x_loyalty_tier": ("char", None),
        **_STAMPS,
    },
    "res.partner.category": {"id": ("integer", None), "name": ("char", None), **_STAMPS},
    "product.product": {
        "id": ("integer", None),
        "name": ("char", None),
        "display_name": ("char", None),
        "default_code": ("char", None),
        "list_price": ("float", None),
        "active": ("boolean", None),
        **_STAMPS,
    },
    "stock.warehouse": {"id": ("integer", None), "name": ("char", None), "code": ("char", None), **_STAMPS},
    "pos.config": {"id": ("integer", None), "name": ("char", None), **_STAMPS},
    "pos.session": {"id": ("integer", None), "name": ("char", None), "config_id": (M2O, "pos.config"), **_STAMPS},
    "sale.order": {
        "id": ("integer", None),
        "name": ("char", None),
        "display_name": ("char", None),
        "partner_id": (M2O, "res.partner"),
        "date_order": ("datetime", None),
        "state": ("selection", None),
        "amount_untaxed": ("float", None),
        "amount_tax": ("float", None),
        "amount_total": ("float", None),
        "currency_id": (M2O, "res.currency"),
        "warehouse_id": (M2O, "stock.warehouse"),
        "order_line": (O2M, "sale.order.line"),
        "invoice_status": ("selection", None),
        "client_order_ref": ("char", None),
        "origin": ("char", None),
        **_STAMPS,
    },
    "sale.order.line": {
        "id": ("integer", None),
        "order_id": (M2O, "sale.order"),
        "product_id": (M2O, "product.product"),
        "name": ("text", None),
        "product_uom_qty": ("float", None),
        "qty_delivered": ("float", None),
        "price_unit": ("float", None),
        "price_subtotal": ("float", None),
        "price_total": ("float", None),
        "currency_id": (M2O, "res.currency"),
        "display_type": ("selection", None),
        **_STAMPS,
    },
    "pos.order": {
        "id": ("integer", None),
        "name": ("char", None),
        "display_name": ("char", None),
        "pos_reference": ("char", None),
        "partner_id": (M2O, "res.partner"),
        "date_order": ("datetime", None),
        "state": ("selection", None),
        "amount_total": ("float", None),
        "amount_paid": ("float", None),
        "amount_tax": ("float", None),
        "amount_return": ("float", None),
        "currency_id": (M2O, "res.currency"),
        "config_id": (M2O, "pos.config"),
        "session_id": (M2O, "pos.session"),
        "lines": (O2M, "pos.order.line"),
        "is_refunded": ("boolean", None),
        "refund_orders_count": ("integer", None),
        "refunded_order_ids": (M2M, "pos.order"),
        "refunded_orders_count": ("integer", None),
        **_STAMPS,
    },
    "pos.order.line": {
        "id": ("integer", None),
        "name": ("char", None),
        "order_id": (M2O, "pos.order"),
        "product_id": (M2O, "product.product"),
        "full_product_name": ("char", None),
        "qty": ("float", None),
        "price_unit": ("float", None),
        "price_subtotal": ("float", None),
        "price_subtotal_incl": ("float", None),
        "refunded_orderline_id": (M2O, "pos.order.line"),
        "refund_orderline_ids": (O2M, "pos.order.line"),
        "refunded_qty": ("float", None),
        "currency_id": (M2O, "res.currency"),
        **_STAMPS,
    },
    "loyalty.program": {
        "id": ("integer", None),
        "name": ("char", None),
        "program_type": ("selection", None),
        "active": ("boolean", None),
        "currency_id": (M2O, "res.currency"),
        **_STAMPS,
    },
    "loyalty.card": {
        "id": ("integer", None),
        "code": ("char", None),
        "display_name": ("char", None),
        "program_id": (M2O, "loyalty.program"),
        "partner_id": (M2O, "res.partner"),
        "points": ("float", None),
        "expiration_date": ("date", None),
        **_STAMPS,
    },
}
_LABELS = {
    "res.partner": "Contact",
    "sale.order": "Sales Order",
    "pos.order": "Point of Sale Orders",
    "loyalty.card": "Loyalty Coupon",
    "loyalty.program": "Loyalty Program",
}
_WRITABLE = {"res.partner": {"write"}, "loyalty.card": {"write", "create"}, "res.partner.category": {"create"}}
_READ_ONLY_FIELDS = {"id", "create_date", "write_date", "display_name"}
_DEFAULT_ORDER = {"res.partner": "name asc, id desc", "sale.order": "date_order desc, id desc", "pos.order": "id desc"}
_SIGNATURES = {
    "search_read": ("domain", "fields", "offset", "limit", "order"),
    "search": ("domain", "offset", "limit", "order"),
    "search_count": ("domain", "limit"),
    "read": ("ids", "fields"),
    "write": ("ids", "vals"),
    "create": ("vals_list",),
    "fields_get": ("allfields", "attributes"),
}
_OPERATORS = {"=", "!=", "<>", ">", ">=", "<", "<=", "in", "not in", "like", "ilike", "=like", "=ilike", "not ilike"}
_STAMP = "%Y-%m-%d %H:%M:%S"


def odoo_time(moment: datetime) -> str:
    """An aware datetime as Odoo stores it: naive UTC, to the second."""
    return moment.astimezone(UTC).strftime(_STAMP)


def _now() -> str:
    return odoo_time(datetime.now(UTC))


class OdooError(Exception):
    """An exception the Odoo server would report inside an HTTP 200 body."""

    def __init__(self, name: str, message: str, *, code: int = 200, title: str = "Odoo Server Error") -> None:
        super().__init__(message)
        self.name, self.message, self.code, self.title = name, message, code, title

    def body(self, request_id: Any) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": self.code,
                "message": self.title,
                "data": {
                    "name": self.name,
                    "debug": f"Traceback (most recent call last):\n  ...\n{self.name}: {self.message}\n",
                    "message": self.message,
                    "arguments": [self.message],
                    "context": {},
                },
            },
        }


def _value_error(message: str) -> OdooError:
    return OdooError("builtins.ValueError", message)


# ------------------------------------------------------------------------------------- models
class _Table:
    """One model's records with the indexes paging needs: ids in order, (write_date, id) in order,
    and many2one value -> ids. Records are replaced, never changed in place, so a response being
    written out never sees a half-made change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields = MODELS[name]
        self.records: dict[int, dict[str, Any]] = {}
        self.ids: list[int] = []
        self.by_write: list[tuple[str, int]] = []
        self.refs: dict[str, dict[int, set[int]]] = {f: {} for f, (t, _) in self.fields.items() if t == M2O}
        self.inactive = 0
        self.next_id = 1
        self.bulk = False  # while generating: indexes are built once at the end by reindex()

    def reindex(self) -> None:
        self.bulk = False
        self.ids = sorted(self.records)
        self.by_write = sorted((r["write_date"], rid) for rid, r in self.records.items())
        self.refs = {f: {} for f in self.refs}
        for rid, record in self.records.items():
            for field, index in self.refs.items():
                if record.get(field):
                    index.setdefault(record[field][0], set()).add(rid)
        self.inactive = sum(1 for r in self.records.values() if r.get("active") is False)

    def put(self, record: dict[str, Any]) -> None:
        rid = record["id"]
        if self.bulk:
            self.records[rid] = record
            self.next_id = max(self.next_id, rid + 1)
            return
        old = self.records.get(rid)
        if old is None:
            bisect.insort(self.ids, rid)
        else:
            at = bisect.bisect_left(self.by_write, (old["write_date"], rid))
            if at < len(self.by_write) and self.by_write[at] == (old["write_date"], rid):
                del self.by_write[at]
            for field, index in self.refs.items():
                if old.get(field):
                    index.get(old[field][0], set()).discard(rid)
            self.inactive -= old.get("active") is False
        self.records[rid] = record
        bisect.insort(self.by_write, (record["write_date"], rid))
        for field, index in self.refs.items():
            if record.get(field):
                index.setdefault(record[field][0], set()).add(rid)
        self.inactive += record.get("active") is False
        self.next_id = max(self.next_id, rid + 1)


@dataclass(frozen=True)
class _Term:
    field: str
    op: str
    value: Any
    members: frozenset = frozenset()  # for in / not in: the values, as a set (booleans apart)


Node = tuple  # ("term", _Term) | ("and", a, b) | ("or", a, b) | ("not", a) | ("true",)


class OdooSimulator(Simulator):
    system = "odoo"

    def __init__(
        self,
        world: World,
        *,
        token: str,
        state_dir: Any = None,
        database: str = DATABASE,
        login: str = LOGIN,
        bump_modified: bool = False,
    ) -> None:
        super().__init__(token=token, state_dir=state_dir)
        self.database = database
        self.login = login
        self.bump_modified = bump_modified
        self.expire_sessions = 0
        self.denied: dict[str, set[str]] = {}
        self.tables = {name: _Table(name) for name in MODELS}
        self._person: dict[int, int] = {}
        self._dirty: set[tuple[str, int]] = set()
        for table in self.tables.values():
            table.bulk = True
        self._build(world)
        for table in self.tables.values():
            table.reindex()
        self.route("POST", r"/jsonrpc", self._jsonrpc)

    def deny(self, model: str, operation: str = "read") -> None:
        """Take a right away from the integration user (to provoke an AccessError)."""
        self.denied.setdefault(model, set()).add(operation)

    # ------------------------------------------------------------------------- generated data
    def _build(self, world: World) -> None:
        t = self.tables
        epoch = odoo_time(datetime(2024, 1, 1, tzinfo=UTC))

        def put(model: str, record: dict[str, Any], stamp: str = epoch) -> dict[str, Any]:
            record.setdefault("create_date", stamp)
            record.setdefault("write_date", stamp)
            t[model].put(record)
            return record

        put("res.partner.category", {"id": 1, "name": "会员"})
        put("res.partner.category", {"id": 2, "name": "VIP"})
        put("stock.warehouse", {"id": ONLINE_WAREHOUSE, "name": STORE_BY_CODE["ONLINE"].odoo_name, "code": "WHONL"})
        configs = {}
        for number, store in enumerate(s for s in STORE_BY_CODE.values() if s.code != "ONLINE"):
            configs[store.code] = put("pos.config", {"id": number + 1, "name": store.odoo_name})
        products = {}
        for number, (sku, title, price) in enumerate(PRODUCTS):
            products[sku] = put(
                "product.product",
                {
                    "id": 20 + number,
                    "name": title,
                    "display_name": f"[{sku}] {title}",
                    "default_code": sku,
                    "list_price": float(price),
                    "active": True,
                },
            )
        put(
            "loyalty.program",
            {"id": LOYALTY_PROGRAM, "name": "会员积分", "program_type": "loyalty", "active": True, "currency_id": CNY},
        )
        put(
            "loyalty.program",
            {"id": 2, "name": "礼品卡", "program_type": "gift_card", "active": True, "currency_id": CNY},
        )

        partner_of: dict[int, dict[str, Any]] = {}
        for index, copy in enumerate(world.members.get(self.system, [])):
            parts = [p for p in (copy.family_name, copy.given_name) if p]
            chinese = any("\u4e00" <= ch <= "\u9fff" for ch in "".join(parts))
            name = "".join(parts) if chinese else " ".join(reversed(parts))
            phone = copy.phone or False
            partner = put(
                "res.partner",
                {
                    "id": 10 + index,
                    "name": name,
                    "display_name": name,
                    "email": copy.email or False,
                    "phone": phone if index % 5 == 4 else False,
                    "mobile": phone if index % 5 != 4 else False,
                    "ref": False,
                    "city": copy.city or False,
                    "lang": "zh_CN" if chinese else "en_US",
                    "tz": "Asia/Shanghai",
                    "is_company": False,
                    "company_type": "person",
                    "customer_rank": 1,
                    "active": True,
                    "category_id": [1] if index % 3 == 0 else [],
                    "x_loyalty_tier": False,
                    "create_date": odoo_time(copy.created_at),
                    "write_date": odoo_time(copy.updated_at),
                },
            )
            self._person[partner["id"]] = copy.person_id
            partner_of[copy.person_id] = partner
            if index % 6 == 0:  # points the POS earned natively before the hub existed
                self._card(partner, LOYALTY_PROGRAM, float(10 * (index % 7)), partner["create_date"])
            if index % 11 == 0:
                self._card(partner, 2, 200.0, partner["create_date"])

        events: list[tuple[datetime, int, str, Any]] = []
        ordered = sorted(world.orders.get(self.system, []), key=lambda o: (o.ordered_at, o.person_id))
        for number, order in enumerate(ordered):
            events.append((order.ordered_at, number, "order", order))
            if order.status == "refunded" and order.store_code != "ONLINE":
                when = max(order.updated_at, order.ordered_at + timedelta(minutes=1))
                events.append((when, number, "refund", order))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        originals: dict[int, dict[str, Any]] = {}
        sessions: dict[tuple[str, str], dict[str, Any]] = {}
        sequence: dict[str, int] = {}
        for when, number, kind, order in events:
            partner = partner_of[order.person_id]
            m2o_partner = [partner["id"], partner["name"]]
            lines = [(products[sku], qty, float(price)) for sku, _, qty, price in order.lines]
            if order.store_code == "ONLINE":
                self._sale_order(order, m2o_partner, lines)
                continue
            config = configs[order.store_code]
            day = odoo_time(when)[:10]
            session = sessions.get((config["name"], day))
            if session is None:
                sid = len(sessions) + 1
                session = put(
                    "pos.session",
                    {"id": sid, "name": f"POS/{sid:05d}", "config_id": [config["id"], config["name"]]},
                    odoo_time(when),
                )
                sessions[(config["name"], day)] = session
            sequence[config["name"]] = sequence.get(config["name"], 0) + 1
            if kind == "order":
                originals[number] = self._pos_order(order, when, config, session, sequence, m2o_partner, lines)
            else:
                self._pos_refund(originals[number], when, session, sequence[config["name"]])

    def _card(self, partner: dict[str, Any], program: int, points: float, stamp: str) -> dict[str, Any]:
        table = self.tables["loyalty.card"]
        cid = table.next_id
        code = f"044{(cid * 2654435761) % 16**8:08x}"
        program_name = self.tables["loyalty.program"].records[program]["name"]
        card = {
            "id": cid,
            "code": f"{code[:7]}-{code[7:]}",
            "display_name": f"{program_name}: {code[:7]}-{code[7:]}",
            "program_id": [program, program_name],
            "partner_id": [partner["id"], partner["name"]] if partner else False,
            "points": points,
            "expiration_date": False,
            "create_date": stamp,
            "write_date": stamp,
        }
        table.put(card)
        return card

    def _sale_order(self, order: Any, partner: list, lines: list[tuple[dict, int, float]]) -> None:
        table, line_table = self.tables["sale.order"], self.tables["sale.order.line"]
        oid = table.next_id
        name = f"S{oid:05d}"
        created, written = odoo_time(order.ordered_at), odoo_time(order.updated_at)
        line_ids = []
        for product, qty, price in lines:
            lid = line_table.next_id
            line_ids.append(lid)
            line_table.put(
                {
                    "id": lid,
                    "order_id": [oid, name],
                    "product_id": [product["id"], product["display_name"]],
                    "name": product["display_name"],
                    "product_uom_qty": float(qty),
                    "qty_delivered": float(qty) if order.status == "paid" else 0.0,
                    "price_unit": price,
                    "price_subtotal": round(qty * price, 2),
                    "price_total": round(qty * price, 2),
                    "currency_id": CNY,
                    "display_type": False,
                    "create_date": created,
                    "write_date": created,
                }
            )
        total = float(order.total)
        table.put(
            {
                "id": oid,
                "name": name,
                "display_name": name,
                "partner_id": partner,
                "date_order": created,
                "state": "sale" if order.status == "paid" else "cancel",
                "amount_untaxed": total,
                "amount_tax": 0.0,
                "amount_total": total,
                "currency_id": CNY,
                "warehouse_id": [ONLINE_WAREHOUSE, STORE_BY_CODE["ONLINE"].odoo_name],
                "order_line": line_ids,
                "invoice_status": "invoiced" if order.status == "paid" else "no",
                "client_order_ref": False,
                "origin": False,
                "create_date": created,
                "write_date": written,
            }
        )

    def _pos_order(
        self,
        order: Any,
        when: datetime,
        config: dict,
        session: dict,
        sequence: dict[str, int],
        partner: list,
        lines: list[tuple[dict, int, float]],
    ) -> dict[str, Any]:
        table, line_table = self.tables["pos.order"], self.tables["pos.order.line"]
        oid, seq = table.next_id, sequence[config["name"]]
        name = f"{config['name']}/{seq:04d}"
        created = odoo_time(when)
        written = created if order.status == "refunded" else odoo_time(order.updated_at)
        line_ids = []
        for number, (product, qty, price) in enumerate(lines, start=1):
            lid = line_table.next_id
            line_ids.append(lid)
            line_table.put(
                {
                    "id": lid,
                    "name": f"{name}-{number}",
                    "order_id": [oid, name],
                    "product_id": [product["id"], product["display_name"]],
                    "full_product_name": product["name"],
                    "qty": float(qty),
                    "price_unit": price,
                    "price_subtotal": round(qty * price, 2),
                    "price_subtotal_incl": round(qty * price, 2),
                    "refunded_orderline_id": False,
                    "refund_orderline_ids": [],
                    "refunded_qty": 0.0,
                    "currency_id": CNY,
                    "create_date": created,
                    "write_date": created,
                }
            )
        total = float(order.total)
        state = {"paid": ("paid", "done", "invoiced")[oid % 3], "cancelled": "cancel", "refunded": "done"}
        record = {
            "id": oid,
            "name": name,
            "display_name": name,
            "pos_reference": f"Order {session['id']:05d}-001-{seq:04d}",
            "partner_id": partner,
            "date_order": created,
            "state": state[order.status],
            "amount_total": total,
            "amount_paid": 0.0 if order.status == "cancelled" else total,
            "amount_tax": 0.0,
            "amount_return": 0.0,
            "currency_id": CNY,
            "config_id": [config["id"], config["name"]],
            "session_id": [session["id"], session["name"]],
            "lines": line_ids,
            "is_refunded": False,
            "refund_orders_count": 0,
            "refunded_order_ids": [],
            "refunded_orders_count": 0,
            "create_date": created,
            "write_date": written,
        }
        table.put(record)
        return record

    def _pos_refund(self, original: dict[str, Any], when: datetime, session: dict, seq: int) -> None:
        """Odoo's POS refund: a new order with negated quantities, linked line by line to the original.
        The original's refund fields are computed, so its write_date stays where it was."""
        table, line_table = self.tables["pos.order"], self.tables["pos.order.line"]
        oid = table.next_id
        name = f"{original['name']} REFUND"
        created = odoo_time(when)
        line_ids = []
        for number, original_line_id in enumerate(original["lines"], start=1):
            source = line_table.records[original_line_id]
            lid = line_table.next_id
            line_ids.append(lid)
            line_table.put(
                {
                    **source,
                    "id": lid,
                    "name": f"{name}-{number}",
                    "order_id": [oid, name],
                    "qty": -source["qty"],
                    "price_subtotal": -source["price_subtotal"],
                    "price_subtotal_incl": -source["price_subtotal_incl"],
                    "refunded_orderline_id": [source["id"], source["name"]],
                    "create_date": created,
                    "write_date": created,
                }
            )
            line_table.put({**source, "refund_orderline_ids": [lid], "refunded_qty": source["qty"]})
        table.put(
            {
                **original,
                "id": oid,
                "name": name,
                "display_name": name,
                "pos_reference": f"Order {session['id']:05d}-001-{seq:04d}",
                "date_order": created,
                "state": "paid",
                "amount_total": -original["amount_total"],
                "amount_paid": -original["amount_paid"],
                "session_id": [session["id"], session["name"]],
                "lines": line_ids,
                "refunded_order_ids": [original["id"]],
                "refunded_orders_count": 1,
                "create_date": created,
                "write_date": created,
            }
        )
        table.put({**original, "is_refunded": True, "refund_orders_count": 1})

    # ------------------------------------------------------------------------- base hooks
    def authorised(self, request: Request) -> bool:
        return True  # credentials travel inside each call; see _execute_kw

    def unauthorised(self, request: Request) -> Response:
        error = OdooError("odoo.exceptions.AccessDenied", "Access Denied")
        return Response(200, error.body(_request_id(request)))

    def rate_limited(self, request: Request) -> Response:
        # Odoo itself never limits; a reverse proxy in front of it may.
        return Response(429, b"<html><body><h1>429 Too Many Requests</h1></body></html>", {"Content-Type": "text/html"})

    def server_error(self, request: Request, status: int) -> Response:
        text = f"<html><body><h1>{status} Internal Server Error</h1></body></html>".encode()
        return Response(status, text, {"Content-Type": "text/html"})

    def not_found(self, request: Request) -> Response:
        return Response(404, b"<html><body><h1>404 Not Found</h1></body></html>", {"Content-Type": "text/html"})

    def connector_settings(self) -> dict[str, Any]:
        return {"database": self.database, "login": self.login}

    # ------------------------------------------------------------------------- what tests ask
    def truth(self) -> dict[str, str | int]:
        return {str(pid): person for pid, person in self._person.items()}

    def loyalty(self) -> dict[str, tuple[int | None, str | None]]:
        with self.lock:
            cards = self.tables["loyalty.card"]
            partners = self.tables["res.partner"].records
            shown: dict[str, tuple[int | None, str | None]] = {}
            for pid in self._person:
                mine = sorted(cid for cid in cards.refs["partner_id"].get(pid, ()))
                points = next(
                    (cards.records[c]["points"] for c in mine if cards.records[c]["program_id"][0] == LOYALTY_PROGRAM),
                    None,
                )
                tier = partners[pid].get("x_loyalty_tier") or None
                shown[str(pid)] = (int(points) if points is not None else None, tier)
            return shown

    def record(self, model: str, rid: int) -> dict[str, Any]:
        """One record as the server holds it (for tests)."""
        with self.lock:
            return dict(self.tables[model].records[rid])

    def touch(self, model: str, rid: int, **values: Any) -> None:
        """Change a record as a user in Odoo would (for tests): its write_date moves to now."""
        with self.lock:
            table = self.tables[model]
            table.put({**table.records[rid], **values, "write_date": _now()})
            self._dirty.add((model, rid))

    def state(self) -> dict[str, Any]:
        models: dict[str, dict[str, Any]] = {}
        for model, rid in sorted(self._dirty):
            models.setdefault(model, {})[str(rid)] = self.tables[model].records[rid]
        return {"models": models}

    def load_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            for model, records in state.get("models", {}).items():
                for key, record in records.items():
                    self.tables[model].put(dict(record))
                    self._dirty.add((model, int(key)))

    # ------------------------------------------------------------------------- JSON-RPC
    def _jsonrpc(self, request: Request, match: re.Match[str]) -> Response:
        request_id = _request_id(request)
        try:
            try:
                body = request.json()
            except ValueError as exc:
                raise OdooError("werkzeug.exceptions.BadRequest", f"Invalid JSON data: {exc}") from exc
            params = body.get("params") if isinstance(body, dict) else None
            if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or not isinstance(params, dict):
                raise OdooError("werkzeug.exceptions.BadRequest", "Invalid JSON-RPC request: expected jsonrpc 2.0")
            args = params.get("args") or []
            if not isinstance(args, list):
                raise _value_error("args must be a list")
            result = self._service(params.get("service"), params.get("method"), args)
        except OdooError as exc:
            return Response(200, exc.body(request_id))
        return Response(200, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def _service(self, service: Any, method: Any, args: list[Any]) -> Any:
        if service == "common":
            if method == "version":
                return {
                    "server_version": SERVER_VERSION,
                    "server_version_info": [17, 0, 0, "final", 0, ""],
                    "server_serie": SERVER_VERSION,
                    "protocol_version": 1,
                }
            if method in ("authenticate", "login"):
                db, login, password = (list(args) + [None] * 3)[:3]
                self._check_database(db)
                return UID if login == self.login and password == self.token else False
            raise OdooError("builtins.AttributeError", f"'common' service has no method {method!r}")
        if service == "db" and method == "list":
            return [self.database]
        if service == "object" and method in ("execute_kw", "execute"):
            if len(args) < 5:
                raise OdooError("builtins.TypeError", f"{method}() needs db, uid, password, model and method")
            db, uid, password, model, name = args[:5]
            if method == "execute_kw":
                call_args = args[5] if len(args) > 5 else []
                call_kwargs = (args[6] if len(args) > 6 else None) or {}
            else:
                call_args, call_kwargs = args[5:], {}
            return self._execute_kw(db, uid, password, model, name, call_args, call_kwargs)
        raise OdooError("builtins.KeyError", f"'{service}'.{method} is not a known service method")

    def _check_database(self, db: Any) -> None:
        if db != self.database:
            raise OdooError(
                "psycopg2.OperationalError",
                f'connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
                f'FATAL:  database "{db}" does not exist',
            )

    def _execute_kw(self, db: Any, uid: Any, password: Any, model: Any, method: Any, args: list, kwargs: dict) -> Any:
        if self.expire_sessions > 0:
            self.expire_sessions -= 1
            raise OdooError(
                "odoo.http.SessionExpiredException", "Session expired", code=100, title="Odoo Session Expired"
            )
        self._check_database(db)
        if uid != UID or password != self.token:
            raise OdooError("odoo.exceptions.AccessDenied", "Access Denied")
        if model not in self.tables:
            raise OdooError("odoo.exceptions.UserError", f"Object {model} doesn't exist")
        if not isinstance(method, str) or method.startswith("_"):
            raise OdooError(
                "odoo.exceptions.AccessError", f"Private methods (such as '{method}') cannot be called remotely."
            )
        if method not in _SIGNATURES:
            raise OdooError("builtins.AttributeError", f"The method '{method}' does not exist on the model '{model}'")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise OdooError("builtins.TypeError", "execute_kw takes args as a list and kwargs as an object")
        names = _SIGNATURES[method]
        if len(args) > len(names):
            raise OdooError("builtins.TypeError", f"{method}() takes at most {len(names)} positional arguments")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key == "context":
                continue
            if key not in names:
                raise OdooError("builtins.TypeError", f"{method}() got an unexpected keyword argument '{key}'")
            if key in bound:
                raise OdooError("builtins.TypeError", f"{method}() got multiple values for argument '{key}'")
            bound[key] = value
        operation = {"write": "write", "create": "create"}.get(method, "read")
        self._check_access(model, operation)
        handler: Callable[..., Any] = getattr(self, f"_m_{method}")
        result = handler(self.tables[model], **bound)
        return result

    def _check_access(self, model: str, operation: str) -> None:
        allowed = operation == "read" or operation in _WRITABLE.get(model, set())
        if allowed and operation not in self.denied.get(model, set()):
            return
        verb = {"read": "access", "write": "modify", "create": "create"}[operation]
        label = _LABELS.get(model, model)
        raise OdooError(
            "odoo.exceptions.AccessError",
            f"You are not allowed to {verb} '{label}' ({model}) records.\n\nThis operation is allowed for the "
            f"following groups:\n\t- Administration/Settings\n\nContact your administrator to request access if "
            f"necessary.",
        )

    # ------------------------------------------------------------------------- ORM methods
    def _m_search_read(
        self,
        table: _Table,
        domain: Any = None,
        fields: Any = None,
        offset: Any = 0,
        limit: Any = None,
        order: Any = None,
    ) -> list[dict[str, Any]]:
        ids = self._search(table, domain, offset, limit, order)
        return [self._project(table, table.records[rid], fields) for rid in ids]

    def _m_search(
        self, table: _Table, domain: Any = None, offset: Any = 0, limit: Any = None, order: Any = None
    ) -> list[int]:
        return self._search(table, domain, offset, limit, order)

    def _m_search_count(self, table: _Table, domain: Any = None, limit: Any = None) -> int:
        return len(self._search(table, domain, 0, limit, "id asc"))

    def _m_read(self, table: _Table, ids: Any = None, fields: Any = None) -> list[dict[str, Any]]:
        wanted = _ids(ids)
        missing = [rid for rid in wanted if rid not in table.records]
        if missing:
            raise _missing(table.name, missing)
        return [self._project(table, table.records[rid], fields) for rid in wanted]

    def _m_fields_get(self, table: _Table, allfields: Any = None, attributes: Any = None) -> dict[str, Any]:
        names = allfields or list(table.fields)
        out = {}
        for name in names:
            if name in table.fields:
                kind, relation = table.fields[name]
                info = {"type": kind, "string": name.replace("_", " ").title(), "readonly": name in _READ_ONLY_FIELDS}
                if relation:
                    info["relation"] = relation
                out[name] = {k: v for k, v in info.items() if not attributes or k in attributes}
        return out

    def _m_write(self, table: _Table, ids: Any = None, vals: Any = None) -> bool:
        wanted = _ids(ids)
        if not isinstance(vals, dict):
            raise _value_error("write() takes a dictionary of values")
        missing = [rid for rid in wanted if rid not in table.records]
        if missing:
            raise _missing(table.name, missing)
        changes = self._convert(table, vals)
        stamp = _now()
        for rid in wanted:
            record = {**table.records[rid], **self._apply(table, table.records[rid], changes)}
            if self.bump_modified or table.name != "res.partner":
                record["write_date"] = stamp
            table.put(record)
            self._dirty.add((table.name, rid))
        return True

    def _m_create(self, table: _Table, vals_list: Any = None) -> Any:
        single = isinstance(vals_list, dict)
        items = [vals_list] if single else vals_list
        if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
            raise _value_error("create() takes a dictionary of values or a list of them")
        converted = [self._convert(table, vals) for vals in items]  # all or nothing, as in one transaction
        new_ids = []
        for changes in converted:
            if table.name == "loyalty.card":
                program = changes.get("program_id")
                if not program:
                    raise OdooError(
                        "psycopg2.errors.NotNullViolation",
                        'null value in column "program_id" of relation "loyalty_card" violates not-null constraint',
                    )
                partner_ref = changes.get("partner_id")
                partner = self.tables["res.partner"].records[partner_ref[0]] if partner_ref else None
                card = self._card(partner, program[0], float(changes.get("points", 0.0)), _now())
                card = {**card, **{k: v for k, v in changes.items() if k not in ("program_id", "partner_id")}}
                self.tables["loyalty.card"].put(card)
                new_ids.append(card["id"])
                self._dirty.add(("loyalty.card", card["id"]))
            elif table.name == "res.partner.category":  # a contact tag: a name, unique as Odoo's constraint keeps it
                name = changes.get("name")
                if not name:
                    raise _value_error("The following required fields are missing: Tag Name")
                if any(r.get("name") == name for r in table.records.values()):
                    raise OdooError(
                        "psycopg2.errors.UniqueViolation",
                        'duplicate key value violates unique constraint "res_partner_category_name_uniq"\n'
                        f"DETAIL:  Key (name)=({name}) already exists.",
                    )
                stamp = _now()
                tag = {"id": table.next_id, "name": name, "create_date": stamp, "write_date": stamp}
                table.put(tag)
                new_ids.append(tag["id"])
                self._dirty.add((table.name, tag["id"]))
        return new_ids[0] if single else new_ids

    # ------------------------------------------------------------------------- values
    def _convert(self, table: _Table, vals: dict[str, Any]) -> dict[str, Any]:
        """Check written values against the field types; many2one ids become [id, name]."""
        out: dict[str, Any] = {}
        for name, value in vals.items():
            if name not in table.fields:
                raise _value_error(f"Invalid field '{name}' on model '{table.name}'")
            if name in _READ_ONLY_FIELDS:
                raise _value_error(f"Field '{name}' on model '{table.name}' cannot be written")
            kind, relation = table.fields[name]
            if kind in ("char", "text", "selection"):
                if value is not False and not isinstance(value, str):
                    raise _value_error(f"Wrong value for {table.name}.{name}: {value!r}")
            elif kind in ("float", "integer"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _value_error(f"Wrong value for {table.name}.{name}: {value!r} is not a number")
                value = float(value) if kind == "float" else int(value)
            elif kind == "boolean":
                value = bool(value)
            elif kind == "date":
                if value is not False:
                    try:
                        value = datetime.strptime(str(value), "%Y-%m-%d").strftime("%Y-%m-%d")
                    except ValueError as exc:
                        raise _value_error(f"Wrong value for {table.name}.{name}: {value!r}") from exc
            elif kind == M2O:
                if value is False or value is None:
                    value = False
                elif isinstance(value, int) and not isinstance(value, bool):
                    target = self.tables.get(relation or "")
                    if target is None or value not in target.records:
                        raise OdooError(
                            "psycopg2.errors.ForeignKeyViolation",
                            f'insert or update on table "{table.name.replace(".", "_")}" violates foreign key '
                            f'constraint "{table.name.replace(".", "_")}_{name}_fkey"\nDETAIL:  Key ({name})=({value}) '
                            f'is not present in table "{(relation or "").replace(".", "_")}".',
                        )
                    value = [value, target.records[value].get("display_name") or target.records[value].get("name")]
                else:
                    raise _value_error(f"Wrong value for {table.name}.{name}: {value!r}")
            elif kind == M2M:
                if not isinstance(value, list):
                    raise _value_error(f"Wrong value for {table.name}.{name}: expected a list of commands")
            else:
                raise _value_error(f"Field '{name}' on model '{table.name}' cannot be written through the API")
            out[name] = value
        return out

    def _apply(self, table: _Table, record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        applied = dict(changes)
        for name, value in changes.items():
            if table.fields[name][0] == M2M:
                applied[name] = _m2m(record.get(name) or [], value)
        return applied

    def _project(self, table: _Table, record: dict[str, Any], fields: Any) -> dict[str, Any]:
        if not fields:
            return dict(record)
        if not isinstance(fields, list):
            raise _value_error("fields must be a list of field names")
        out = {"id": record["id"]}
        for name in fields:
            if name not in table.fields:
                raise _value_error(f"Invalid field '{name}' on model '{table.name}'")
            out[name] = record.get(name, False)
        return out

    # ------------------------------------------------------------------------- search
    def _search(self, table: _Table, domain: Any, offset: Any, limit: Any, order: Any) -> list[int]:
        if domain is None:
            domain = []
        if not isinstance(domain, list):
            raise _value_error(f"Invalid domain: {domain!r}")
        if not isinstance(offset, int) or offset < 0 or (limit not in (None, False) and not isinstance(limit, int)):
            raise _value_error("offset and limit must be whole numbers")
        node = _parse(table, domain)
        if "active" in table.fields and table.inactive and not _mentions(node, "active"):
            node = ("and", node, ("term", _Term("active", "=", True)))
        keys = _order(table, order)
        stop = None if limit in (None, False, 0) else offset + limit
        if keys == [("write_date", False), ("id", False)]:
            return self._search_by_write(table, node, offset, stop)
        candidates = _candidates(table, node)
        pool = sorted(candidates) if candidates is not None else table.ids
        matched = [rid for rid in pool if _matches(table.records[rid], node, table)]
        if keys != [("id", False)]:
            for name, descending in reversed(keys):
                matched.sort(key=lambda rid, n=name: _sort_value(table.records[rid].get(n)), reverse=descending)
        return matched[offset:stop]

    def _search_by_write(self, table: _Table, node: Node, offset: int, stop: int | None) -> list[int]:
        """The incremental read: answered from the (write_date, id) index. A domain that only bounds
        write_date from below is a slice; any other is filtered from the first possible record on."""
        low = _lower_bound(node)
        start = bisect.bisect_left(table.by_write, low) if low is not None else 0
        if _only_lower_bounds(node):
            end = len(table.by_write) if stop is None else min(len(table.by_write), start + stop)
            return [rid for _, rid in table.by_write[start + offset : end]]
        candidates = _candidates(table, node)
        if candidates is not None:
            keyed = sorted((table.records[rid]["write_date"], rid) for rid in candidates)
            return [rid for _, rid in keyed if _matches(table.records[rid], node, table)][offset:stop]
        out: list[int] = []
        skipped = 0
        for _, rid in table.by_write[start:]:
            if not _matches(table.records[rid], node, table):
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(rid)
            if stop is not None and len(out) >= stop - offset:
                break
        return out


# ----------------------------------------------------------------------------- domains
def _parse(table: _Table, domain: list[Any]) -> Node:
    stack: list[Node] = []
    for item in reversed(domain):
        if item is True or (isinstance(item, list | tuple) and list(item) == [1, "=", 1]):
            stack.append(("true",))
        elif item in ("&", "|"):
            if len(stack) < 2:
                raise _value_error(f"Invalid domain {domain!r}: {item!r} needs two operands")
            first, second = stack.pop(), stack.pop()
            stack.append(("and" if item == "&" else "or", first, second))
        elif item == "!":
            if not stack:
                raise _value_error(f"Invalid domain {domain!r}: '!' needs an operand")
            stack.append(("not", stack.pop()))
        elif isinstance(item, list | tuple) and len(item) == 3:
            name, op, value = item
            if name not in table.fields:
                raise _value_error(f"Invalid field {table.name}.{name} in leaf {tuple(item)!r}")
            if op not in _OPERATORS:
                raise _value_error(f"Invalid leaf {tuple(item)!r}: unknown operator {op!r}")
            if op in ("in", "not in") and not isinstance(value, list | tuple):
                raise _value_error(f"Invalid leaf {tuple(item)!r}: {op} takes a list")
            if table.fields[name][0] == "datetime" and isinstance(value, str):
                value = _as_stamp(value, item)
            try:
                members = (
                    frozenset(v for v in value if not isinstance(v, bool)) if op in ("in", "not in") else frozenset()
                )
            except TypeError as exc:
                raise _value_error(f"Invalid leaf {tuple(item)!r}: {op} takes a list of plain values") from exc
            stack.append(("term", _Term(name, "!=" if op == "<>" else op, value, members)))
        else:
            raise _value_error(f"Invalid leaf {item!r}")
    node: Node = ("true",)
    for part in reversed(stack):
        node = part if node == ("true",) else ("and", part, node)
    return node


def _as_stamp(value: str, item: Any) -> str:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _value_error(f"Invalid leaf {tuple(item)!r}: {value!r} is not a datetime") from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(_STAMP)


def _mentions(node: Node, field: str) -> bool:
    if node[0] == "term":
        return node[1].field == field
    return any(_mentions(part, field) for part in node[1:] if isinstance(part, tuple))


def _matches(record: dict[str, Any], node: Node, table: _Table) -> bool:
    kind = node[0]
    if kind == "true":
        return True
    if kind == "and":
        return _matches(record, node[1], table) and _matches(record, node[2], table)
    if kind == "or":
        return _matches(record, node[1], table) or _matches(record, node[2], table)
    if kind == "not":
        return not _matches(record, node[1], table)
    term: _Term = node[1]
    return _compare(record.get(term.field, False), term, table.fields[term.field][0])


def _compare(have: Any, term: _Term, kind: str) -> bool:
    op, want = term.op, term.value
    if kind == M2O:
        if isinstance(want, str) or (isinstance(want, list | tuple) and any(isinstance(w, str) for w in want)):
            have = have[1] if have else False
        else:
            have = have[0] if have else False
    if kind in (O2M, M2M):
        values = set(have or [])
        if op in ("=", "in"):
            wanted = set(want) if isinstance(want, list | tuple) else ({want} if want is not False else set())
            return bool(values & wanted) if wanted else not values
        if op in ("!=", "not in"):
            wanted = set(want) if isinstance(want, list | tuple) else ({want} if want is not False else set())
            return not (values & wanted) if wanted else bool(values)
        raise _value_error(f"operator {op} is not supported on {kind} fields")
    if op == "=":
        return (_empty(have) and _empty(want)) if want is False else _same(have, want)
    if op == "!=":
        return not ((_empty(have) and _empty(want)) if want is False else _same(have, want))
    if op in ("in", "not in"):
        if _empty(have):
            inside = any(w is False for w in want)
        elif isinstance(have, bool):
            inside = any(isinstance(w, bool) and w == have for w in want)
        else:
            inside = have in term.members
        return inside if op == "in" else not inside
    if op in ("like", "ilike", "=like", "=ilike", "not ilike"):
        if _empty(have):
            return op == "not ilike"
        text, pattern = str(have), str(want)
        if op in ("ilike", "=ilike", "not ilike"):
            text, pattern = text.lower(), pattern.lower()
        if op in ("like", "ilike", "not ilike"):
            found = pattern in text
            return not found if op == "not ilike" else found
        return fnmatch.fnmatchcase(text, pattern.replace("%", "*").replace("_", "?"))
    if _empty(have) or want is False or want is None:
        return False
    try:
        return {">": have > want, ">=": have >= want, "<": have < want, "<=": have <= want}[op]
    except TypeError as exc:
        raise _value_error(f"cannot compare {have!r} with {want!r}") from exc


def _empty(value: Any) -> bool:
    return value is False or value is None or value == ""


def _same(have: Any, want: Any) -> bool:
    """Equality as SQL sees it: booleans are not numbers, numbers compare by value."""
    if isinstance(have, bool) or isinstance(want, bool):
        return isinstance(have, bool) and isinstance(want, bool) and have == want
    return have == want


def _lower_bound(node: Node) -> tuple[str, float] | None:
    """The least (write_date, id) a matching record can have, when the domain implies one."""
    kind = node[0]
    if kind == "term":
        term: _Term = node[1]
        if term.field == "write_date" and isinstance(term.value, str):
            if term.op in (">=", "="):
                return (term.value, -math.inf)
            if term.op == ">":
                return (term.value, math.inf)
        return None
    if kind == "and":
        bounds = [b for b in (_lower_bound(node[1]), _lower_bound(node[2])) if b is not None]
        return max(bounds) if bounds else None
    if kind == "or":
        left, right = _lower_bound(node[1]), _lower_bound(node[2])
        return min(left, right) if left is not None and right is not None else None
    return None


def _only_lower_bounds(node: Node) -> bool:
    if node[0] == "true":
        return True
    if node[0] == "term":
        term: _Term = node[1]
        return term.field == "write_date" and term.op in (">=", ">") and isinstance(term.value, str)
    if node[0] == "and":
        return _only_lower_bounds(node[1]) and _only_lower_bounds(node[2])
    return False


def _candidates(table: _Table, node: Node) -> set[int] | None:
    """Ids that can match, from an id or many2one term ANDed into the domain; None: no index helps."""
    kind = node[0]
    if kind == "and":
        left, right = _candidates(table, node[1]), _candidates(table, node[2])
        if left is None or right is None:
            return left if right is None else right
        return left & right
    if kind != "term":
        return None
    term: _Term = node[1]
    values = term.value if term.op == "in" else [term.value] if term.op == "=" else None
    if values is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    if term.field == "id":
        return {v for v in values if v in table.records}
    index = table.refs.get(term.field)
    if index is None:
        return None
    return set().union(*(index.get(v, set()) for v in values)) if values else set()


def _order(table: _Table, order: Any) -> list[tuple[str, bool]]:
    text = order or _DEFAULT_ORDER.get(table.name, "id asc")
    if not isinstance(text, str):
        raise _value_error(f"Invalid order {order!r}")
    keys = []
    for part in text.split(","):
        words = part.strip().split()
        if not words or len(words) > 2 or words[0] not in table.fields:
            raise _value_error(
                f'Invalid "order" specified ({text}). A valid "order" specification is a '
                "comma-separated list of valid field names (optionally followed by asc/desc)"
            )
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise _value_error(f'Invalid "order" direction {words[1]!r} in {text!r}')
        keys.append((words[0], direction == "desc"))
    if keys and keys[-1][0] != "id":
        keys.append(("id", False))
    return keys


def _sort_value(value: Any) -> tuple:
    if value is False or value is None:
        return (0, "")
    if isinstance(value, list):
        return (1, str(value[1]) if len(value) == 2 else str(value))
    return (1, value)


def _ids(ids: Any) -> list[int]:
    if isinstance(ids, int) and not isinstance(ids, bool):
        return [ids]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise _value_error(f"Expected a list of record ids, got {ids!r}")
    return ids


def _missing(model: str, ids: Iterable[int]) -> OdooError:
    listed = ", ".join(str(i) for i in ids)
    return OdooError(
        "odoo.exceptions.MissingError",
        f"Record does not exist or has been deleted.\n(Record: {model}({listed},), User: {UID})",
    )


def _m2m(current: list[int], commands: list[Any]) -> list[int]:
    """Apply x2many commands: (6, 0, ids) replace, (4, id) link, (3, id) unlink, (5,) clear; bare ids replace."""
    if all(isinstance(c, int) for c in commands):
        return sorted(set(commands))
    result = list(current)
    for command in commands:
        if not isinstance(command, list | tuple) or not command:
            raise _value_error(f"Invalid x2many command {command!r}")
        code = command[0]
        if code == 6:
            result = list(command[2])
        elif code == 4:
            result = result if command[1] in result else [*result, command[1]]
        elif code == 3:
            result = [i for i in result if i != command[1]]
        elif code == 5:
            result = []
        else:
            raise _value_error(f"x2many command {code} is not supported by this API user")
    return sorted(set(result))


def _request_id(request: Request) -> Any:
    try:
        body = request.json()
    except ValueError:
        return None
    return body.get("id") if isinstance(body, dict) else None
