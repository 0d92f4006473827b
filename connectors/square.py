"""Square (``/v2/``, Square-Version 2025-08-20): customers listed, or searched by ``updated_at``;
orders searched over the configured locations (ten per query) sorted by ``updated_at`` ascending,
so each page of a single query carries its own cursor. Points go back as deltas on the customer's
loyalty account, from the balance read just before, each with a key derived from the hub's ledger;
the tier as the ``loyalty_tier`` customer custom attribute, 25 per bulk upsert. Points spent or
adjusted at the till are read back as loyalty events (``read_events``) for the hub's ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, ClassVar

from connectors._http import ApiClient
from connectors._paging import Fetched, Watermark, paginator, utc_iso
from connectors.base import (
    NEEDS_PHONE,
    CheckStep,
    Connector,
    DestinationEvent,
    Page,
    Stream,
    WritebackResult,
    WritebackUpdate,
)
from connectors.tags import TagUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import ConfigError, ConnectorError, FatalError

SQUARE_VERSION = "2025-08-20"
MAX_CUSTOMERS = 100
MAX_ORDERS = 1000
LOCATIONS_PER_QUERY = 10
ACCOUNTS_PER_SEARCH = 30
ATTRIBUTES_PER_UPSERT = 25
TIER_KEY = "loyalty_tier"
EVENTS_PER_PAGE = 30
EVENT_KINDS = {"CREATE_REWARD": "redeem", "DELETE_REWARD": "return", "ADJUST_POINTS": "adjust"}
"""The loyalty events that change a balance from inside Square, and what each is to the hub."""
NO_PHONE = "points: the customer has no phone number, and Square keys loyalty accounts by phone"
OWN_REASON = "MemberHub sync"
"""How every adjustment the hub makes begins its reason: how the hub knows its own writes again."""
STRING_SCHEMA = "https://developer-production-s.squarecdn.com/schemas/v1/common.json#squareup.common.String"
REFUSED = (400, 404, 409)


class _Refused(Exception):
    """Square refused one customer's write; the batch goes on."""


