"""HubSpot CRM v3: contacts in, loyalty points and tier out as contact properties.

Reading ``contacts``:

- ``since is None``: ``GET /crm/v3/objects/contacts``, 100 a page by ``after``. The list is in id
  order, not modification order, so only the last page carries a cursor (the latest
  ``lastmodifieddate`` seen).
- ``since`` given: ``POST /crm/v3/objects/contacts/search`` on ``lastmodifieddate GTE since``,
  sorted ascending, 200 a page; every page's cursor is its last contact's ``lastmodifieddate``.
  HubSpot ends every search at 10,000 results, so before paging past ``search_cap`` the search
  restarts at the last timestamp seen, skipping the contacts already read at exactly that time.

Requests stay under HubSpot's rolling limit (190 per 10 s) through a local throttle; a ``429``
anyway (another app sharing the account) is retried by the shared client with backoff, as HubSpot
sends no reliable Retry-After.

Write-back creates the custom properties once (``loyalty_points`` number, ``loyalty_tier``
enumeration whose options follow the tiers pushed, ``loyalty_member_id`` unique text), then sets
them with ``batch/update`` 100 contacts at a time. A ``207`` names the rows that failed; those get
``ok=False`` with HubSpot's reason and are sent again next run. Values are absolute: resending is safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from connectors._http import ApiClient
from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from connectors.tags import TagUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import ConfigError, ConnectorError, FatalError, RetriableError

PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "date_of_birth",
    "city",
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
)
CURSOR_PROPERTY = "lastmodifieddate"
LIST_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_CAP = 10_000
BATCH_LIMIT = 100
GROUP = "contactinformation"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LOYALTY_PROPERTIES: tuple[dict[str, Any], ...] = (
    {
        "name": "loyalty_points",
        "label": "Loyalty points",
        "type": "number",
        "fieldType": "number",
        "groupName": GROUP,
        "description": "Points balance, kept by MemberHub. Edits here are overwritten.",
    },
    {
        "name": "loyalty_tier",
        "label": "Loyalty tier",
        "type": "enumeration",
        "fieldType": "select",
        "groupName": GROUP,
        "description": "Membership tier, kept by MemberHub. Edits here are overwritten.",
    },
    {
        "name": "loyalty_member_id",
        "label": "Loyalty member id",
        "type": "string",
        "fieldType": "text",
        "groupName": GROUP,
        "hasUniqueValue": True,
        "description": "The member's id in MemberHub.",
    },
)


class Throttle:
    """At most ``limit`` calls in any ``window`` seconds: ``wait()`` sleeps until a slot frees."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit, self.window = limit, window
        self._clock, self._sleep = clock, sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                self._sleep(self._sent[0] + self.window - now)


