"""Square (``/v2/``) as the hub meets it: customers listed and searched with opaque cursors that are
valid only for the query that made them, orders searched per location with the sort/date-filter
rule, money in integer minor units, and loyalty write-back through loyalty accounts (deltas with
idempotency keys) and the ``loyalty_tier`` customer custom attribute.

Shapes follow the official OpenAPI spec (``shared/specs/square-customers-orders-loyalty.openapi.json``):
null fields are omitted, errors are ``{"errors": [{category, code, detail, field}]}``. One
simplification: a refund is shown on the original order (``refunds``, ``returns``,
``return_amounts``, ``net_amounts``) rather than as a separate return order.

Listings are precomputed and ordered once; a request bisects to its time window and scans forward
from its cursor, so paging through 100k customers or orders stays linear.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connectors.simulators._server import Request, Response, Simulator
from connectors.simulators._world import STORE_BY_CODE, STORES, MemberCopy, OrderCopy, World
from connectors.simulators.webhooks import deliver, square_webhook

CURRENCY = "CNY"
STRING_SCHEMA = "https://developer-production-s.squarecdn.com/schemas/v1/common.json#squareup.common.String"
PROGRAM_CREATED = datetime(2024, 1, 1, tzinfo=UTC)
CUSTOMER_SORTS = ("DEFAULT", "CREATED_AT")
ORDER_SORTS = ("CREATED_AT", "UPDATED_AT", "CLOSED_AT")
SORT_ORDERS = ("ASC", "DESC")
UPDATABLE = (
    "given_name",
    "family_name",
    "company_name",
    "nickname",
    "email_address",
    "address",
    "phone_number",
    "reference_id",
    "note",
    "birthday",
)
_ID_LETTERS = str.maketrans("+/", "PS")
_MICRO = timedelta(microseconds=1)
_ZERO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def square_id(seed: int, kind: str, n: object, length: int = 26) -> str:
    """A Square-style id (uppercase letters and digits) that the same seed always gives again."""
    digest = hashlib.sha256(f"{seed}:{kind}:{n}".encode()).digest()
    return base64.b64encode(digest).decode().upper().translate(_ID_LETTERS)[:length]


def _uuid(seed: int, kind: str, n: object) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"{seed}:{kind}:{n}".encode()).digest()[:16], version=4))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key(moment: datetime) -> int:
    return (moment - _ZERO_TIME) // _MICRO


def _money(cents: int) -> dict[str, Any]:
    return {"amount": cents, "currency": CURRENCY}


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def e164(raw: str | None) -> str | None:
    """A mainland number as written anywhere (``138 …``, ``0086 …``, ``+86-…``) in E.164."""
    if not raw:
        return None
    digits = re.sub(r"\D", "", raw)
    if raw.strip().startswith("+"):
        return f"+{digits}"
    if digits.startswith("00"):
        return f"+{digits[2:]}"
    if digits.startswith("86") and len(digits) == 13:
        return f"+{digits}"
    return f"+86{digits}"


class _Refusal(Exception):
    """A request Square would refuse, with its status, category, code, detail and field."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        category: str = "INVALID_REQUEST_ERROR",
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field, self.category = status, code, detail, field, category

    def error(self) -> dict[str, Any]:
        return _error(self.category, self.code, self.detail, self.field)

    def response(self) -> Response:
        return Response(self.status, {"errors": [self.error()]})


def _error(category: str, code: str, detail: str | None = None, field: str | None = None) -> dict[str, Any]:
    error = {"category": category, "code": code}
    if detail:
        error["detail"] = detail
    if field:
        error["field"] = field
    return error