class SquareConnector(Connector):
    kind: ClassVar[str] = "square"
    channel: ClassVar[Channel] = Channel.pos
    streams: ClassVar[tuple[Stream, ...]] = (
        Stream("customers", "members", echo_fields=("group_ids", "updated_at", "version")),
        Stream("orders", "orders"),
    )
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
        """Points: read the customer's loyalty account (30 customers per search), enrolling their
        phone when they have none, then adjust by ``target - balance`` under a key bound to the
        update's ledger-derived key and that balance: a resend after a crash finds the balance
        already moved and sends nothing. A customer without a phone cannot hold an account: their
        points are skipped with the reason (the tier is still written). Tier: bulk upserts of
        ``loyalty_tier``, 25 per call. Only the fields that changed are written."""
        failures: dict[int, list[str]] = {}
        remote: dict[int, dict[str, Any]] = {}
        skipped: dict[int, str] = {}
        points = [i for i, u in enumerate(updates) if "points" in u.changed]
        if points:
            self._push_points(updates, points, failures, remote, skipped)
        tiers = [i for i, u in enumerate(updates) if "tier" in u.changed]
        if tiers:
            self._define_tier()
        for start in range(0, len(tiers), ATTRIBUTES_PER_UPSERT):
            chunk = tiers[start : start + ATTRIBUTES_PER_UPSERT]
            for index, reason in self._upsert_tiers([(i, updates[i]) for i in chunk]).items():
                failures.setdefault(index, []).append(f"tier: {reason}")
        return [
            WritebackResult(
                update.external_id,
                index not in failures,
                "; ".join(failures[index]) if index in failures else None,
                remote.get(index, {}),
                skipped.get(index),
            )
            for index, update in enumerate(updates)
        ]

    def _push_points(
        self,
        updates: list[WritebackUpdate],
        indexes: list[int],
        failures: dict[int, list[str]],
        remote: dict[int, dict[str, Any]],
        skipped: dict[int, str],
    ) -> None:
        program = self._program_id()
        accounts = self._accounts_of([updates[i].external_id for i in indexes]) if program else {}
        for index in indexes:
            update = updates[index]
            try:
                if program is None:
                    raise _Refused("this seller has no loyalty program; create one in the Square Dashboard")
                account = accounts.get(update.external_id)
                if account is None and not update.phone:
                    skipped[index] = NO_PHONE
                    remote[index] = {NEEDS_PHONE: True}
                    continue
                if account is None:
                    account = self._enrol(update, program)
                remote[index] = {"loyalty_account_id": str(account["id"])}
                balance = int(account.get("balance", 0))
                if update.points != balance:
                    self._adjust(str(account["id"]), update, balance)
            except _Refused as exc:
                failures.setdefault(index, []).append(f"points: {exc}")

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

    def _enrol(self, update: WritebackUpdate, program: str) -> dict[str, Any]:
        """A new loyalty account for the customer, mapped by their phone (an account already mapped
        to that phone is taken when it is this customer's)."""
        account = {"program_id": program, "mapping": {"phone_number": update.phone}, "customer_id": update.external_id}
        key = _key("enrol", update.external_id, update.phone)
        body = {"loyalty_account": account, "idempotency_key": key}
        data, response = self._call("POST", "/v2/loyalty/accounts", body)
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
        return created

    def _adjust(self, account_id: str, update: WritebackUpdate, balance: int) -> None:
        """Move the account from ``balance`` to the update's points. The key binds the hub's change
        (derived from the ledger entries it represents) to the balance it moves from."""
        base = update.idempotency_key or _key(update.external_id, update.member_id, update.points)
        key = _key("adjust", base, account_id, balance)
        delta = update.points - balance
        body = {
            "idempotency_key": key,
            "adjust_points": {"points": delta, "reason": f"{OWN_REASON} {key[:16]}: {balance} -> {update.points}"},
            "allow_negative_balance": False,
        }
        data, response = self._call("POST", f"/v2/loyalty/accounts/{account_id}/adjust", body)
        if response.status_code >= 300:
            raise _Refused(f"adjusting account {account_id} by {delta} was refused: {_reason(data)}")

    def _upsert_tiers(self, chunk: list[tuple[int, WritebackUpdate]]) -> dict[int, str]:
        values = {
            str(index): {
                "customer_id": update.external_id,
                "custom_attribute": {"key": TIER_KEY, "value": update.tier},
                "idempotency_key": _key("tier", update.external_id, update.tier, update.idempotency_key),
            }
            for index, update in chunk
        }
        data, response = self._call("POST", "/v2/customers/custom-attributes/bulk-upsert", {"values": values})
        if response.status_code >= 300:
            reason = _reason(data)
            return {index: reason for index, _ in chunk}
        answers = data.get("values", {}) if isinstance(data, dict) else {}
        failed = {}
        for name in values:
            answer = answers.get(name)
            if answer is None or answer.get("errors"):
                failed[int(name)] = _reason(answer) if answer else "Square did not answer for this customer"
        return failed

    # ------------------------------------------------------------------------- two-way
    def read_events(self, since: str | None, *, accounts: dict[str, str] | None = None) -> Iterator[DestinationEvent]:
        """Loyalty events that change a balance from inside Square, newest first: rewards created
        (points spent at the till) and deleted (points back), and adjustments. The hub's own
        adjustments carry ``OWN_REASON`` and come back marked ``own``. Accruals for orders are not
        asked for: the hub earns on the same orders itself."""
        known = dict(accounts or {})
        query: dict[str, Any] = {"filter": {"type_filter": {"types": list(EVENT_KINDS)}}}
        if since is not None:
            query["filter"]["date_time_filter"] = {"created_at": {"start_at": utc_iso(since)}}
        body = {"query": query, "limit": EVENTS_PER_PAGE}
        for data, _ in self.paging.pages(self._client, "POST", "/v2/loyalty/events/search", body=body):
            for event in _records(data, "events", self.name):
                yield self._event(event, known)

    def _event(self, event: dict[str, Any], known: dict[str, str]) -> DestinationEvent:
        kind = EVENT_KINDS[event["type"]]
        detail = event.get({"redeem": "create_reward", "return": "delete_reward"}.get(kind, "adjust_points")) or {}
        points = int(detail.get("points", 0))
        points = -abs(points) if kind == "redeem" else abs(points) if kind == "return" else points
        reason = str(detail.get("reason") or "")
        account = event.get("loyalty_account_id")
        if account and account not in known:
            data, response = self._client.json_response("GET", f"/v2/loyalty/accounts/{account}", accept=(404,))
            found = data.get("loyalty_account", {}) if response.status_code == 200 else {}
            known[account] = found.get("customer_id")
        return DestinationEvent(
            id=str(event["id"]),
            occurred_at=str(event["created_at"]),
            kind=kind,
            points=points,
            external_id=known.get(account) if account else None,
            account_id=account,
            location=event.get("location_id"),
            own=kind == "adjust" and event.get("source") == "LOYALTY_API" and reason.startswith(OWN_REASON),
            detail=reason or (f"reward {detail['reward_id']}" if detail.get("reward_id") else ""),
        )

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Fetched:
        return self._client.json_response(method, url, json=body, accept=REFUSED)

    # ------------------------------------------------------------------------- tags (segments, triggers)
    def push_tags(self, updates: list[TagUpdate]) -> list[WritebackResult]:
        """Customer groups, one per tag, created once by name (with an idempotency key, so a crash
        between create and record cannot make two). Each customer joins and leaves the hub's groups
        only; groups people made stay."""
        if not updates:
            return []
        groups = self._groups()
        for name in sorted({t for u in updates for t in u.tags} - set(groups)):
            body = {"idempotency_key": _key("customer-group", name), "group": {"name": name}}
            data, response = self._call("POST", "/v2/customers/groups", body)
            if response.status_code >= 300:
                raise FatalError(f"{self.name}: Square refused to create the customer group {name!r}: {_reason(data)}")
            groups[name] = data["group"]["id"]
        names = {gid: name for name, gid in groups.items()}
        return [self._group_one(update, groups, names) for update in updates]

    def _groups(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for data, _response in self.paging.pages(self._client, "GET", "/v2/customers/groups", params={"limit": 50}):
            for group in _records(data, "groups", self.name):
                found.setdefault(group["name"], group["id"])
        return found

    def _group_one(self, update: TagUpdate, groups: dict[str, str], names: dict[str, str]) -> WritebackResult:
        cid = update.external_id
        data, response = self._call("GET", f"/v2/customers/{cid}")
        if response.status_code >= 300:
            return WritebackResult(cid, False, f"customer {cid}: {_reason(data)}")
        current = data["customer"].get("group_ids") or []
        moves = [("PUT", groups[t]) for t in update.tags if groups[t] not in current]
        moves += [
            ("DELETE", g) for g in current if g in names and update.managed(names[g]) and names[g] not in update.tags
        ]
        for method, group_id in moves:
            data, response = self._call(method, f"/v2/customers/{cid}/groups/{group_id}")
            if response.status_code >= 300:
                return WritebackResult(cid, False, f"customer {cid}, group {names.get(group_id)}: {_reason(data)}")
        return WritebackResult(cid, True)


def _records(data: Any, key: str, system: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise FatalError(f"{system}: expected a JSON object listing {key}, got {type(data).__name__}")
    records = data.get(key, [])  # Square leaves the key out when nothing matched
    if not isinstance(records, list):
        raise FatalError(f"{system}: {key!r} is not a list")
    return records


def _key(*parts: object) -> str:
    """A stable idempotency key (40 characters: within both Square limits, 45 and 128)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


def _reason(data: Any) -> str:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return str(data)[:200]
    return "; ".join(f"{e.get('code')}: {e.get('detail', '')}".rstrip(": ") for e in errors)
