"""Square (``/v2/``, Square-Version 2025-08-20): customers listed, or searched by ``updated_at``;
orders searched over the configured locations (ten per query) sorted by ``updated_at`` ascending,
so each page of a single query carries its own cursor. Points go back as deltas on the customer's
loyalty account, each with the hub's idempotency key; the tier as the ``loyalty_tier`` customer
custom attribute, 25 per bulk upsert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, ClassVar

from connectors._http import ApiClient
from connectors._paging import Fetched, Watermark, paginator, utc_iso
from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import ConfigError, ConnectorError, FatalError

SQUARE_VERSION = "2025-08-20"
MAX_CUSTOMERS = 100
MAX_ORDERS = 1000
LOCATIONS_PER_QUERY = 10
ACCOUNTS_PER_SEARCH = 30
ATTRIBUTES_PER_UPSERT = 25
TIER_KEY = "loyalty_tier"
STRING_SCHEMA = "https://developer-production-s.squarecdn.com/schemas/v1/common.json#squareup.common.String"
REFUSED = (400, 404, 409)


class _Refused(Exception):
    """Square refused one customer's write; the batch goes on."""


class SquareConnector(Connector):
    kind: ClassVar[str] = "square"
    channel: ClassVar[Channel] = Channel.pos
    streams: ClassVar[tuple[Stream, ...]] = (Stream("customers", "members"), Stream("orders", "orders"))
    paging = paginator("body_cursor", cursor_path="cursor", cursor_param="cursor")

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        super().__init__(name, config)
        self._client = self._make_client(config.timeout_seconds)
        self._program: str | None = None
        self._tier_defined = False

    def _make_client(self, timeout: float, **options: Any) -> ApiClient:
        options.setdefault("max_wait", self.config.max_retry_wait_seconds)
        token = self.config.token.get_secret_value() if self.config.token else ""
        return ApiClient(
            self.name,
            self.config.base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Square-Version": SQUARE_VERSION,
                "Accept": "application/json",
            },
            timeout=timeout,
            **options,
        )

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------------- read
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        if stream == "customers":
            return self._read_customers(since)
        return self._read_orders(since)

    def _read_customers(self, since: str | None) -> Iterator[Page]:
        """Neither listing is ordered by update time (search sorts by creation at best), so only
        the last page carries a cursor."""
        limit = min(self.config.page_size or MAX_CUSTOMERS, MAX_CUSTOMERS)
        if since is None:
            pages = self.paging.pages(self._client, "GET", "/v2/customers", params={"limit": limit})
        else:
            query = {
                "filter": {"updated_at": {"start_at": utc_iso(since)}},
                "sort": {"field": "CREATED_AT", "order": "ASC"},
            }
            pages = self.paging.pages(
                self._client, "POST", "/v2/customers/search", body={"limit": limit, "query": query}
            )
        mark = Watermark("updated_at")
        for data, _ in pages:
            records = _records(data, "customers", self.name)
            mark.see(records)
            yield Page(records=records, cursor=None if data.get("cursor") else mark.cursor())

    def _read_orders(self, since: str | None) -> Iterator[Page]:
        """One query per ten locations, each sorted by ``updated_at`` ascending (the sort must match
        the date filter). With one query every page's last time is a safe cursor; with several,
        only the end of the last one is."""
        locations = list(dict.fromkeys(self.config.locations))
        if not locations:
            raise ConfigError(
                f"connector {self.name!r}: no Square locations configured; list them under "
                f"connectors.{self.name}.locations (`memberhub connectors check {self.name}` shows the seller's)"
            )
        query: dict[str, Any] = {"sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}
        if since is not None:
            query["filter"] = {"date_time_filter": {"updated_at": {"start_at": utc_iso(since)}}}
        limit = min(self.config.page_size or MAX_ORDERS, MAX_ORDERS)
        batches = [locations[i : i + LOCATIONS_PER_QUERY] for i in range(0, len(locations), LOCATIONS_PER_QUERY)]
        mark = Watermark("updated_at")
        for number, batch in enumerate(batches, start=1):
            body = {"location_ids": batch, "limit": limit, "query": query}
            for data, _ in self.paging.pages(self._client, "POST", "/v2/orders/search", body=body):
                records = _records(data, "orders", self.name)
                mark.see(records)
                done = number == len(batches) and not data.get("cursor")
                yield Page(records=records, cursor=mark.cursor() if len(batches) == 1 or done else None)

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        where = self.config.base_url
        with self._make_client(min(self.config.timeout_seconds, 10.0), max_attempts=2) as client:
            try:
                data, response = client.json_response("GET", "/v2/locations", accept=(401, 403, 404))
            except ConnectorError as exc:
                return [CheckStep("reach", False, f"{where} did not answer: {exc}")]
            steps = [CheckStep("reach", True, f"{where} answered HTTP {response.status_code}")]
            if response.status_code != 200:
                steps.append(CheckStep("authenticate", False, f"Square refused the access token: {_reason(data)}"))
                return steps
            steps.append(CheckStep("authenticate", True, "the access token can list locations"))
            known = {loc["id"]: loc.get("name", "") for loc in data.get("locations", [])}
            missing = [loc for loc in self.config.locations if loc not in known]
            available = ", ".join(f"{i} ({n})" for i, n in known.items()) or "none"
            if not self.config.locations or missing:
                problem = f"not this seller's: {', '.join(missing)}" if missing else "none configured"
                steps.append(CheckStep("locations", False, f"{problem}; the seller has: {available}"))
            else:
                names = ", ".join(known[loc] for loc in self.config.locations)
                steps.append(CheckStep("locations", True, f"{len(self.config.locations)} locations: {names}"))
            try:
                customers = client.json("GET", "/v2/customers", params={"limit": 1}).get("customers", [])
                found = f"customers: {'id ' + customers[0]['id'] if customers else 'none yet'}"
                usable = [loc for loc in self.config.locations if loc in known][:LOCATIONS_PER_QUERY]
                if usable:
                    body = {"location_ids": usable, "limit": 1}
                    orders = client.json("POST", "/v2/orders/search", json=body).get("orders", [])
                    found += f"; orders: {'id ' + orders[0]['id'] if orders else 'none yet'}"
                steps.append(CheckStep("sample read", True, "read one of each — " + found))
            except (ConnectorError, AttributeError, KeyError, TypeError) as exc:
                steps.append(CheckStep("sample read", False, f"reading customers and orders failed: {exc}"))
            if self.config.writeback:
                try:
                    data, response = client.json_response("GET", "/v2/loyalty/programs/main", accept=(404,))
                    if response.status_code == 404:
                        steps.append(
                            CheckStep("loyalty", False, "no loyalty program: create one in the Square Dashboard")
                        )
                    else:
                        program = data.get("program", {})
                        steps.append(
                            CheckStep("loyalty", True, f"program {program.get('id')} is {program.get('status')}")
                        )
                except ConnectorError as exc:
                    steps.append(CheckStep("loyalty", False, f"reading the loyalty program failed: {exc}"))
            return steps

    # ------------------------------------------------------------------------- write-back
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        """Points: find the customer's loyalty account (or enrol their phone), then adjust by the
        change since what Square last acknowledged (else since its balance) under the update's
        idempotency key, so a resend never applies twice. Tier: bulk upserts of ``loyalty_tier``."""
        failures: dict[int, list[str]] = {}
        remote: dict[int, dict[str, Any]] = {}
        program = self._program_id()
        if updates:
            self._define_tier()
        searched = [u.external_id for u in updates if u.acknowledged_points is None or not _account_id(u)]
        accounts = self._accounts_of(searched)
        for index, update in enumerate(updates):
            try:
                if program is None:
                    raise _Refused("this seller has no loyalty program; create one in the Square Dashboard")
                account_id, balance = self._account(update, accounts.get(update.external_id), program)
                remote[index] = {"loyalty_account_id": account_id}
                base = update.acknowledged_points if update.acknowledged_points is not None else balance
                if base is None:
                    raise _Refused(f"the balance of loyalty account {account_id} is unknown")
                if update.points != base:
                    self._adjust(account_id, update, update.points - base)
            except _Refused as exc:
                failures.setdefault(index, []).append(f"points: {exc}")
        for start in range(0, len(updates), ATTRIBUTES_PER_UPSERT):
            for index, reason in self._upsert_tiers(updates[start : start + ATTRIBUTES_PER_UPSERT], start).items():
                failures.setdefault(index, []).append(f"tier: {reason}")
        return [
            WritebackResult(
                update.external_id,
                index not in failures,
                "; ".join(failures[index]) if index in failures else None,
                remote.get(index, {}),
            )
            for index, update in enumerate(updates)
        ]

    def _program_id(self) -> str | None:
        if self._program is None:
            data, response = self._client.json_response("GET", "/v2/loyalty/programs/main", accept=(404,))
            if response.status_code == 404:
                return None
            self._program = str(data["program"]["id"])
        return self._program

    def _define_tier(self) -> None:
        if self._tier_defined:
            return
        url = f"/v2/customers/custom-attribute-definitions/{TIER_KEY}"
        _, response = self._client.json_response("GET", url, accept=(404,))
        if response.status_code == 404:
            definition = {
                "key": TIER_KEY,
                "name": "会员等级 Membership tier",
                "description": "Written by MemberHub: the member's tier code across every store and system.",
                "schema": {"$ref": STRING_SCHEMA},
                "visibility": "VISIBILITY_READ_ONLY",
            }
            body = {"custom_attribute_definition": definition, "idempotency_key": "memberhub-define-loyalty-tier"}
            self._client.json_response("POST", "/v2/customers/custom-attribute-definitions", json=body, accept=(409,))
        self._tier_defined = True

    def _accounts_of(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(customer_ids), ACCOUNTS_PER_SEARCH):
            query = {"customer_ids": customer_ids[start : start + ACCOUNTS_PER_SEARCH]}
            for data, _ in self.paging.pages(
                self._client, "POST", "/v2/loyalty/accounts/search", body={"query": query, "limit": 200}
            ):
                for account in data.get("loyalty_accounts", []):
                    found.setdefault(account.get("customer_id"), account)
        return found

    def _account(self, update: WritebackUpdate, found: dict[str, Any] | None, program: str) -> tuple[str, int | None]:
        """The customer's loyalty account id and, when it was fetched, its balance."""
        if found is not None:
            return str(found["id"]), int(found.get("balance", 0))
        known = _account_id(update)
        if known:
            if update.acknowledged_points is not None:
                return known, None
            data, response = self._call("GET", f"/v2/loyalty/accounts/{known}")
            if response.status_code == 200:
                return known, int(data["loyalty_account"].get("balance", 0))
        if not update.phone:
            raise _Refused("the customer has no phone number, and Square keys loyalty accounts by phone")
        account = {"program_id": program, "mapping": {"phone_number": update.phone}}
        key = _key("enrol", update.external_id, update.phone)
        data, response = self._call(
            "POST", "/v2/loyalty/accounts", {"loyalty_account": account, "idempotency_key": key}
        )
        if response.status_code == 409:
            data = self._call("POST", "/v2/loyalty/accounts/search", {"query": {"mappings": [account["mapping"]]}})[0]
            matches = data.get("loyalty_accounts", [])
            if not matches:
                raise _Refused(f"Square says {update.phone} is enrolled but cannot find its account")
            created = matches[0]
        elif response.status_code >= 300:
            raise _Refused(f"enrolling {update.phone} was refused: {_reason(data)}")
        else:
            created = data["loyalty_account"]
        owner = created.get("customer_id")
        if owner not in (None, update.external_id):
            raise _Refused(f"the loyalty account for {update.phone} belongs to customer {owner}, not this one")
        return str(created["id"]), int(created.get("balance", 0))

    def _adjust(self, account_id: str, update: WritebackUpdate, delta: int) -> None:
        key = update.idempotency_key or _key("adjust", update.external_id, update.acknowledged_points, update.points)
        body = {
            "idempotency_key": key,
            "adjust_points": {"points": delta, "reason": f"MemberHub: balance set to {update.points}"},
            "allow_negative_balance": False,
        }
        data, response = self._call("POST", f"/v2/loyalty/accounts/{account_id}/adjust", body)
        if response.status_code >= 300:
            raise _Refused(f"adjusting account {account_id} by {delta} was refused: {_reason(data)}")

    def _upsert_tiers(self, chunk: list[WritebackUpdate], offset: int) -> dict[int, str]:
        values = {
            str(offset + i): {
                "customer_id": update.external_id,
                "custom_attribute": {"key": TIER_KEY, "value": update.tier},
                "idempotency_key": _key("tier", update.external_id, update.tier, update.idempotency_key),
            }
            for i, update in enumerate(chunk)
        }
        data, response = self._call("POST", "/v2/customers/custom-attributes/bulk-upsert", {"values": values})
        if response.status_code >= 300:
            reason = _reason(data)
            return {offset + i: reason for i in range(len(chunk))}
        answers = data.get("values", {}) if isinstance(data, dict) else {}
        failed = {}
        for name in values:
            answer = answers.get(name)
            if answer is None or answer.get("errors"):
                failed[int(name)] = _reason(answer) if answer else "Square did not answer for this customer"
        return failed

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Fetched:
        return self._client.json_response(method, url, json=body, accept=REFUSED)


def _records(data: Any, key: str, system: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise FatalError(f"{system}: expected a JSON object listing {key}, got {type(data).__name__}")
    records = data.get(key, [])  # Square leaves the key out when nothing matched
    if not isinstance(records, list):
        raise FatalError(f"{system}: {key!r} is not a list")
    return records


def _account_id(update: WritebackUpdate) -> str | None:
    value = update.remote.get("loyalty_account_id")
    return str(value) if value else None


def _key(*parts: object) -> str:
    """A stable idempotency key (40 characters: within both Square limits, 45 and 128)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _reason(data: Any) -> str:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return str(data)[:200]
    return "; ".join(f"{e.get('code')}: {e.get('detail', '')}".rstrip(": ") for e in errors)
