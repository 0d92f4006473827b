"""Shopify Admin REST (``/admin/api/2025-01/``) as the hub meets it: customers and orders listed by
id with ``Link``-header cursors whose ``page_info`` carries the filters, a real leaky bucket with
the ``X-Shopify-Shop-Api-Call-Limit`` counter, and loyalty written back as customer metafields.

Ids grow with creation time, as Shopify's do. Everything listed is precomputed and ordered once;
a request scans forward from its cursor, so paging through 100k customers stays linear.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from connectors.simulators._server import Request, Response, Simulator
from connectors.simulators._world import EPOCH, PRODUCTS, MemberCopy, OrderCopy, World
from connectors.simulators.webhooks import deliver, shopify_webhook

API = "/admin/api/2025-01"
CUSTOMER_BASE = 7_000_000_000_000
ORDER_BASE = 5_500_000_000_000
LINE_BASE = 14_000_000_000_000
REFUND_BASE = 900_000_000_000
REFUND_LINE_BASE = 400_000_000_000
TRANSACTION_BASE = 6_600_000_000_000
ADDRESS_BASE = 8_800_000_000_000
METAFIELD_BASE = 25_000_000_000_000
PRODUCT_BASE = 8_000_000_000_000
SHOP_TZ = timezone(timedelta(hours=8))
CURRENCY = "CNY"
ARCHIVE_AFTER = timedelta(days=60)
"""Paid orders older than this (before the world's epoch) are archived, i.e. closed, so that the
default ``status=open`` hides them the way it hides a shop's old orders."""

UNAUTHORISED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
PAGING_ONLY = frozenset({"page_info", "limit", "fields"})
METAFIELD_TYPES = {"number_integer", "single_line_text_field"}


class LeakyBucket:
    """Shopify's REST limit: each call adds one to a bucket of ``size`` that leaks ``rate`` per second."""

    def __init__(self, size: int = 40, rate: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.rate, self.clock = size, rate, clock
        self.level = 0.0
        self._at = clock()

    def _leak(self) -> None:
        now = self.clock()
        self.level = max(0.0, self.level - (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """Count one call; False (and nothing counted) when the bucket is full."""
        self._leak()
        if self.level + 1 > self.size:
            return False
        self.level += 1
        return True

    def header(self) -> str:
        self._leak()
        return f"{min(self.size, math.ceil(self.level))}/{self.size}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(SHOP_TZ).isoformat(timespec="seconds")


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _e164(raw: str | None) -> str | None:
    """Shopify stores phone numbers in E.164 whatever was typed (mainland numbers here)."""
    if not raw:
        return None
    digits = re.sub(r"\D", "", raw)
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return f"+86{digits}"


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=SHOP_TZ)


class _Invalid(Exception):
    """A request parameter Shopify would refuse: answered 400 with ``{"errors": {field: message}}``."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class ShopifySimulator(Simulator):
    """Shopify's REST Admin API for one shop. ``bucket_size``, ``leak_rate`` and ``retry_after`` are
    the real limits by default; tests lower them to stay fast."""

    system = "shopify"
    webhook_secret = "shpss_memberhub_simulator"
    """The app's client secret, which signs the webhooks this shop sends."""

    def __init__(
        self,
        world: World,
        *,
        token: str,
        state_dir: Path | None = None,
        bucket_size: int = 40,
        leak_rate: float = 2.0,
        retry_after: float = 2.0,
    ) -> None:
        super().__init__(token=token, state_dir=state_dir)
        self.bucket = LeakyBucket(bucket_size, leak_rate)
        self.retry_after = retry_after
        members = sorted(world.members.get(self.system, []), key=lambda m: (m.created_at, m.person_id))
        orders = sorted(world.orders.get(self.system, []), key=lambda o: (o.ordered_at, o.person_id))
        self._person: dict[int, int] = {}
        customer_of: dict[int, int] = {}
        for n, member in enumerate(members, start=1):
            self._person[CUSTOMER_BASE + n] = member.person_id
            customer_of[member.person_id] = CUSTOMER_BASE + n
        self._orders: dict[int, dict[str, Any]] = {}
        spent: dict[int, list[Any]] = {}
        self._copies: dict[int, tuple[int, OrderCopy]] = {}  # order id -> (its number, what it was made from)
        for n, order in enumerate(orders, start=1):
            customer_id = customer_of[order.person_id]
            record = self._order(n, order, customer_id)
            self._orders[record["id"]] = record
            self._copies[record["id"]] = (n, order)
            tally = spent.setdefault(customer_id, [0, Decimal(0), None])
            tally[0] += 1
            if record["cancelled_at"] is None:
                tally[1] += Decimal(record["current_total_price"])
            tally[2] = record
        self._customers: dict[int, dict[str, Any]] = {}
        for n, member in enumerate(members, start=1):
            record = self._customer(CUSTOMER_BASE + n, member, spent.get(CUSTOMER_BASE + n))
            self._customers[record["id"]] = record
        for record in self._orders.values():
            buyer = self._customers[record["customer"]["id"]]
            record["email"] = record["contact_email"] = buyer["email"]
            record["customer"].update(
                email=buyer["email"], first_name=buyer["first_name"], last_name=buyer["last_name"], phone=buyer["phone"]
            )
        self._customer_ids = sorted(self._customers)
        self._order_ids = sorted(self._orders)
        self.metafields: dict[int, dict[str, Any]] = {}
        self._owned: dict[tuple[int, str, str], int] = {}  # (customer, namespace, key) -> metafield id
        self._next_metafield = METAFIELD_BASE + 1
        self.customer_tags: dict[int, str] = {}  # tags written through the API, kept by save()

        self.route("GET", rf"{API}/shop\.json", self._limited(self._shop))
        self.route("GET", rf"{API}/customers\.json", self._limited(self._list_customers))
        self.route("GET", rf"{API}/customers/(?P<id>\d+)\.json", self._limited(self._get_customer))
        self.route("PUT", rf"{API}/customers/(?P<id>\d+)\.json", self._limited(self._update_customer))
        self.route("GET", rf"{API}/orders\.json", self._limited(self._list_orders))
        self.route("GET", rf"{API}/customers/(?P<id>\d+)/metafields\.json", self._limited(self._list_metafields))
        self.route("POST", rf"{API}/customers/(?P<id>\d+)/metafields\.json", self._limited(self._create_metafield))
        self.route(
            "PUT",
            rf"{API}/customers/(?P<id>\d+)/metafields/(?P<mid>\d+)\.json",
            self._limited(self._update_metafield),
        )

    # ------------------------------------------------------------------------- world -> records
    def _customer(self, customer_id: int, member: MemberCopy, tally: list[Any] | None) -> dict[str, Any]:
        count, total, last = tally or (0, Decimal(0), None)
        subscribed = member.consent and member.email is not None
        address = None
        if member.city:
            address = {
                "id": ADDRESS_BASE + (customer_id - CUSTOMER_BASE),
                "customer_id": customer_id,
                "first_name": member.given_name,
                "last_name": member.family_name,
                "company": None,
                "address1": None,
                "address2": None,
                "city": member.city,
                "province": None,
                "country": "China",
                "zip": None,
                "phone": _e164(member.phone),
                "name": " ".join(p for p in (member.given_name, member.family_name) if p),
                "province_code": None,
                "country_code": "CN",
                "country_name": "China",
                "default": True,
            }
        return {
            "id": customer_id,
            "email": member.email,
            "created_at": _stamp(member.created_at),
            "updated_at": _stamp(member.updated_at),
            "first_name": member.given_name,
            "last_name": member.family_name,
            "orders_count": count,
            "state": "enabled" if member.email else "disabled",
            "total_spent": _money(total),
            "last_order_id": last["id"] if last else None,
            "note": None,
            "verified_email": member.email is not None,
            "multipass_identifier": None,
            "tax_exempt": False,
            "tags": "",
            "last_order_name": last["name"] if last else None,
            "currency": CURRENCY,
            "phone": _e164(member.phone),
            "addresses": [address] if address else [],
            "tax_exemptions": [],
            "email_marketing_consent": None
            if member.email is None
            else {
                "state": "subscribed" if subscribed else "not_subscribed",
                "opt_in_level": "single_opt_in",
                "consent_updated_at": _stamp(member.created_at) if subscribed else None,
            },
            "sms_marketing_consent": None,
            "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
            "default_address": address,
        }

    def _order(self, n: int, order: OrderCopy, customer_id: int) -> dict[str, Any]:
        order_id = ORDER_BASE + n
        total = order.total
        cancelled = order.status == "cancelled"
        refunded = order.status == "refunded"
        closed_at = None
        if cancelled or refunded or order.ordered_at < EPOCH - ARCHIVE_AFTER:
            closed_at = _stamp(order.updated_at)
        line_items = []
        for i, (sku, title, quantity, price) in enumerate(order.lines):
            product = next(p for p, (code, _, _) in enumerate(PRODUCTS) if code == sku)
            line_items.append(
                {
                    "id": LINE_BASE + n * 10 + i,
                    "admin_graphql_api_id": f"gid://shopify/LineItem/{LINE_BASE + n * 10 + i}",
                    "product_id": PRODUCT_BASE + product,
                    "variant_id": PRODUCT_BASE + 100_000 + product,
                    "sku": sku,
                    "title": title,
                    "name": title,
                    "variant_title": None,
                    "vendor": "MemberHub 示例商店",
                    "quantity": quantity,
                    "current_quantity": 0 if (cancelled or refunded) else quantity,
                    "fulfillable_quantity": 0,
                    "fulfillment_status": None if cancelled else "fulfilled",
                    "price": _money(price),
                    "price_set": {
                        "shop_money": {"amount": _money(price), "currency_code": CURRENCY},
                        "presentment_money": {"amount": _money(price), "currency_code": CURRENCY},
                    },
                    "total_discount": "0.00",
                    "taxable": True,
                    "requires_shipping": True,
                    "gift_card": False,
                }
            )
        refunds = []
        if refunded:
            refund_at = _stamp(order.updated_at)
            refunds.append(
                {
                    "id": REFUND_BASE + n,
                    "admin_graphql_api_id": f"gid://shopify/Refund/{REFUND_BASE + n}",
                    "order_id": order_id,
                    "created_at": refund_at,
                    "processed_at": refund_at,
                    "note": "顾客退货",
                    "restock": True,
                    "user_id": None,
                    "order_adjustments": [],
                    "transactions": [
                        {
                            "id": TRANSACTION_BASE + n,
                            "order_id": order_id,
                            "kind": "refund",
                            "gateway": "shopify_payments",
                            "status": "success",
                            "amount": _money(order.refunded),
                            "currency": CURRENCY,
                            "created_at": refund_at,
                            "processed_at": refund_at,
                            "parent_id": None,
                        }
                    ],
                    "refund_line_items": [
                        {
                            "id": REFUND_LINE_BASE + n * 10 + i,
                            "line_item_id": line["id"],
                            "quantity": line["quantity"],
                            "restock_type": "return",
                            "subtotal": _money(Decimal(line["price"]) * line["quantity"]),
                            "total_tax": "0.00",
                        }
                        for i, line in enumerate(line_items)
                    ],
                }
            )
        financial = "paid"
        if refunded:
            financial = "refunded" if order.refunded >= total else "partially_refunded"
        elif cancelled:
            financial = "voided"
        current = Decimal(0) if cancelled else total - order.refunded
        return {
            "id": order_id,
            "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
            "name": f"#{1000 + n}",
            "number": n,
            "order_number": 1000 + n,
            "email": None,
            "contact_email": None,
            "created_at": _stamp(order.ordered_at),
            "updated_at": _stamp(order.updated_at),
            "processed_at": _stamp(order.ordered_at),
            "closed_at": closed_at,
            "cancelled_at": _stamp(order.updated_at) if cancelled else None,
            "cancel_reason": "customer" if cancelled else None,
            "financial_status": financial,
            "fulfillment_status": None if cancelled else "fulfilled",
            "confirmed": True,
            "test": False,
            "currency": CURRENCY,
            "presentment_currency": CURRENCY,
            "total_price": _money(total),
            "subtotal_price": _money(total),
            "total_line_items_price": _money(total),
            "total_discounts": "0.00",
            "total_tax": "0.00",
            "taxes_included": True,
            "current_total_price": _money(current),
            "current_subtotal_price": _money(current),
            "source_name": "web",
            "tags": "",
            "note": None,
            "customer": {
                "id": customer_id,
                "currency": CURRENCY,
                "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
            },
            "line_items": line_items,
            "refunds": refunds,
        }

    # ------------------------------------------------------------------------- system answers
    def authorised(self, request: Request) -> bool:
        return request.headers.get("x-shopify-access-token") == self.token

    def unauthorised(self, request: Request) -> Response:
        return Response(401, {"errors": UNAUTHORISED})

    def rate_limited(self, request: Request) -> Response:
        return Response(429, {"errors": THROTTLED}, {"Retry-After": f"{self.retry_after:.1f}"})

    def server_error(self, request: Request, status: int) -> Response:
        text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        return Response(status, {"errors": text.get(status, "Internal Server Error")})

    def decorate(self, request: Request, response: Response) -> None:
        with self.lock:
            response.headers["X-Shopify-Shop-Api-Call-Limit"] = self.bucket.header()
        response.headers.setdefault("X-Shopify-API-Version", "2025-01")

    def _limited(self, handler: Callable[[Request, re.Match[str]], Response]) -> Callable[..., Response]:
        def limited(request: Request, match: re.Match[str]) -> Response:
            if not self.bucket.take():
                return self.rate_limited(request)
            try:
                return handler(request, match)
            except _Invalid as exc:
                return Response(exc.status, {"errors": {exc.field: exc.message}})

        return limited

    # ------------------------------------------------------------------------- reads
    def _shop(self, request: Request, match: re.Match[str]) -> Response:
        return Response(
            200,
            {
                "shop": {
                    "id": 60_000_000_001,
                    "name": "MemberHub 示例商店",
                    "myshopify_domain": "memberhub-demo.myshopify.com",
                    "currency": CURRENCY,
                    "iana_timezone": "Asia/Shanghai",
                    "timezone": "(GMT+08:00) Asia/Shanghai",
                    "country_code": "CN",
                    "plan_name": "basic",
                }
            },
        )

    def _get_customer(self, request: Request, match: re.Match[str]) -> Response:
        customer = self._customers.get(int(match["id"]))
        if customer is None:
            return self.not_found(request)
        return Response(200, {"customer": customer})

    def _list_customers(self, request: Request, match: re.Match[str]) -> Response:
        return self._list(request, "customers", self._customers, self._customer_ids, self._customer_filter)

    def _list_orders(self, request: Request, match: re.Match[str]) -> Response:
        return self._list(request, "orders", self._orders, self._order_ids, self._order_filter)

    def _customer_filter(self, filters: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        return _time_filters(filters, ("created_at", "updated_at"))

    def _order_filter(self, filters: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        timed = _time_filters(filters, ("created_at", "updated_at", "processed_at"))
        status = filters.get("status", "open")
        if status not in ("open", "closed", "cancelled", "any"):
            raise _Invalid("status", f"status must be one of open, closed, cancelled, any (got {status!r})")
        financial = filters.get("financial_status", "any")

        def keep(order: dict[str, Any]) -> bool:
            if status == "open" and order["closed_at"] is not None:
                return False
            if status == "closed" and order["closed_at"] is None:
                return False
            if status == "cancelled" and order["cancelled_at"] is None:
                return False
            if financial != "any" and order["financial_status"] != financial:
                return False
            return timed(order)

        return keep

    def _list(
        self,
        request: Request,
        resource: str,
        records: dict[int, dict[str, Any]],
        ids: list[int],
        make_filter: Callable[[dict[str, str]], Callable[[dict[str, Any]], bool]],
    ) -> Response:
        limit = _int_arg(request, "limit", 50)
        if not 1 <= limit <= 250:
            raise _Invalid("limit", "limit must be between 1 and 250")
        fields = [f for f in (request.arg("fields") or "").split(",") if f]
        page_info = request.arg("page_info")
        if page_info is not None:
            extra = sorted(set(request.query) - PAGING_ONLY)
            if extra:
                raise _Invalid(
                    "page_info",
                    f"page_info cannot be combined with {', '.join(extra)}: the filters travel inside page_info",
                )
            cursor = _decode_page_info(page_info)
            filters, direction, anchor = cursor["filters"], cursor["direction"], cursor["anchor"]
        else:
            filters = {k: v[0] for k, v in request.query.items() if k not in PAGING_ONLY and v}
            direction, anchor = "next", None
        keep = make_filter(filters)
        since_id = _int_text(filters.get("since_id"), "since_id")
        ids_filter = {_int_text(x, "ids") for x in filters["ids"].split(",")} if filters.get("ids") else None

        def matches(record_id: int) -> bool:
            if ids_filter is not None and record_id not in ids_filter:
                return False
            return keep(records[record_id])

        start = bisect.bisect_right(ids, since_id) if since_id else 0
        if direction == "next":
            position = start if anchor is None else max(start, bisect.bisect_right(ids, anchor))
            page, beyond = _scan(ids, position, 1, limit, matches)
            has_after = beyond is not None
            has_before = (  # a first page never links back, so only a page_info request looks
                page_info is not None
                and bool(page)
                and _first(ids, bisect.bisect_left(ids, page[0]) - 1, -1, matches, start) is not None
            )
        else:
            page, beyond = _scan(ids, bisect.bisect_left(ids, anchor) - 1, -1, limit, matches, stop=start)
            page.reverse()
            has_before = beyond is not None
            has_after = bool(page) and _first(ids, bisect.bisect_right(ids, page[-1]), 1, matches) is not None
        body = [_pick(records[i], fields) for i in page]
        links = []
        if has_before:
            links.append(self._link(request, resource, limit, fields, filters, "previous", page[0]))
        if has_after:
            links.append(self._link(request, resource, limit, fields, filters, "next", page[-1]))
        headers = {"Link": ", ".join(links)} if links else {}
        return Response(200, {resource: body}, headers)

    def _link(
        self,
        request: Request,
        resource: str,
        limit: int,
        fields: list[str],
        filters: dict[str, str],
        rel: str,
        anchor: int,
    ) -> str:
        token = _encode_page_info({"filters": filters, "direction": rel, "anchor": anchor})
        query = {"limit": limit, "page_info": token}
        if fields:
            query["fields"] = ",".join(fields)
        host = request.headers.get("host", "127.0.0.1")
        return f'<http://{host}{API}/{resource}.json?{urlencode(query)}>; rel="{rel}"'

    # ------------------------------------------------------------------------- metafields
    def _owner(self, match: re.Match[str]) -> int:
        customer_id = int(match["id"])
        if customer_id not in self._customers:
            raise _Invalid("customer", "Not Found", status=404)
        return customer_id

    def _list_metafields(self, request: Request, match: re.Match[str]) -> Response:
        try:
            owner = self._owner(match)
        except _Invalid:
            return self.not_found(request)
        namespace, key = request.arg("namespace"), request.arg("key")
        found = [
            self.metafields[mid]
            for (customer, ns, k), mid in sorted(self._owned.items(), key=lambda item: item[1])
            if customer == owner and (namespace is None or ns == namespace) and (key is None or k == key)
        ]
        return Response(200, {"metafields": found})

    def _create_metafield(self, request: Request, match: re.Match[str]) -> Response:
        try:
            owner = self._owner(match)
        except _Invalid:
            return self.not_found(request)
        given = _metafield_body(request)
        errors: dict[str, list[str]] = {}
        for name in ("namespace", "key", "type", "value"):
            if given.get(name) in (None, ""):
                errors.setdefault(name, []).append("can't be blank")
        if errors:
            return Response(422, {"errors": errors})
        namespace, key, kind = str(given["namespace"]), str(given["key"]), str(given["type"])
        value = _checked_value(kind, given["value"])
        if isinstance(value, dict):
            return Response(422, {"errors": value})
        if (owner, namespace, key) in self._owned:
            return Response(422, {"errors": {"key": ["must be unique within this namespace on this resource"]}})
        now = _stamp(datetime.now(SHOP_TZ))
        metafield_id = self._next_metafield
        self._next_metafield += 1
        metafield = {
            "id": metafield_id,
            "namespace": namespace,
            "key": key,
            "value": value,
            "description": given.get("description"),
            "owner_id": owner,
            "created_at": now,
            "updated_at": now,
            "owner_resource": "customer",
            "type": kind,
            "admin_graphql_api_id": f"gid://shopify/Metafield/{metafield_id}",
        }
        self.metafields[metafield_id] = metafield
        self._owned[(owner, namespace, key)] = metafield_id
        return Response(201, {"metafield": metafield})

    def _update_metafield(self, request: Request, match: re.Match[str]) -> Response:
        owner = int(match["id"])
        metafield = self.metafields.get(int(match["mid"]))
        if owner not in self._customers or metafield is None or metafield["owner_id"] != owner:
            return self.not_found(request)
        given = _metafield_body(request)
        kind = str(given.get("type") or metafield["type"])
        if "value" not in given:
            return Response(422, {"errors": {"value": ["can't be blank"]}})
        value = _checked_value(kind, given["value"])
        if isinstance(value, dict):
            return Response(422, {"errors": value})
        metafield.update(value=value, type=kind, updated_at=_stamp(datetime.now(SHOP_TZ)))
        return Response(200, {"metafield": metafield})

    def _update_customer(self, request: Request, match: re.Match[str]) -> Response:
        """``PUT customers/{id}.json``: the hub writes only ``tags`` (a comma-separated string, as Shopify
        keeps them: trimmed, duplicates dropped, at most 250 of 255 characters each)."""
        customer = self._customers.get(int(match["id"]))
        if customer is None:
            return self.not_found(request)
        given = request.json()
        fields = given.get("customer") if isinstance(given, dict) else None
        if not isinstance(fields, dict):
            raise _Invalid("customer", "Required parameter missing or invalid")
        unknown = sorted(set(fields) - {"id", "tags"})
        if unknown:
            raise _Invalid(unknown[0], "is not writable through this simulator")
        if "tags" in fields:
            tags = list(dict.fromkeys(t.strip() for t in str(fields["tags"] or "").split(",") if t.strip()))
            if len(tags) > 250 or any(len(t) > 255 for t in tags):
                raise _Invalid("tags", "too many tags or a tag is longer than 255 characters", status=422)
            self.customer_tags[customer["id"]] = ", ".join(tags)
            customer.update(tags=", ".join(tags), updated_at=_stamp(datetime.now(SHOP_TZ)))
        return Response(200, {"customer": customer})

    # ------------------------------------------------------------------------- hub and tests
    def truth(self) -> dict[str, str | int]:
        return {str(customer_id): person for customer_id, person in self._person.items()}

    def loyalty(self) -> dict[str, tuple[int | None, str | None]]:
        with self.lock:
            shown: dict[str, tuple[int | None, str | None]] = {}
            for customer_id in self._customer_ids:
                points = self._owned.get((customer_id, "loyalty", "points"))
                tier = self._owned.get((customer_id, "loyalty", "tier"))
                shown[str(customer_id)] = (
                    int(self.metafields[points]["value"]) if points else None,
                    self.metafields[tier]["value"] if tier else None,
                )
            return shown

    def touch(self, customer_id: int | str, **fields: Any) -> dict[str, Any]:
        """Change a customer as a shop admin would (for tests and benchmarks): set ``fields`` and move
        ``updated_at`` to now. Not kept by ``save``: a restarted simulator shows the generated shop."""
        with self.lock:
            customer = self._customers[int(customer_id)]
            customer.update(fields, updated_at=_stamp(datetime.now(SHOP_TZ)))
            return customer

    def place_order(self, customer_id: int | str, lines: list[tuple[str, int]]) -> dict[str, Any]:
        """A customer buys online now (for tests): a new paid order of ``(sku, quantity)`` lines at the
        catalogue's prices. Like ``touch``, not kept by ``save``."""
        with self.lock:
            customer = self._customers[int(customer_id)]
            prices = {sku: (title, price) for sku, title, price in PRODUCTS}
            now = datetime.now(UTC)
            copy = OrderCopy(
                person_id=self._person[customer["id"]],
                system=self.system,
                store_code="ONLINE",
                ordered_at=now,
                updated_at=now,
                lines=[(sku, prices[sku][0], quantity, prices[sku][1]) for sku, quantity in lines],
                status="paid",
            )
            return self._put_order(max(n for n, _ in self._copies.values()) + 1, copy, customer["id"])

    def refund_order(self, order_id: int | str, amount: Decimal | None = None) -> dict[str, Any]:
        """The shop refunds an order now (for tests), wholly unless ``amount`` is given."""
        with self.lock:
            n, copy = self._copies[int(order_id)]
            refunded = replace(copy, status="refunded", refunded=amount or copy.total, updated_at=datetime.now(UTC))
            return self._put_order(n, refunded, self._orders[int(order_id)]["customer"]["id"])

    def _put_order(self, n: int, copy: OrderCopy, customer_id: int) -> dict[str, Any]:
        record = self._order(n, copy, customer_id)
        buyer = self._customers[customer_id]
        record["email"] = record["contact_email"] = buyer["email"]
        record["customer"].update(
            email=buyer["email"], first_name=buyer["first_name"], last_name=buyer["last_name"], phone=buyer["phone"]
        )
        if record["id"] not in self._orders:
            bisect.insort(self._order_ids, record["id"])
        self._orders[record["id"]] = record
        self._copies[record["id"]] = (n, copy)
        return record

    def send_webhook(self, url: str, topic: str, resource: dict[str, Any] | int | str) -> httpx.Response:
        """Send the webhook Shopify sends for a change, signed with ``webhook_secret``: ``resource``
        is the customer or order (or its id) as the API now shows it."""
        if not isinstance(resource, dict):
            with self.lock:
                table = self._orders if topic.startswith("orders/") else self._customers
                resource = dict(table[int(resource)])
        domain = "memberhub-sim.myshopify.com"
        return deliver(url, shopify_webhook(self.webhook_secret, topic, resource, shop_domain=domain))

    def customers(self) -> list[dict[str, Any]]:
        """Every customer as the API shows it, in id order (for tests)."""
        return [self._customers[i] for i in self._customer_ids]

    def orders(self) -> list[dict[str, Any]]:
        """Every order as the API shows it, in id order (for tests)."""
        return [self._orders[i] for i in self._order_ids]

    def state(self) -> dict[str, Any]:
        return {
            "metafields": list(self.metafields.values()),
            "next_metafield": self._next_metafield,
            "customer_tags": {str(k): v for k, v in self.customer_tags.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.metafields = {int(m["id"]): m for m in state.get("metafields", [])}
            self._owned = {(m["owner_id"], m["namespace"], m["key"]): i for i, m in self.metafields.items()}
            self._next_metafield = max(int(state.get("next_metafield", 0)), self._next_metafield)
            for key, tags in state.get("customer_tags", {}).items():
                if int(key) in self._customers:
                    self.customer_tags[int(key)] = tags
                    self._customers[int(key)]["tags"] = tags


# ----------------------------------------------------------------------------- helpers
def _scan(
    ids: list[int],
    position: int,
    step: int,
    limit: int,
    matches: Callable[[int], bool],
    *,
    stop: int = 0,
) -> tuple[list[int], int | None]:
    """Up to ``limit`` matching ids from ``position`` walking by ``step``, and the next match beyond
    them (None when there is none): that one decides whether a further page exists."""
    found: list[int] = []
    index = position
    while stop <= index < len(ids):
        record_id = ids[index]
        if matches(record_id):
            if len(found) == limit:
                return found, record_id
            found.append(record_id)
        index += step
    return found, None


def _first(ids: list[int], position: int, step: int, matches: Callable[[int], bool], stop: int = 0) -> int | None:
    """The first matching id from ``position`` walking by ``step``, or None."""
    index = position
    while stop <= index < len(ids):
        if matches(ids[index]):
            return ids[index]
        index += step
    return None


def _time_filters(filters: dict[str, str], fields: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    bounds: list[tuple[str, datetime, bool]] = []
    for field in fields:
        for suffix, is_min in (("_min", True), ("_max", False)):
            text = filters.get(field + suffix)
            if text:
                try:
                    bounds.append((field, _parse_time(text), is_min))
                except ValueError:
                    raise _Invalid(field + suffix, f"{text!r} is not a valid ISO 8601 time") from None
    parsed: dict[str, datetime] = {}

    def keep(record: dict[str, Any]) -> bool:
        for field, bound, is_min in bounds:
            text = record[field]
            moment = parsed.get(text)
            if moment is None:
                moment = parsed[text] = datetime.fromisoformat(text)
            if (moment < bound) if is_min else (moment > bound):
                return False
        return True

    return keep


def _int_arg(request: Request, name: str, default: int) -> int:
    return _int_text(request.arg(name), name) if request.arg(name) not in (None, "") else default


def _int_text(text: str | None, name: str) -> int:
    if text in (None, ""):
        return 0
    try:
        return int(str(text))
    except ValueError:
        raise _Invalid(name, f"{name} must be an integer") from None


def _pick(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in fields} if fields else record


def _encode_page_info(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_info(token: str) -> dict[str, Any]:
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if cursor["direction"] not in ("next", "previous") or not isinstance(cursor["anchor"], int):
            raise ValueError
        return cursor
    except (ValueError, KeyError, TypeError):
        raise _Invalid("page_info", "Invalid value.") from None


def _metafield_body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        body = None
    metafield = body.get("metafield") if isinstance(body, dict) else None
    if not isinstance(metafield, dict):
        raise _Invalid("metafield", "Required parameter missing or invalid")
    return metafield


def _checked_value(kind: str, value: Any) -> str | dict[str, list[str]]:
    if kind not in METAFIELD_TYPES:
        return {"type": [f"{kind!r} is not a type this shop accepts ({', '.join(sorted(METAFIELD_TYPES))})"]}
    text = str(value)
    if kind == "number_integer" and not re.fullmatch(r"-?\d{1,19}", text):
        return {"value": ["must be an integer"]}
    if kind == "single_line_text_field" and ("\n" in text or len(text) > 65535):
        return {"value": ["must be a single line"]}
    return text