class HubSpotConnector(Connector):
    kind: ClassVar[str] = "hubspot"
    channel: ClassVar[Channel] = Channel.crm
    streams: ClassVar[tuple[Stream, ...]] = (
        Stream(
            "contacts",
            "members",
            echo_fields=("properties.memberhub_tags", "properties.lastmodifieddate", "updatedAt"),
        ),
    )

    def __init__(
        self,
        name: str,
        config: ConnectorConfig,
        *,
        search_cap: int = SEARCH_CAP,
        requests_per_window: int = 170,
        window_seconds: float = 10.0,
    ) -> None:
        """``search_cap``: results one HubSpot search can page through (10,000). ``requests_per_window``
        and ``window_seconds``: the local throttle, kept under HubSpot's 190 per 10 s."""
        super().__init__(name, config)
        if config.token is None:
            raise ConfigError(f"connector {name!r}: HubSpot needs a private app access token (token: ${{...}})")
        self.search_cap = search_cap
        self.throttle = Throttle(requests_per_window, window_seconds)
        self._headers = {"Authorization": f"Bearer {config.token.get_secret_value()}"}
        self._client = ApiClient(
            f"hubspot {name}",
            config.base_url,
            headers=self._headers,
            timeout=config.timeout_seconds,
            max_wait=config.max_retry_wait_seconds,
        )
        self._tier_options: list[dict[str, Any]] | None = None
        self._properties_ready = False
        self._tags_property_ready = False

    def close(self) -> None:
        self._client.close()

    def _json(self, method: str, url: str, client: ApiClient | None = None, **kwargs: Any) -> Any:
        self.throttle.wait()
        return (client or self._client).json(method, url, **kwargs)

    def _json_response(self, method: str, url: str, *, accept: tuple[int, ...], **kwargs: Any) -> tuple[Any, int]:
        self.throttle.wait()
        body, response = self._client.json_response(method, url, accept=accept, **kwargs)
        return body, response.status_code

    # ------------------------------------------------------------------------- read
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        if since is None:
            yield from self._list_all()
        else:
            yield from self._search_since(_epoch_ms(since))

    def _list_all(self) -> Iterator[Page]:
        limit = min(self.config.page_size or LIST_LIMIT, LIST_LIMIT)
        params: dict[str, Any] = {"limit": limit, "properties": ",".join(PROPERTIES)}
        latest: str | None = None
        while True:
            body = self._json("GET", "/crm/v3/objects/contacts", params=params)
            records = body.get("results") or []
            for record in records:
                stamp = _modified(record)
                latest = stamp if latest is None or _moment(stamp) > _moment(latest) else latest
            following = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not following:
                yield Page(records, cursor=_iso(latest) if latest else None)
                return
            yield Page(records)
            params = {**params, "after": following}

    def _search_since(self, start_ms: int) -> Iterator[Page]:
        limit = min(self.config.page_size or SEARCH_LIMIT, SEARCH_LIMIT)
        skip: set[str] = set()  # contacts already yielded at exactly start_ms (a restarted window)
        offset = 0
        last_ms, at_last = start_ms, set(skip)
        while True:
            body = self._json("POST", "/crm/v3/objects/contacts/search", json=self._query(start_ms, offset, limit))
            records = []
            for record in body.get("results") or []:
                stamp = _epoch_ms(_modified(record))
                if stamp == start_ms and record["id"] in skip:
                    continue
                records.append(record)
                if stamp > last_ms:
                    last_ms, at_last = stamp, {record["id"]}
                else:
                    at_last.add(record["id"])
            if records:
                yield Page(records, cursor=_iso(_modified(records[-1])))
            following = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not following:
                return
            offset = int(following)
            if offset >= self.search_cap:
                if last_ms == start_ms:
                    raise FatalError(
                        f"hubspot {self.name}: {self.search_cap} or more contacts share lastmodifieddate "
                        f"{_iso_ms(start_ms)}, and one HubSpot search cannot page past {self.search_cap} results; "
                        "run a full sync (since=None), which lists contacts without that limit."
                    )
                start_ms, skip, offset = last_ms, set(at_last), 0

    def _query(self, start_ms: int, offset: int, limit: int) -> dict[str, Any]:
        return {
            "filterGroups": [
                {"filters": [{"propertyName": CURSOR_PROPERTY, "operator": "GTE", "value": str(start_ms)}]}
            ],
            "sorts": [{"propertyName": CURSOR_PROPERTY, "direction": "ASCENDING"}],
            "properties": list(PROPERTIES),
            "limit": min(limit, self.search_cap - offset),
            "after": str(offset),
        }

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        where = self.config.base_url
        with ApiClient(f"hubspot {self.name}", where, headers=self._headers, timeout=10.0, max_attempts=2) as probe:
            try:
                self._json("GET", "/crm/v3/objects/contacts", client=probe, params={"limit": 1})
            except FatalError as exc:
                reached = CheckStep("reachable", True, f"HubSpot answered at {where}")
                return [reached, CheckStep("authenticated", False, str(exc))]
            except ConnectorError as exc:
                return [CheckStep("reachable", False, f"could not reach HubSpot at {where}: {exc}")]
            steps = [
                CheckStep("reachable", True, f"HubSpot answered at {where}"),
                CheckStep("authenticated", True, "the access token was accepted"),
            ]
            try:
                body = self._json(
                    "POST",
                    "/crm/v3/objects/contacts/search",
                    client=probe,
                    json={
                        "filterGroups": [],
                        "sorts": [{"propertyName": CURSOR_PROPERTY, "direction": "DESCENDING"}],
                        "properties": list(PROPERTIES),
                        "limit": 1,
                        "after": "0",
                    },
                )
            except ConnectorError as exc:
                return [*steps, CheckStep("sample read", False, f"searching contacts failed: {exc}")]
            results = body.get("results") or []
            if not results:
                detail = "the account holds no contacts yet"
            else:
                latest = results[0]
                detail = (
                    f"{body.get('total', '?')} contacts; latest change {_modified(latest)} (contact {latest['id']})"
                )
            return [*steps, CheckStep("sample read", True, detail)]

    # ------------------------------------------------------------------------- write-back
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        if not updates:
            return []
        self._ensure_properties({u.tier: u.tier_label for u in updates})
        outcome: dict[int, WritebackResult] = {}
        for batch in _batches(updates, BATCH_LIMIT):
            inputs = [{"id": update.external_id, "properties": _properties(update)} for _, update in batch]
            body, status = self._json_response(
                "POST", "/crm/v3/objects/contacts/batch/update", json={"inputs": inputs}, accept=(400, 404, 409)
            )
            if status >= 400:
                reason = _reason(body, status)
                for position, update in batch:
                    outcome[position] = WritebackResult(update.external_id, ok=False, error=reason)
                continue
            failed: dict[str, str] = {}
            for error in body.get("errors") or []:
                for contact_id in _error_ids(error):
                    failed[contact_id] = f"{error.get('category', 'ERROR')}: {error.get('message', '')}".strip()
            done = {str(result.get("id")) for result in body.get("results") or []}
            for position, update in batch:
                if update.external_id in failed:
                    outcome[position] = WritebackResult(update.external_id, ok=False, error=failed[update.external_id])
                elif update.external_id in done:
                    outcome[position] = WritebackResult(update.external_id, ok=True)
                else:
                    outcome[position] = WritebackResult(
                        update.external_id, ok=False, error="HubSpot returned neither a result nor an error for it"
                    )
        return [outcome[position] for position in range(len(updates))]

    def _ensure_properties(self, tiers: dict[str, str]) -> None:
        """Create the loyalty properties once (409: already there), then make sure every tier being
        pushed is one of loyalty_tier's options."""
        if not self._properties_ready:
            for definition in LOYALTY_PROPERTIES:
                spec = dict(definition)
                if spec["name"] == "loyalty_tier":
                    spec["options"] = _options(tiers)
                body, status = self._json_response("POST", "/crm/v3/properties/contacts", json=spec, accept=(409,))
                if spec["name"] == "loyalty_tier" and status != 409:
                    self._tier_options = list(body.get("options") or [])
            self._properties_ready = True
        if self._tier_options is None:
            body = self._json("GET", "/crm/v3/properties/contacts/loyalty_tier")
            self._tier_options = list(body.get("options") or [])
        known = {option["value"] for option in self._tier_options}
        missing = {tier: label for tier, label in tiers.items() if tier not in known}
        if missing:
            options = [*self._tier_options, *_options(missing, start=len(self._tier_options))]
            body = self._json("PATCH", "/crm/v3/properties/contacts/loyalty_tier", json={"options": options})
            self._tier_options = list(body.get("options") or options)

    # ------------------------------------------------------------------------- tags (segments, triggers)
    def push_tags(self, updates: list[TagUpdate]) -> list[WritebackResult]:
        """The contact property ``memberhub_tags`` (text, values joined by ``;``) holds the hub's tags,
        so lists and workflows can filter on "contains 沉睡会员". The whole value is the hub's: absolute."""
        if not updates:
            return []
        if not self._tags_property_ready:
            self._json_response("POST", "/crm/v3/properties/contacts", json=TAGS_PROPERTY, accept=(409,))
            self._tags_property_ready = True
        outcome: dict[int, WritebackResult] = {}
        for start in range(0, len(updates), BATCH_LIMIT):
            batch = list(enumerate(updates))[start : start + BATCH_LIMIT]
            inputs = [{"id": u.external_id, "properties": {TAGS_PROPERTY["name"]: ";".join(u.tags)}} for _, u in batch]
            body, status = self._json_response(
                "POST", "/crm/v3/objects/contacts/batch/update", json={"inputs": inputs}, accept=(400, 404, 409)
            )
            failed: dict[str, str] = {}
            if status < 400:
                for error in body.get("errors") or []:
                    for contact_id in _error_ids(error):
                        failed[contact_id] = f"{error.get('category', 'ERROR')}: {error.get('message', '')}".strip()
            done = {str(result.get("id")) for result in (body.get("results") or [])} if status < 400 else set()
            for position, update in batch:
                if update.external_id in done and update.external_id not in failed:
                    outcome[position] = WritebackResult(update.external_id, ok=True)
                else:
                    reason = failed.get(update.external_id) or _reason(body, status)
                    outcome[position] = WritebackResult(update.external_id, ok=False, error=reason)
        return [outcome[position] for position in range(len(updates))]