class SquareSimulator(Simulator):
    """Square for one seller with the chain's five store locations. ``enrolled_share`` of customers
    with a phone already have a loyalty account from the till, with points from their own orders."""

    system = "square"
    webhook_signature_key = "sq0wss_memberhub_simulator"
    """The webhook subscription's signature key."""
    merchant_id = "MLMEMBERHUBSIM"

    def __init__(
        self,
        world: World,
        *,
        token: str,
        state_dir: Path | None = None,
        enrolled_share: float = 0.1,
    ) -> None:
        super().__init__(token=token, state_dir=state_dir)
        self.seed = world.seed
        self.location_ids = [store.square_location for store in STORES if store.square_location]
        members = sorted(world.members.get(self.system, []), key=lambda m: (m.created_at, m.person_id))
        self.customers: dict[str, dict[str, Any]] = {}
        self._person: dict[str, int] = {}
        customer_of: dict[int, str] = {}
        for n, member in enumerate(members, start=1):
            record = self._customer(n, member)
            self.customers[record["id"]] = record
            self._person[record["id"]] = member.person_id
            customer_of[member.person_id] = record["id"]
        self._by_created = [c["id"] for c in self.customers.values()]  # already in created order
        self._by_name: list[str] = []
        self._names_dirty = True
        self._times: dict[str, tuple[int, int]] = {
            cid: (_key(_parse(c["created_at"])), _key(_parse(c["updated_at"]))) for cid, c in self.customers.items()
        }
        self._phones: dict[str, list[str]] = {}
        for cid in self._by_created:
            self._index_phone(cid)

        copies = sorted(world.orders.get(self.system, []), key=lambda o: (o.ordered_at, o.person_id))
        self.orders: dict[str, dict[str, Any]] = {}
        for n, copy in enumerate(copies, start=1):
            record = self._order(n, copy, customer_of[copy.person_id])
            self.orders[record["id"]] = record
        self._order_index: dict[str, tuple[list[int], list[str]]] = {}
        for field in ORDER_SORTS:
            pairs = sorted(
                (_key(_parse(o[field.lower()])), oid) for oid, o in self.orders.items() if o.get(field.lower())
            )
            self._order_index[field] = ([k for k, _ in pairs], [oid for _, oid in pairs])

        self.program = self._program()
        self.accounts: dict[str, dict[str, Any]] = {}
        self._account_of_phone: dict[str, str] = {}
        self._accounts_of_customer: dict[str, list[str]] = {}
        self.events: list[dict[str, Any]] = []
        self._events_newest_first: list[dict[str, Any]] | None = None
        self.definitions: dict[str, dict[str, Any]] = {}
        self.custom_attributes: dict[str, dict[str, dict[str, Any]]] = {}
        self.idempotency: dict[str, dict[str, Any]] = {}
        self.customer_changes: dict[str, dict[str, Any]] = {}
        self._counter = 0
        self.groups: dict[str, dict[str, Any]] = {}  # customer groups, by id
        self.group_members: dict[str, list[str]] = {}  # customer id -> its group ids (kept by save)
        self._enrol(enrolled_share)

        routes: list[tuple[str, str, Callable[[Request, re.Match[str]], Response]]] = [
            ("GET", r"/v2/locations", self._list_locations),
            ("GET", r"/v2/customers", self._list_customers),
            ("POST", r"/v2/customers/search", self._search_customers),
            ("GET", r"/v2/customers/groups", self._list_groups),
            ("POST", r"/v2/customers/groups", self._create_group),
            ("PUT", r"/v2/customers/(?P<id>[^/]+)/groups/(?P<group>[^/]+)", self._add_to_group),
            ("DELETE", r"/v2/customers/(?P<id>[^/]+)/groups/(?P<group>[^/]+)", self._remove_from_group),
            ("POST", r"/v2/customers/custom-attribute-definitions", self._create_definition),
            ("GET", r"/v2/customers/custom-attribute-definitions/(?P<key>[^/]+)", self._get_definition),
            ("POST", r"/v2/customers/custom-attributes/bulk-upsert", self._bulk_upsert),
            ("GET", r"/v2/customers/(?P<id>[^/]+)/custom-attributes", self._list_attributes),
            ("GET", r"/v2/customers/(?P<id>[^/]+)/custom-attributes/(?P<key>[^/]+)", self._get_attribute),
            ("GET", r"/v2/customers/(?P<id>[^/]+)", self._get_customer),
            ("PUT", r"/v2/customers/(?P<id>[^/]+)", self._update_customer),
            ("POST", r"/v2/orders/search", self._search_orders),
            ("GET", r"/v2/loyalty/programs", self._list_programs),
            ("GET", r"/v2/loyalty/programs/(?P<id>[^/]+)", self._get_program),
            ("POST", r"/v2/loyalty/accounts/search", self._search_accounts),
            ("POST", r"/v2/loyalty/accounts", self._create_account),
            ("GET", r"/v2/loyalty/accounts/(?P<id>[^/]+)", self._get_account),
            ("POST", r"/v2/loyalty/accounts/(?P<id>[^/]+)/adjust", self._adjust),
            ("POST", r"/v2/loyalty/accounts/(?P<id>[^/]+)/accumulate", self._accumulate),
            ("POST", r"/v2/loyalty/events/search", self._search_events),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, _guarded(handler))

    # ------------------------------------------------------------------------- world -> records
    def _customer(self, n: int, member: MemberCopy) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": square_id(self.seed, "customer", n),
            "created_at": _stamp(member.created_at),
            "updated_at": _stamp(member.updated_at),
        }
        optional = {
            "given_name": member.given_name,
            "family_name": member.family_name,
            "email_address": member.email,
            "phone_number": member.phone,
            "birthday": member.birthday.isoformat() if member.birthday else None,
        }
        record.update({k: v for k, v in optional.items() if v})
        if member.city:
            record["address"] = {"locality": member.city, "country": "CN"}
        record["preferences"] = {"email_unsubscribed": not member.consent}
        record["creation_source"] = "DIRECTORY"
        record["version"] = 0 if member.updated_at == member.created_at else 1
        return record

    def _order(self, n: int, copy: OrderCopy, customer_id: str) -> dict[str, Any]:
        order_id = square_id(self.seed, "order", n)
        location = STORE_BY_CODE[copy.store_code].square_location
        cancelled, refunded = copy.status == "cancelled", copy.status == "refunded"
        lines, total = [], 0
        for i, (sku, title, quantity, price) in enumerate(copy.lines):
            unit = _cents(price)
            total += unit * quantity
            lines.append(
                {
                    "uid": square_id(self.seed, f"line:{n}", i, 22),
                    "catalog_object_id": square_id(self.seed, "variation", sku),
                    "catalog_version": 1,
                    "quantity": str(quantity),
                    "name": title,
                    "variation_name": sku,  # the chain names each item variation after its SKU
                    "item_type": "ITEM",
                    "base_price_money": _money(unit),
                    "variation_total_price_money": _money(unit * quantity),
                    "gross_sales_money": _money(unit * quantity),
                    "total_tax_money": _money(0),
                    "total_discount_money": _money(0),
                    "total_service_charge_money": _money(0),
                    "total_money": _money(unit * quantity),
                }
            )
        returned = _cents(copy.refunded) if refunded else 0
        record: dict[str, Any] = {
            "id": order_id,
            "location_id": location,
            "customer_id": customer_id,
            "source": {"name": "Square Point of Sale"},
            "line_items": lines,
            "net_amounts": _amounts(0 if cancelled else total - returned),
            "created_at": _stamp(copy.ordered_at),
            "updated_at": _stamp(copy.updated_at),
            "state": "CANCELED" if cancelled else "COMPLETED",
            "version": 1 + (copy.updated_at > copy.ordered_at) + refunded,
            "total_money": _money(total),
            "total_tax_money": _money(0),
            "total_discount_money": _money(0),
            "total_tip_money": _money(0),
            "total_service_charge_money": _money(0),
            "closed_at": _stamp(copy.updated_at if cancelled else copy.ordered_at),
        }
        if not cancelled:
            tender_id = square_id(self.seed, "tender", n, 24)
            record["tenders"] = [
                {
                    "id": tender_id,
                    "location_id": location,
                    "transaction_id": order_id,
                    "created_at": _stamp(copy.ordered_at),
                    "amount_money": _money(total),
                    "customer_id": customer_id,
                    "type": "CARD",
                }
            ]
        if refunded:
            record["refunds"] = [
                {
                    "id": square_id(self.seed, "refund", n, 24),
                    "location_id": location,
                    "transaction_id": order_id,
                    "tender_id": record["tenders"][0]["id"],
                    "created_at": _stamp(copy.updated_at),
                    "reason": "顾客退货",
                    "amount_money": _money(returned),
                    "status": "APPROVED",
                }
            ]
            record["returns"] = [
                {
                    "uid": square_id(self.seed, f"return:{n}", 0, 22),
                    "return_line_items": [
                        {
                            "uid": square_id(self.seed, f"return-line:{n}", i, 22),
                            "source_line_item_uid": line["uid"],
                            "name": line["name"],
                            "variation_name": line["variation_name"],
                            "catalog_object_id": line["catalog_object_id"],
                            "item_type": "ITEM",
                            "quantity": line["quantity"],
                            "base_price_money": line["base_price_money"],
                            "gross_return_money": line["total_money"],
                            "total_tax_money": _money(0),
                            "total_discount_money": _money(0),
                            "total_money": line["total_money"],
                        }
                        for i, line in enumerate(lines)
                    ],
                    "return_amounts": _amounts(returned),
                }
            ]
            record["return_amounts"] = _amounts(returned)
        return record

    def _program(self) -> dict[str, Any]:
        created = _stamp(PROGRAM_CREATED)
        return {
            "id": _uuid(self.seed, "program", "main"),
            "status": "ACTIVE",
            "reward_tiers": [
                {
                    "id": _uuid(self.seed, "reward-tier", 1),
                    "points": 500,
                    "name": "满500积分减50元",
                    "created_at": created,
                    "pricing_rule_reference": {
                        "object_id": square_id(self.seed, "pricing-rule", 1),
                        "catalog_version": 1,
                    },
                }
            ],
            "terminology": {"one": "积分", "other": "积分"},
            "location_ids": list(self.location_ids),
            "created_at": created,
            "updated_at": created,
            "accrual_rules": [
                {
                    "accrual_type": "SPEND",
                    "points": 1,
                    "spend_data": {"amount_money": _money(100), "tax_mode": "BEFORE_TAX"},
                }
            ],
        }

    def _enrol(self, share: float) -> None:
        """Accounts created at the till before the hub existed, with points from their orders."""
        rng = random.Random(self.seed * 7919 + 1)
        spent: dict[str, list[dict[str, Any]]] = {}
        for order in self.orders.values():
            spent.setdefault(order["customer_id"], []).append(order)
        for cid in self._by_created:
            phone = e164(self.customers[cid].get("phone_number"))
            if phone is None or rng.random() >= share or phone in self._account_of_phone:
                continue
            created = _parse(self.customers[cid]["created_at"])
            account = self._new_account(cid, phone, created)
            for order in spent.get(cid, []):
                if order["state"] != "COMPLETED" or "refunds" in order:
                    continue
                points = order["net_amounts"]["total_money"]["amount"] // 100
                if points > 0:
                    self._apply(account, points, "ACCUMULATE_POINTS", _parse(order["closed_at"]), order)

    def _index_account(self, account: dict[str, Any]) -> None:
        self._account_of_phone[account["mapping"]["phone_number"]] = account["id"]
        if account.get("customer_id"):
            self._accounts_of_customer.setdefault(account["customer_id"], []).append(account["id"])

    # ------------------------------------------------------------------------- system answers
    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def unauthorised(self, request: Request) -> Response:
        if self.faults.expired_token:
            return Response(
                401,
                {"errors": [_error("AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED", "The access token has expired.")]},
            )
        if "authorization" not in request.headers:
            detail = "Your request did not include an `Authorization` http header with an access token."
        else:
            detail = "This request could not be authorized."
        return Response(401, {"errors": [_error("AUTHENTICATION_ERROR", "UNAUTHORIZED", detail)]})

    def rate_limited(self, request: Request) -> Response:
        return Response(429, {"errors": [_error("RATE_LIMIT_ERROR", "RATE_LIMITED")]})

    def server_error(self, request: Request, status: int) -> Response:
        if status == 503:
            return Response(503, {"errors": [_error("API_ERROR", "SERVICE_UNAVAILABLE", "Service unavailable.")]})
        return Response(
            status, {"errors": [_error("API_ERROR", "INTERNAL_SERVER_ERROR", "An internal error occurred.")]}
        )

    def not_found(self, request: Request) -> Response:
        detail = f"API endpoint for URL path `{request.path}` and HTTP method `{request.method}` is not found."
        return Response(404, {"errors": [_error("INVALID_REQUEST_ERROR", "NOT_FOUND", detail)]})

    def connector_settings(self) -> dict[str, Any]:
        return {"locations": list(self.location_ids)}

    # ------------------------------------------------------------------------- locations
    def _list_locations(self, request: Request, match: re.Match[str]) -> Response:
        locations = []
        for store in STORES:
            if store.square_location is None:
                continue
            locations.append(
                {
                    "id": store.square_location,
                    "name": store.name,
                    "address": {"locality": store.city, "country": "CN"},
                    "timezone": "Asia/Shanghai",
                    "capabilities": [],
                    "status": "ACTIVE",
                    "created_at": _stamp(PROGRAM_CREATED),
                    "merchant_id": square_id(self.seed, "merchant", 1, 13),
                    "country": "CN",
                    "language_code": "zh-CN",
                    "currency": CURRENCY,
                    "business_name": "MemberHub 示例连锁",
                    "type": "PHYSICAL",
                    "mcc": "5999",
                }
            )
        return Response(200, {"locations": locations})

    # ------------------------------------------------------------------------- customers
    def _sorted_customers(self, field: str) -> list[str]:
        if field == "CREATED_AT":
            return self._by_created
        if self._names_dirty:
            self._by_name = sorted(
                self._by_created,
                key=lambda cid: (self.customers[cid].get("given_name", ""), self.customers[cid].get("family_name", "")),
            )
            self._names_dirty = False
        return self._by_name

    def _list_customers(self, request: Request, match: re.Match[str]) -> Response:
        limit = _limit(request.arg("limit"), 100, 100, "limit")
        field = _enum(request.arg("sort_field") or "DEFAULT", CUSTOMER_SORTS, "sort_field")
        order = _enum(request.arg("sort_order") or "ASC", SORT_ORDERS, "sort_order")
        digest = _digest({"list": [field, order]})
        ids = self._sorted_customers(field)
        start = _position(request.arg("cursor"), digest)
        page, following = _walk(len(ids), start, order, limit, lambda i: True)
        body: dict[str, Any] = {}
        if page:
            body["customers"] = [self.customers[ids[i]] for i in page]
        if following is not None:
            body["cursor"] = _cursor(digest, following)
        if request.arg("count") == "true":
            body["count"] = len(ids)
        return Response(200, body)

    def _search_customers(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        limit = _limit(body.get("limit"), 100, 100, "limit")
        query = _object(body.get("query"), "query")
        sort = _object(query.get("sort"), "query.sort")
        field = _enum(sort.get("field") or "DEFAULT", CUSTOMER_SORTS, "query.sort.field")
        order = _enum(sort.get("order") or "ASC", SORT_ORDERS, "query.sort.order")
        keep = self._customer_filter(_object(query.get("filter"), "query.filter"))
        ids = self._sorted_customers(field)
        digest = _digest({"search": query})
        start = _position(body.get("cursor"), digest)
        page, following = _walk(len(ids), start, order, limit, lambda i: keep(ids[i]))
        answer: dict[str, Any] = {}
        if page:
            answer["customers"] = [self.customers[ids[i]] for i in page]
        if following is not None:
            answer["cursor"] = _cursor(digest, following)
        if body.get("count") is True:
            answer["count"] = sum(1 for cid in ids if keep(cid))
        return Response(200, answer)

    def _customer_filter(self, filters: dict[str, Any]) -> Callable[[str], bool]:
        tests: list[Callable[[str], bool]] = []
        for position, name in ((0, "created_at"), (1, "updated_at")):
            window = _window(filters.get(name), f"query.filter.{name}")
            if window is not None:
                low, high = window
                tests.append(lambda cid, p=position, lo=low, hi=high: lo <= self._times[cid][p] < hi)
        for name in ("email_address", "phone_number", "reference_id"):
            text = _object(filters.get(name), f"query.filter.{name}")
            if not text:
                continue
            exact, fuzzy = text.get("exact"), text.get("fuzzy")
            if (exact is None) == (fuzzy is None):
                raise _Refusal(
                    400, "INVALID_VALUE", "Exactly one of `exact` or `fuzzy` must be set.", f"query.filter.{name}"
                )
            if name == "phone_number":
                want = e164(exact) if exact else re.sub(r"\D", "", fuzzy)
                tests.append(
                    lambda cid, w=want, x=exact is not None: (
                        (e164(self.customers[cid].get("phone_number")) == w)
                        if x
                        else w in re.sub(r"\D", "", self.customers[cid].get("phone_number", ""))
                    )
                )
            else:
                want = (exact or fuzzy).lower()
                tests.append(
                    lambda cid, n=name, w=want, x=exact is not None: (
                        (self.customers[cid].get(n, "").lower() == w)
                        if x
                        else w in self.customers[cid].get(n, "").lower()
                    )
                )
        return lambda cid: all(test(cid) for test in tests)

    def _get_customer(self, request: Request, match: re.Match[str]) -> Response:
        return Response(200, {"customer": self._existing_customer(match["id"])})

    def _existing_customer(self, cid: str) -> dict[str, Any]:
        customer = self.customers.get(cid)
        if customer is None:
            raise _Refusal(404, "NOT_FOUND", f"Customer with ID `{cid}` not found.")
        return customer

    def _update_customer(self, request: Request, match: re.Match[str]) -> Response:
        customer = self._existing_customer(match["id"])
        body = _body(request)
        if "version" in body and body["version"] != customer["version"]:
            raise _Refusal(
                400,
                "CONFLICT",
                f"Version {body['version']} is not the current version {customer['version']}.",
                "version",
            )
        changes = {k: body[k] for k in UPDATABLE if k in body}
        unknown = sorted(set(body) - set(UPDATABLE) - {"version"})
        if unknown:
            raise _Refusal(400, "BAD_REQUEST", f"Unknown field `{unknown[0]}`.", unknown[0])
        now = datetime.now(UTC)
        record = self.customer_changes.setdefault(customer["id"], {})
        record.update(changes)
        record["version"] = customer["version"] + 1
        record["updated_at"] = _stamp(now)
        self._apply_customer_change(customer["id"], record)
        return Response(200, {"customer": self.customers[customer["id"]]})

    def _apply_customer_change(self, cid: str, change: dict[str, Any]) -> None:
        customer = self.customers[cid]
        for name, value in change.items():
            if value is None or value == "":
                customer.pop(name, None)
            else:
                customer[name] = value
        self._times[cid] = (self._times[cid][0], _key(_parse(customer["updated_at"])))
        if "given_name" in change or "family_name" in change:
            self._names_dirty = True
        if "phone_number" in change:
            for ids in self._phones.values():
                if cid in ids:
                    ids.remove(cid)
            self._index_phone(cid)

    def _index_phone(self, cid: str) -> None:
        phone = e164(self.customers[cid].get("phone_number"))
        if phone:
            self._phones.setdefault(phone, []).append(cid)

    # ------------------------------------------------------------------------- customer groups
    def _list_groups(self, request: Request, match: re.Match[str]) -> Response:
        limit = _limit(request.arg("limit"), 50, 50, "limit")
        ordered = sorted(self.groups.values(), key=lambda g: (g["created_at"], g["id"]))
        start = int(request.arg("cursor") or 0)
        page = ordered[start : start + limit]
        body: dict[str, Any] = {"groups": page} if page else {}
        if start + limit < len(ordered):
            body["cursor"] = str(start + limit)
        return Response(200, body)

    def _create_group(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        group = _object(body.get("group"), "group")
        name = group.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "group.name")

        def create() -> Response:
            if any(g["name"] == name for g in self.groups.values()):
                raise _Refusal(400, "CONFLICT", f"A customer group named `{name}` already exists.", "group.name")
            self._counter += 1
            now = _stamp(datetime.now(UTC))
            group_id = square_id(self.seed, "group", self._counter)
            made = {"id": group_id, "name": name, "created_at": now, "updated_at": now}
            self.groups[made["id"]] = made
            return Response(200, {"group": made})

        return self._idempotent("customer-group", body, body, create)

    def _membership(self, match: re.Match[str]) -> tuple[dict[str, Any], str]:
        customer = self._existing_customer(match["id"])
        if match["group"] not in self.groups:
            raise _Refusal(404, "NOT_FOUND", f"Customer group with ID `{match['group']}` not found.")
        return customer, match["group"]

    def _add_to_group(self, request: Request, match: re.Match[str]) -> Response:
        customer, group = self._membership(match)
        held = self.group_members.setdefault(customer["id"], [])
        if group not in held:
            held.append(group)
        customer["group_ids"] = list(held)
        return Response(200, {})

    def _remove_from_group(self, request: Request, match: re.Match[str]) -> Response:
        customer, group = self._membership(match)
        held = self.group_members.setdefault(customer["id"], [])
        if group in held:
            held.remove(group)
        if held:
            customer["group_ids"] = list(held)
        else:
            customer.pop("group_ids", None)
        return Response(200, {})

    # ------------------------------------------------------------------------- orders
    def _search_orders(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        locations = body.get("location_ids")
        if not locations:
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "location_ids")
        if not isinstance(locations, list) or not all(isinstance(x, str) for x in locations):
            raise _Refusal(400, "INCORRECT_TYPE", "Expected an array of location id strings.", "location_ids")
        if len(locations) > 10:
            raise _Refusal(
                400,
                "ARRAY_LENGTH_TOO_LONG",
                f"At most 10 location_ids may be given, got {len(locations)}.",
                "location_ids",
            )
        for location in locations:
            if location not in self.location_ids:
                raise _Refusal(
                    400, "INVALID_LOCATION", f"Location `{location}` is not a location of this seller.", "location_ids"
                )
        limit = _limit(body.get("limit"), 500, 1000, "limit")
        query = _object(body.get("query"), "query")
        filters = _object(query.get("filter"), "query.filter")
        dates = _object(filters.get("date_time_filter"), "query.filter.date_time_filter")
        chosen = [name for name in ("created_at", "updated_at", "closed_at") if dates.get(name)]
        if len(chosen) > 1:
            raise _Refusal(
                400, "INVALID_VALUE", "Only one date_time_filter field may be set.", "query.filter.date_time_filter"
            )
        sort = query.get("sort")
        if sort is not None:
            sort = _object(sort, "query.sort")
            if not sort.get("sort_field"):
                raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "query.sort.sort_field")
        sort = sort or {}
        field = _enum(sort.get("sort_field") or "CREATED_AT", ORDER_SORTS, "query.sort.sort_field")
        order = _enum(sort.get("sort_order") or "DESC", SORT_ORDERS, "query.sort.sort_order")
        if chosen and chosen[0].upper() != field:
            raise _Refusal(
                400,
                "INVALID_VALUE",
                f"The sort_field {field} must match the date_time_filter field {chosen[0].upper()}.",
                "query.sort.sort_field",
            )
        keys, ids = self._order_index[field]
        low, high = 0, len(ids)
        if chosen:
            window = _window(dates[chosen[0]], f"query.filter.date_time_filter.{chosen[0]}")
            if window is not None:
                low, high = bisect.bisect_left(keys, window[0]), bisect.bisect_left(keys, window[1])
        wanted_locations = set(locations)
        states = _object(filters.get("state_filter"), "query.filter.state_filter").get("states")
        customers = _object(filters.get("customer_filter"), "query.filter.customer_filter").get("customer_ids")
        wanted_states = set(states) if states else None
        wanted_customers = set(customers) if customers else None

        def keep(i: int) -> bool:
            record = self.orders[ids[low + i]]
            return (
                record["location_id"] in wanted_locations
                and (wanted_states is None or record["state"] in wanted_states)
                and (wanted_customers is None or record.get("customer_id") in wanted_customers)
            )

        digest = _digest({"locations": locations, "query": query})
        start = _position(body.get("cursor"), digest)
        page, following = _walk(high - low, start, order, limit, keep)
        answer: dict[str, Any] = {}
        if page:
            chosen_orders = [self.orders[ids[low + i]] for i in page]
            if body.get("return_entries") is True:
                answer["order_entries"] = [
                    {"order_id": o["id"], "version": o["version"], "location_id": o["location_id"]}
                    for o in chosen_orders
                ]
            else:
                answer["orders"] = chosen_orders
        if following is not None:
            answer["cursor"] = _cursor(digest, following)
        return Response(200, answer)

    # ------------------------------------------------------------------------- loyalty
    def _list_programs(self, request: Request, match: re.Match[str]) -> Response:
        return Response(200, {"programs": [self.program]})

    def _get_program(self, request: Request, match: re.Match[str]) -> Response:
        if match["id"] not in ("main", self.program["id"]):
            raise _Refusal(404, "NOT_FOUND", f"Loyalty program `{match['id']}` not found.")
        return Response(200, {"program": self.program})

    def _get_account(self, request: Request, match: re.Match[str]) -> Response:
        return Response(200, {"loyalty_account": self._existing_account(match["id"])})

    def _existing_account(self, account_id: str) -> dict[str, Any]:
        account = self.accounts.get(account_id)
        if account is None:
            raise _Refusal(404, "NOT_FOUND", f"Loyalty account `{account_id}` not found.")
        return account

    def _search_accounts(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        limit = _limit(body.get("limit"), 30, 200, "limit")
        query = _object(body.get("query"), "query")
        customer_ids, mappings = query.get("customer_ids"), query.get("mappings")
        if customer_ids and mappings:
            raise _Refusal(400, "CONFLICTING_PARAMETERS", "Search by customer_ids or by mappings, not both.", "query")
        for name, given in (("customer_ids", customer_ids), ("mappings", mappings)):
            if given is not None and (not isinstance(given, list) or len(given) > 30):
                raise _Refusal(400, "ARRAY_LENGTH_TOO_LONG", f"`{name}` takes at most 30 entries.", f"query.{name}")
        if customer_ids or mappings:
            if customer_ids:
                found = {i for cid in customer_ids for i in self._accounts_of_customer.get(cid, [])}
            else:
                phones = {e164((m or {}).get("phone_number")) for m in mappings if isinstance(m, dict)}
                found = {self._account_of_phone[p] for p in phones if p in self._account_of_phone}
            accounts = sorted((self.accounts[i] for i in found), key=lambda a: (a["created_at"], a["id"]))
        else:
            accounts = list(self.accounts.values())
        digest = _digest({"accounts": query})
        start = _position(body.get("cursor"), digest)
        page, following = _walk(len(accounts), start, "ASC", limit, lambda i: True)
        answer: dict[str, Any] = {}
        if page:
            answer["loyalty_accounts"] = [accounts[i] for i in page]
        if following is not None:
            answer["cursor"] = _cursor(digest, following)
        return Response(200, answer)

    def _create_account(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        return self._idempotent("CreateLoyaltyAccount", body, body, lambda: self._do_create_account(body))

    def _do_create_account(self, body: dict[str, Any]) -> Response:
        given = body.get("loyalty_account")
        if not isinstance(given, dict):
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "loyalty_account")
        if given.get("program_id") != self.program["id"]:
            raise _Refusal(
                404,
                "NOT_FOUND",
                f"Loyalty program `{given.get('program_id')}` not found.",
                "loyalty_account.program_id",
            )
        raw = (given.get("mapping") or {}).get("phone_number")
        if not raw:
            raise _Refusal(
                400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "loyalty_account.mapping.phone_number"
            )
        if not re.fullmatch(r"\+[1-9]\d{7,14}", str(raw)):
            raise _Refusal(
                400,
                "INVALID_PHONE_NUMBER",
                f"`{raw}` is not an E.164 phone number.",
                "loyalty_account.mapping.phone_number",
            )
        if raw in self._account_of_phone:
            raise _Refusal(
                409,
                "CONFLICT",
                f"A loyalty account is already mapped to `{raw}`.",
                "loyalty_account.mapping.phone_number",
            )
        owners = self._phones.get(raw, [])
        customer_id = given.get("customer_id") if given.get("customer_id") in self.customers else None
        account = self._new_account(customer_id or (owners[0] if owners else None), raw, datetime.now(UTC))
        return Response(200, {"loyalty_account": account})

    def _new_account(self, customer_id: str | None, phone: str, at: datetime) -> dict[str, Any]:
        self._counter += 1
        stamp = _stamp(at)
        account: dict[str, Any] = {
            "id": _uuid(self.seed, "account", self._counter),
            "program_id": self.program["id"],
            "balance": 0,
            "lifetime_points": 0,
            "mapping": {"id": _uuid(self.seed, "mapping", self._counter), "created_at": stamp, "phone_number": phone},
            "created_at": stamp,
            "updated_at": stamp,
            "enrolled_at": stamp,
        }
        if customer_id:
            account["customer_id"] = customer_id
        self.accounts[account["id"]] = account
        self._index_account(account)
        return account

    def _apply(
        self,
        account: dict[str, Any],
        points: int,
        kind: str,
        at: datetime,
        order: dict[str, Any] | None = None,
        reason: str | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        self._counter += 1
        account["balance"] += points
        if points > 0:
            account["lifetime_points"] += points
        account["updated_at"] = _stamp(at)
        event: dict[str, Any] = {
            "id": _uuid(self.seed, "event", self._counter),
            "type": kind,
            "created_at": _stamp(at),
            "loyalty_account_id": account["id"],
            "source": source or ("SQUARE" if order is not None else "LOYALTY_API"),
        }
        if kind == "CREATE_REWARD":
            # a reward made at the till names no reward_id (only Loyalty API rewards do)
            event["create_reward"] = {"loyalty_program_id": self.program["id"], "points": points}
        elif kind == "ACCUMULATE_POINTS":
            event["accumulate_points"] = {"loyalty_program_id": self.program["id"], "points": points}
            if order is not None:
                event["accumulate_points"]["order_id"] = order["id"]
                event["location_id"] = order["location_id"]
        else:
            event["adjust_points"] = {"loyalty_program_id": self.program["id"], "points": points}
            if reason:
                event["adjust_points"]["reason"] = reason
        self.events.append(event)
        self._events_newest_first = None
        return event

    def _adjust(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        account = self._existing_account(match["id"])
        scoped = {"account": account["id"], **body}
        return self._idempotent("AdjustLoyaltyPoints", body, scoped, lambda: self._do_adjust(account, body))

    def _do_adjust(self, account: dict[str, Any], body: dict[str, Any]) -> Response:
        adjust = body.get("adjust_points")
        if not isinstance(adjust, dict) or "points" not in adjust:
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "adjust_points.points")
        points = adjust["points"]
        if not isinstance(points, int) or isinstance(points, bool) or points == 0:
            raise _Refusal(400, "INVALID_VALUE", "`points` must be a non-zero integer.", "adjust_points.points")
        if account["balance"] + points < 0 and not body.get("allow_negative_balance"):
            raise _Refusal(
                400,
                "BAD_REQUEST",
                f"Adjusting by {points} would leave a negative balance ({account['balance']} points available).",
                "adjust_points.points",
            )
        event = self._apply(account, points, "ADJUST_POINTS", datetime.now(UTC), reason=adjust.get("reason"))
        return Response(200, {"event": event})

    def _accumulate(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        account = self._existing_account(match["id"])
        scoped = {"account": account["id"], **body}
        return self._idempotent("AccumulateLoyaltyPoints", body, scoped, lambda: self._do_accumulate(account, body))

    def _do_accumulate(self, account: dict[str, Any], body: dict[str, Any]) -> Response:
        location = body.get("location_id")
        if not location:
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "location_id")
        if location not in self.location_ids:
            raise _Refusal(
                400, "INVALID_LOCATION", f"Location `{location}` is not a location of this seller.", "location_id"
            )
        given = _object(body.get("accumulate_points"), "accumulate_points")
        order_id, points = given.get("order_id"), given.get("points")
        if (order_id is None) == (points is None):
            raise _Refusal(400, "INVALID_VALUE", "Set exactly one of `order_id` or `points`.", "accumulate_points")
        order = None
        if order_id is not None:
            order = self.orders.get(order_id)
            if order is None:
                raise _Refusal(404, "NOT_FOUND", f"Order `{order_id}` not found.", "accumulate_points.order_id")
            if order["location_id"] != location:
                raise _Refusal(400, "LOCATION_MISMATCH", "The order belongs to another location.", "location_id")
            if any(e.get("accumulate_points", {}).get("order_id") == order_id for e in self.events):
                raise _Refusal(
                    400,
                    "BAD_REQUEST",
                    f"Points were already accumulated for order `{order_id}`.",
                    "accumulate_points.order_id",
                )
            points = order["net_amounts"]["total_money"]["amount"] // 100
        if not isinstance(points, int) or points < 1:
            raise _Refusal(400, "INVALID_VALUE", "`points` must be at least 1.", "accumulate_points.points")
        event = self._apply(account, points, "ACCUMULATE_POINTS", datetime.now(UTC))
        if order is not None:
            event["accumulate_points"]["order_id"] = order["id"]
        event["location_id"] = location
        return Response(200, {"events": [event]})

    def _search_events(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        limit = _limit(body.get("limit"), 30, 30, "limit")
        query = _object(body.get("query"), "query")
        filters = _object(query.get("filter"), "query.filter")
        account = _object(filters.get("loyalty_account_filter"), "query.filter.loyalty_account_filter").get(
            "loyalty_account_id"
        )
        types = _object(filters.get("type_filter"), "query.filter.type_filter").get("types")
        locations = _object(filters.get("location_filter"), "query.filter.location_filter").get("location_ids")
        order_id = _object(filters.get("order_filter"), "query.filter.order_filter").get("order_id")
        created = _object(filters.get("date_time_filter"), "query.filter.date_time_filter").get("created_at")
        window = _window(created, "query.filter.date_time_filter.created_at")

        def keep(event: dict[str, Any]) -> bool:
            if account and event["loyalty_account_id"] != account:
                return False
            if types and event["type"] not in types:
                return False
            if locations and event.get("location_id") not in locations:
                return False
            if order_id and event.get("accumulate_points", {}).get("order_id") != order_id:
                return False
            return window is None or window[0] <= _key(_parse(event["created_at"])) < window[1]

        if self._events_newest_first is None:
            self._events_newest_first = sorted(self.events, key=lambda e: e["created_at"], reverse=True)
        events = [e for e in self._events_newest_first if keep(e)]
        digest = _digest({"events": query})
        start = _position(body.get("cursor"), digest)
        page, following = _walk(len(events), start, "ASC", limit, lambda i: True)
        answer: dict[str, Any] = {}
        if page:
            answer["events"] = [events[i] for i in page]
        if following is not None:
            answer["cursor"] = _cursor(digest, following)
        return Response(200, answer)

    # ------------------------------------------------------------------------- custom attributes
    def _create_definition(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        given = body.get("custom_attribute_definition")
        if not isinstance(given, dict) or not given.get("key"):
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "custom_attribute_definition.key")
        key = str(given["key"])
        if not re.fullmatch(r"[a-zA-Z0-9._-]{1,60}", key):
            raise _Refusal(400, "INVALID_VALUE", f"`{key}` is not a valid key.", "custom_attribute_definition.key")
        if key in self.definitions:
            raise _Refusal(
                409,
                "CONFLICT",
                f"A custom attribute definition with key `{key}` already exists.",
                "custom_attribute_definition.key",
            )
        stamp = _stamp(datetime.now(UTC))
        definition = {
            "key": key,
            "schema": given.get("schema") or {"$ref": STRING_SCHEMA},
            "name": given.get("name") or key,
            "visibility": given.get("visibility") or "VISIBILITY_HIDDEN",
            "version": 1,
            "updated_at": stamp,
            "created_at": stamp,
        }
        if given.get("description"):
            definition["description"] = given["description"]
        self.definitions[key] = definition
        return Response(200, {"custom_attribute_definition": definition})

    def _get_definition(self, request: Request, match: re.Match[str]) -> Response:
        definition = self.definitions.get(match["key"])
        if definition is None:
            raise _Refusal(404, "NOT_FOUND", f"Custom attribute definition with key `{match['key']}` not found.")
        return Response(200, {"custom_attribute_definition": definition})

    def _bulk_upsert(self, request: Request, match: re.Match[str]) -> Response:
        body = _body(request)
        values = body.get("values")
        if not isinstance(values, dict) or not values:
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "`values` must hold 1 to 25 upserts.", "values")
        if len(values) > 25:
            raise _Refusal(
                400, "TOO_MANY_MAP_ENTRIES", f"`values` holds {len(values)} upserts; at most 25 are allowed.", "values"
            )
        answers: dict[str, Any] = {}
        for name, item in values.items():
            try:
                if not isinstance(item, dict):
                    raise _Refusal(400, "INCORRECT_TYPE", "Each value must be an object.", f"values.{name}")
                key = item.get("idempotency_key")
                if key:
                    answers[name] = self._idempotent(
                        "UpsertCustomerCustomAttribute", item, item, lambda it=item: Response(200, self._upsert(it))
                    ).body
                else:
                    answers[name] = self._upsert(item)
            except _Refusal as refusal:
                answers[name] = {"errors": [refusal.error()]}
        return Response(200, {"values": answers})

    def _upsert(self, item: dict[str, Any]) -> dict[str, Any]:
        customer_id = item.get("customer_id")
        if not customer_id:
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "customer_id")
        self._existing_customer(customer_id)
        given = item.get("custom_attribute")
        if not isinstance(given, dict) or not given.get("key"):
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "custom_attribute.key")
        key = str(given["key"])
        definition = self.definitions.get(key)
        if definition is None:
            raise _Refusal(
                404, "NOT_FOUND", f"Custom attribute definition with key `{key}` not found.", "custom_attribute.key"
            )
        value = given.get("value")
        if definition["schema"].get("$ref") == STRING_SCHEMA and not (isinstance(value, str) and len(value) <= 1000):
            raise _Refusal(
                400, "INVALID_VALUE", "The value must be a string of at most 1000 characters.", "custom_attribute.value"
            )
        held = self.custom_attributes.setdefault(customer_id, {})
        current = held.get(key)
        if "version" in given and current is not None and given["version"] != current["version"]:
            raise _Refusal(
                409,
                "CONFLICT",
                f"Version {given['version']} is not the current version {current['version']}.",
                "custom_attribute.version",
            )
        stamp = _stamp(datetime.now(UTC))
        attribute = {
            "key": key,
            "value": value,
            "version": (current["version"] + 1) if current else 1,
            "visibility": definition["visibility"],
            "updated_at": stamp,
            "created_at": current["created_at"] if current else stamp,
        }
        held[key] = attribute
        return {"customer_id": customer_id, "custom_attribute": attribute}

    def _list_attributes(self, request: Request, match: re.Match[str]) -> Response:
        self._existing_customer(match["id"])
        held = self.custom_attributes.get(match["id"], {})
        return Response(200, {"custom_attributes": list(held.values())} if held else {})

    def _get_attribute(self, request: Request, match: re.Match[str]) -> Response:
        self._existing_customer(match["id"])
        attribute = self.custom_attributes.get(match["id"], {}).get(match["key"])
        if attribute is None:
            raise _Refusal(
                404, "NOT_FOUND", f"Custom attribute `{match['key']}` not found for customer `{match['id']}`."
            )
        return Response(200, {"custom_attribute": attribute})

    # ------------------------------------------------------------------------- idempotency
    def _idempotent(self, scope: str, body: dict[str, Any], signed: Any, run: Callable[[], Response]) -> Response:
        """Square's rule: the same key with the same request answers what it answered the first
        time, without doing it again; the same key with a different request is refused."""
        key = body.get("idempotency_key")
        if not key or not isinstance(key, str):
            raise _Refusal(400, "MISSING_REQUIRED_PARAMETER", "Field must be set", "idempotency_key")
        if len(key) > 128:
            raise _Refusal(400, "VALUE_TOO_LONG", "`idempotency_key` is longer than 128 characters.", "idempotency_key")
        slot, digest = f"{scope}:{key}", _digest(signed)
        seen = self.idempotency.get(slot)
        if seen is not None:
            if seen["digest"] != digest:
                raise _Refusal(
                    400,
                    "IDEMPOTENCY_KEY_REUSED",
                    "The idempotency key can only be retried with the same request data.",
                    "idempotency_key",
                )
            return Response(seen["status"], seen["body"])
        response = run()
        if response.status < 400:
            self.idempotency[slot] = {"digest": digest, "status": response.status, "body": response.body}
        return response

    # ------------------------------------------------------------------------- hub and tests
    def truth(self) -> dict[str, str | int]:
        return dict(self._person)

    def loyalty(self) -> dict[str, tuple[int | None, str | None]]:
        with self.lock:
            balances: dict[str, int] = {}
            for account in self.accounts.values():
                if account.get("customer_id"):
                    balances.setdefault(account["customer_id"], account["balance"])
            shown: dict[str, tuple[int | None, str | None]] = {}
            for cid in self._by_created:
                tier = self.custom_attributes.get(cid, {}).get("loyalty_tier")
                shown[cid] = (balances.get(cid), tier["value"] if tier else None)
            return shown

    def redeem_at_till(self, customer_id: str, points: int, location_id: str | None = None) -> dict[str, Any]:
        """A cashier redeems a reward for ``points`` on the customer's loyalty account at the till
        (for tests): a ``CREATE_REWARD`` event taking the points, then ``REDEEM_REWARD`` as the
        order is paid, both with source ``SQUARE``. Refused beyond the balance, as Square does."""
        with self.lock:
            account = self._account_of_customer(customer_id)
            if points < 1 or points > account["balance"]:
                raise ValueError(f"cannot redeem {points} points from a balance of {account['balance']}")
            at = datetime.now(UTC)
            created = self._apply(account, -points, "CREATE_REWARD", at, source="SQUARE")
            created["location_id"] = location_id or self.location_ids[0]
            self._counter += 1
            redeemed = {
                "id": _uuid(self.seed, "event", self._counter),
                "type": "REDEEM_REWARD",
                "created_at": _stamp(at),
                "loyalty_account_id": account["id"],
                "source": "SQUARE",
                "location_id": created["location_id"],
                "redeem_reward": {"loyalty_program_id": self.program["id"]},
            }
            self.events.append(redeemed)
            self._events_newest_first = None
            return created

    def adjust_in_dashboard(self, customer_id: str, points: int, reason: str) -> dict[str, Any]:
        """The seller corrects a balance in the Square Dashboard (for tests): ``ADJUST_POINTS``, source ``SQUARE``."""
        with self.lock:
            account = self._account_of_customer(customer_id)
            return self._apply(account, points, "ADJUST_POINTS", datetime.now(UTC), reason=reason, source="SQUARE")

    def _account_of_customer(self, customer_id: str) -> dict[str, Any]:
        found = self._accounts_of_customer.get(customer_id)
        if not found:
            raise ValueError(f"customer {customer_id} has no loyalty account")
        return self.accounts[found[0]]

    def touch(self, customer_id: str, **fields: Any) -> dict[str, Any]:
        """Change a customer as someone at the till would (for tests and benchmarks): set ``fields``
        (those a customer update may change) and move ``updated_at`` to now; the change is kept."""
        with self.lock:
            customer = self._existing_customer(customer_id)
            unknown = sorted(set(fields) - set(UPDATABLE))
            if unknown:
                raise ValueError(f"Square customers cannot change {', '.join(unknown)}; updatable: {UPDATABLE}")
            record = self.customer_changes.setdefault(customer_id, {})
            record.update(fields)
            record["version"] = customer["version"] + 1
            record["updated_at"] = _stamp(datetime.now(UTC))
            self._apply_customer_change(customer_id, record)
            return customer

    def send_webhook(self, url: str, event_type: str, obj: dict[str, Any] | str) -> httpx.Response:
        """Send the event notification Square sends for a change (``customer.updated``, ...), signed
        with ``webhook_signature_key`` for the subscription's URL, here ``url`` itself."""
        if not isinstance(obj, dict):
            with self.lock:
                obj = dict(self.orders[obj] if event_type.startswith("order.") else self._existing_customer(obj))
        signed = square_webhook(self.webhook_signature_key, url, event_type, obj, merchant_id=self.merchant_id)
        return deliver(url, signed)

    def customer_list(self) -> list[dict[str, Any]]:
        """Every customer as the API shows it, in creation order (for tests)."""
        return [self.customers[cid] for cid in self._by_created]

    def order_list(self) -> list[dict[str, Any]]:
        """Every order as the API shows it, in creation order (for tests)."""
        return list(self.orders.values())

    def state(self) -> dict[str, Any]:
        return {
            "accounts": list(self.accounts.values()),
            "events": self.events,
            "definitions": self.definitions,
            "custom_attributes": self.custom_attributes,
            "idempotency": self.idempotency,
            "customer_changes": self.customer_changes,
            "counter": self._counter,
            "groups": self.groups,
            "group_members": self.group_members,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.accounts = {a["id"]: a for a in state.get("accounts", [])}
            self._account_of_phone, self._accounts_of_customer = {}, {}
            for account in self.accounts.values():
                self._index_account(account)
            self.events = list(state.get("events", []))
            self._events_newest_first = None
            self.definitions = dict(state.get("definitions", {}))
            self.custom_attributes = {k: dict(v) for k, v in state.get("custom_attributes", {}).items()}
            self.idempotency = dict(state.get("idempotency", {}))
            self._counter = max(self._counter, int(state.get("counter", 0)))
            self.groups = dict(state.get("groups", {}))
            for cid, held in state.get("group_members", {}).items():
                if cid in self.customers:
                    self.group_members[cid] = list(held)
                    if held:
                        self.customers[cid]["group_ids"] = list(held)
            for cid, change in state.get("customer_changes", {}).items():
                if cid in self.customers:
                    self.customer_changes[cid] = change
                    self._apply_customer_change(cid, change)


# ----------------------------------------------------------------------------- helpers
def _guarded(handler: Callable[[Request, re.Match[str]], Response]) -> Callable[[Request, re.Match[str]], Response]:
    def guarded(request: Request, match: re.Match[str]) -> Response:
        try:
            return handler(request, match)
        except _Refusal as refusal:
            return refusal.response()

    return guarded


def _amounts(total: int) -> dict[str, Any]:
    return {
        "total_money": _money(total),
        "tax_money": _money(0),
        "discount_money": _money(0),
        "tip_money": _money(0),
        "service_charge_money": _money(0),
    }


def _parse(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if body is None and not request.body:
        return {}
    if not isinstance(body, dict):
        raise _Refusal(400, "EXPECTED_JSON_BODY", "The request body must be a JSON object.")
    return body


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refusal(400, "INCORRECT_TYPE", f"Expected an object for `{field}`.", field)
    return value


def _limit(value: Any, default: int, maximum: int, field: str) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
        if isinstance(value, float | bool) or str(number) != str(value).strip():
            raise ValueError
    except ValueError:
        raise _Refusal(400, "INCORRECT_TYPE", f"Expected an integer for `{field}`.", field) from None
    if number < 1:
        raise _Refusal(400, "VALUE_TOO_LOW", f"`{field}` must be at least 1, got {number}.", field)
    if number > maximum:
        raise _Refusal(400, "VALUE_TOO_HIGH", f"`{field}` must be at most {maximum}, got {number}.", field)
    return number


def _enum(value: Any, choices: Iterable[str], field: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise _Refusal(
            400, "INVALID_ENUM_VALUE", f"`{value}` is not a valid value for `{field}` ({', '.join(choices)}).", field
        )
    return value


def _window(value: Any, field: str) -> tuple[int, int] | None:
    """A TimeRange as [start, end) in microseconds; either side may be open."""
    given = _object(value, field)
    if not given.get("start_at") and not given.get("end_at"):
        return None
    bounds = []
    for side, default in (("start_at", -(2**62)), ("end_at", 2**62)):
        text = given.get(side)
        if not text:
            bounds.append(default)
            continue
        try:
            bounds.append(_key(_parse(str(text))))
        except ValueError:
            raise _Refusal(400, "INVALID_TIME", f"`{text}` is not an RFC 3339 time.", f"{field}.{side}") from None
    if bounds[0] > bounds[1]:
        raise _Refusal(400, "INVALID_TIME_RANGE", "`start_at` is after `end_at`.", field)
    return bounds[0], bounds[1]


def _digest(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _cursor(digest: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{digest}:{position}".encode()).decode().rstrip("=")


def _position(cursor: Any, digest: str) -> int:
    if cursor in (None, ""):
        return 0
    try:
        text = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        made_for, _, position = text.partition(":")
        number = int(position)
    except (ValueError, UnicodeDecodeError):
        raise _Refusal(400, "INVALID_CURSOR", "The cursor is not valid.", "cursor") from None
    if made_for != digest:
        raise _Refusal(400, "INVALID_CURSOR", "The cursor was issued for a different query.", "cursor")
    return number


def _walk(size: int, start: int, order: str, limit: int, keep: Callable[[int], bool]) -> tuple[list[int], int | None]:
    """Up to ``limit`` kept positions from ``start`` in ascending or descending order, and the
    position of the next kept one (the next page's start) or None. Positions count in walk order."""
    found: list[int] = []
    step = start
    while step < size:
        index = step if order == "ASC" else size - 1 - step
        if keep(index):
            if len(found) == limit:
                return found, step
            found.append(index)
        step += 1
    return found, None