TAGS_PROPERTY: dict[str, Any] = {
    "name": "memberhub_tags",
    "label": "MemberHub tags",
    "type": "string",
    "fieldType": "textarea",
    "groupName": GROUP,
    "description": "Segments and marketing events from MemberHub, separated by ';'. Edits here are overwritten.",
}


# ----------------------------------------------------------------------------- helpers
def _properties(update: WritebackUpdate) -> dict[str, str]:
    """The loyalty properties whose value changed (all of them on a first write); strings, as HubSpot takes them."""
    values = {"points": str(update.points), "tier": update.tier, "member_id": update.member_id}
    return {f"loyalty_{name}": value for name, value in values.items() if name in update.changed}


def _batches(updates: list[WritebackUpdate], size: int) -> Iterator[list[tuple[int, WritebackUpdate]]]:
    """Batches of at most ``size``, never naming one contact twice (HubSpot refuses duplicate ids)."""
    batch: list[tuple[int, WritebackUpdate]] = []
    ids: set[str] = set()
    for position, update in enumerate(updates):
        if len(batch) >= size or update.external_id in ids:
            yield batch
            batch, ids = [], set()
        batch.append((position, update))
        ids.add(update.external_id)
    if batch:
        yield batch


def _options(tiers: dict[str, str], start: int = 0) -> list[dict[str, Any]]:
    return [
        {"label": label or tier, "value": tier, "displayOrder": start + i, "hidden": False}
        for i, (tier, label) in enumerate(tiers.items())
    ]


def _error_ids(error: dict[str, Any]) -> list[str]:
    context = error.get("context") or {}
    ids = context.get("ids") or context.get("id") or []
    return [str(i) for i in ids]


def _reason(body: Any, status: int) -> str:
    if isinstance(body, dict):
        return f"{body.get('category', status)}: {body.get('message', '')}".strip()
    return f"HubSpot answered {status}"


def _modified(record: dict[str, Any]) -> str:
    value = (record.get("properties") or {}).get(CURSOR_PROPERTY) or record.get("updatedAt")
    if not value:
        raise RetriableError(f"hubspot: contact {record.get('id')} came back without {CURSOR_PROPERTY}")
    return str(value)


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _epoch_ms(value: str) -> int:
    """Whole milliseconds since the epoch, rounded down (exact: no float arithmetic)."""
    return (_moment(value) - _EPOCH) // timedelta(milliseconds=1)


def _iso(value: str) -> str:
    return _moment(value).astimezone(UTC).isoformat()


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()
