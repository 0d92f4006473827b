"""HubSpot CRM v3, simulated: contacts (list, search, batch update and upsert) and contact properties.

Kept from the real API (see /work/shared/specs/API_NOTES.md and the official OpenAPI files beside it):

- bearer auth; a wrong token gets ``401`` with ``category: INVALID_AUTHENTICATION``;
- ``GET /crm/v3/objects/contacts`` pages by ``after`` (the next contact id) with ``limit`` ≤ 100, and
  the last page has no ``paging``; it has no modified-since filter;
- ``POST /crm/v3/objects/contacts/search`` takes ``filterGroups`` (OR of ANDs, ≤ 5 groups of ≤ 6
  filters), one sort, ``limit`` ≤ 200 and an offset-like ``after``; a query never yields more than
  ``search_cap`` (10,000) results: asking for ``after`` at or beyond it is a ``400``;
- a rolling window of ``rate_limit`` requests per ``rate_window`` seconds (190 per 10 s), with the
  ``X-HubSpot-RateLimit-*`` headers on every response and HubSpot's own ``429`` body, no Retry-After;
- property values are strings; times are ISO 8601 with milliseconds and ``Z``;
- custom properties are created once (``409`` when the name exists), enumeration values must be one
  of the property's options, ``hasUniqueValue`` properties refuse a value another contact holds;
- batch update and upsert take ≤ 100 inputs; rows that fail come back as ``207`` with ``errors[]``
  (one error per row, its ``context.ids`` naming the input id) and ``numErrors``;
- with ``bump_modified=True`` a write moves the contact's ``lastmodifieddate``/``updatedAt`` to now,
  as HubSpot really does, so the hub's own write-back comes back on the next incremental read. It is
  off by default because the demo promises that a second run finds nothing new.

Deviation, on purpose: a requested property with no value is left out of ``properties``. HubSpot
sends it as ``null``, but the published schema types every value as a string, and the tests check
responses against that schema; a mapping treats absent and null alike.
"""

from __future__ import annotations

import bisect
import math
import re
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from connectors.simulators._server import Request, Response, Simulator
from connectors.simulators._world import MemberCopy, World
from connectors.simulators.webhooks import deliver, hubspot_event, hubspot_webhook

LIST_MAX = 100
SEARCH_MAX = 200
BATCH_MAX = 100
DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
DAILY_LIMIT = 500_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_BUILTIN = {
    # name: (type, fieldType, label, read only)
    "email": ("string", "text", "Email", False),
    "firstname": ("string", "text", "First Name", False),
    "lastname": ("string", "text", "Last Name", False),
    "phone": ("string", "phonenumber", "Phone Number", False),
    "mobilephone": ("string", "phonenumber", "Mobile Phone Number", False),
    "date_of_birth": ("string", "text", "Date of birth", False),
    "city": ("string", "text", "City", False),
    "hs_object_id": ("number", "number", "Record ID", True),
    "createdate": ("datetime", "date", "Create Date", True),
    "lastmodifieddate": ("datetime", "date", "Last Modified Date", True),
}
_TYPES = {"bool", "date", "datetime", "enumeration", "number", "phone_number", "string"}
_FIELD_TYPES = {
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
}
_OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}
_RANGE_OPERATORS = {"GT", "GTE", "LT", "LTE", "EQ", "BETWEEN"}


def _iso(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _now_iso() -> str:
    return _iso(int(time.time() * 1000))


def _parse_ms(value: str) -> int:
    """A filter value for a datetime property: epoch milliseconds, or an ISO 8601 time."""
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _ms(moment)


class _Invalid(Exception):
    """A request HubSpot would refuse as a whole with 400 VALIDATION_ERROR."""


class HubSpotSimulator(Simulator):
    system = "hubspot"
    client_secret = "memberhub-simulator-client-secret"
    """The app's client secret, which signs the webhooks (v3)."""

    def __init__(
        self,
        world: World,
        *,
        token: str,
        state_dir: Any = None,
        rate_limit: int = 190,
        rate_window: float = 10.0,
        search_cap: int = 10_000,
        bump_modified: bool = False,
    ) -> None:
        super().__init__(token=token, state_dir=state_dir)
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.search_cap = search_cap
        self.bump_modified = bump_modified
        self._window: deque[float] = deque()
        self.refused = 0  # requests answered 429 because the rolling window was full
        self._daily = 0
        self._props: dict[int, dict[str, str]] = {}
        self._modified: dict[int, int] = {}
        self._ids: list[int] = []
        self._by_modified: list[tuple[int, int]] = []
        self._by_email: dict[str, int] = {}
        self._unique: dict[str, dict[str, int]] = {}
        self._person: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._definitions: dict[str, dict[str, Any]] = {name: _builtin(name) for name in _BUILTIN}
        for index, copy in enumerate(world.members.get(self.system, [])):
            contact_id = 1001 + index * 3
            self._person[contact_id] = copy.person_id
            self._props[contact_id] = _properties(contact_id, copy, index)
            self._modified[contact_id] = _ms(copy.updated_at) + (copy.person_id * 37 + index) % 1000
            self._props[contact_id]["lastmodifieddate"] = _iso(self._modified[contact_id])
        self._ids = sorted(self._props)
        self._by_modified = sorted((ms, cid) for cid, ms in self._modified.items())
        self._by_email = {p["email"].lower(): cid for cid, p in self._props.items() if p.get("email")}
        self._next_id = (self._ids[-1] + 3) if self._ids else 1001

        self.route("GET", r"/crm/v3/objects/contacts", self._list)
        self.route("POST", r"/crm/v3/objects/contacts/search", self._search)
        self.route("POST", r"/crm/v3/objects/contacts/batch/update", self._batch_update)
        self.route("POST", r"/crm/v3/objects/contacts/batch/upsert", self._batch_upsert)
        self.route("GET", r"/crm/v3/properties/contacts", self._list_properties)
        self.route("POST", r"/crm/v3/properties/contacts", self._create_property)
        self.route("GET", r"/crm/v3/properties/contacts/(?P<name>[^/]+)", self._get_property)
        self.route("PATCH", r"/crm/v3/properties/contacts/(?P<name>[^/]+)", self._update_property)

    # ------------------------------------------------------------------------- base hooks
    def dispatch(self, request: Request) -> Response:
        now = time.monotonic()
        with self.lock:
            self._daily += 1
            while self._window and self._window[0] <= now - self.rate_window:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                self.refused += 1
                return self.rate_limited(request)
            self._window.append(now)
        return super().dispatch(request)

    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def unauthorised(self, request: Request) -> Response:
        return _error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
            "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "INVALID_AUTHENTICATION",
        )

    def rate_limited(self, request: Request) -> Response:
        return Response(
            429,
            {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING",
                "requestId": str(uuid.uuid4()),
            },
        )

    def server_error(self, request: Request, status: int) -> Response:
        return _error(status, "internal error", "INTERNAL_ERROR" if status == 500 else "SERVICE_UNAVAILABLE")

    def not_found(self, request: Request) -> Response:
        return _error(404, f"Unable to route {request.method} {request.path}", "OBJECT_NOT_FOUND")

    def decorate(self, request: Request, response: Response) -> None:
        now = time.monotonic()
        with self.lock:
            used = sum(1 for t in self._window if t > now - self.rate_window)
            daily = self._daily
        response.headers.update(
            {
                "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, DAILY_LIMIT - daily)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.rate_window * 1000)),
                "X-HubSpot-RateLimit-Max": str(self.rate_limit),
                "X-HubSpot-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
            }
        )

    # ------------------------------------------------------------------------- what tests ask
    def truth(self) -> dict[str, str | int]:
        return {str(cid): person for cid, person in self._person.items()}

    def loyalty(self) -> dict[str, tuple[int | None, str | None]]:
        shown: dict[str, tuple[int | None, str | None]] = {}
        with self.lock:
            for cid in self._person:
                props = self._props[cid]
                points = props.get("loyalty_points")
                shown[str(cid)] = (
                    int(float(points)) if points not in (None, "") else None,
                    props.get("loyalty_tier") or None,
                )
        return shown

    def touch(self, contact_id: str | int, when: datetime | None = None, **properties: str) -> None:
        """Change a contact as someone in HubSpot would (for tests): ``lastmodifieddate`` moves to
        ``when`` (default now), so many contacts can be given the same instant."""
        with self.lock:
            cid = int(contact_id)
            stamp = _iso(_ms(when)) if when is not None else _now_iso()
            self._store(cid, {**self._props[cid], **properties, "lastmodifieddate": stamp})

    def send_webhook(
        self,
        url: str,
        subscription_type: str,
        contact_id: int | str,
        property_name: str | None = None,
        property_value: str | None = None,
    ) -> httpx.Response:
        """Send the webhook HubSpot sends for a change to a contact (a batch of one event), signed v3
        with ``client_secret``. For ``contact.propertyChange`` the value defaults to the contact's own."""
        if property_name is not None and property_value is None:
            property_value = self.contact(contact_id).get(property_name)
        event = hubspot_event(subscription_type, contact_id, property_name=property_name, property_value=property_value)
        return deliver(url, hubspot_webhook(self.client_secret, url, [event]))

    def contact(self, contact_id: str | int) -> dict[str, str]:
        """Every property a contact holds (for tests)."""
        with self.lock:
            return dict(self._props[int(contact_id)])

    def state(self) -> dict[str, Any]:
        custom = {name: d for name, d in self._definitions.items() if not d.get("hubspotDefined")}
        return {
            "definitions": custom,
            "contacts": {str(cid): self._props[cid] for cid in sorted(self._dirty)},
            "next_id": self._next_id,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self._definitions.update(state.get("definitions", {}))
            for key, props in state.get("contacts", {}).items():
                self._store(int(key), dict(props))
            self._next_id = max(self._next_id, int(state.get("next_id", self._next_id)))

    # ------------------------------------------------------------------------- contacts: reads
    def _list(self, request: Request, match: re.Match[str]) -> Response:
        try:
            limit = _int_arg(request.arg("limit", "10"), "limit")
            if not 1 <= limit <= LIST_MAX:
                raise _Invalid(f"limit must be between 1 and {LIST_MAX}, got {limit}")
            after = request.arg("after")
            start = bisect.bisect_left(self._ids, _int_arg(after, "after")) if after else 0
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        wanted = _wanted(request.query.get("properties"))
        if (request.arg("archived") or "false").lower() == "true":
            return Response(200, {"results": []})
        chunk = self._ids[start : start + limit]
        body: dict[str, Any] = {"results": [self._object(cid, wanted) for cid in chunk]}
        if start + limit < len(self._ids):
            following = str(self._ids[start + limit])
            query = {k: v for k, v in request.query.items() if k != "after"}
            query["after"] = [following]
            link = f"{self.base_url}{request.path}?{urlencode(query, doseq=True)}"
            body["paging"] = {"next": {"after": following, "link": link}}
        return Response(200, body)

    def _search(self, request: Request, match: re.Match[str]) -> Response:
        try:
            spec = _json_object(request)
            limit = spec.get("limit", 10)
            if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX:
                raise _Invalid(f"limit must be between 1 and {SEARCH_MAX}, got {limit!r}")
            offset = _int_arg(spec.get("after") or "0", "after")
            if offset >= self.search_cap:
                raise _Invalid(
                    f"Searching beyond {self.search_cap} results is not supported: 'after' was {offset}. "
                    "Narrow the query with filters instead."
                )
            groups = self._filter_groups(spec.get("filterGroups") or [])
            sort = self._sort(spec.get("sorts") or [])
            wanted = _wanted(spec.get("properties") or None)
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        ids, total = self._matching(groups, sort)
        stop = min(offset + limit, self.search_cap, total)
        chunk = ids[offset:stop] if offset < stop else []
        body: dict[str, Any] = {"total": total, "results": [self._object(cid, wanted) for cid in chunk]}
        if stop < total:
            body["paging"] = {"next": {"after": str(stop)}}
        return Response(200, body)

    def _filter_groups(self, groups: Any) -> list[list[tuple[str, str, Any]]]:
        if not isinstance(groups, list) or len(groups) > 5:
            raise _Invalid("filterGroups must be a list of at most 5 groups")
        parsed, count = [], 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or not 1 <= len(filters) <= 6:
                raise _Invalid("each filter group needs 1 to 6 filters")
            terms = []
            for item in filters:
                count += 1
                name, op = item.get("propertyName"), item.get("operator")
                if op not in _OPERATORS:
                    raise _Invalid(f"Unsupported operator {op!r}; valid: {', '.join(sorted(_OPERATORS))}")
                if name not in self._definitions:
                    raise _Invalid(f"Property {name!r} does not exist")
                if op in ("IN", "NOT_IN"):
                    value: Any = item.get("values")
                elif op == "BETWEEN":
                    value = (item.get("value"), item.get("highValue"))
                else:
                    value = item.get("value")
                if op not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
                    values = value if isinstance(value, list | tuple) else [value]
                    if value is None or any(v is None for v in values):
                        raise _Invalid(f"filter on {name} with {op} needs a value")
                    for v in values:
                        self._comparable(name, v)
                terms.append((name, op, value))
            parsed.append(terms)
        if count > 18:
            raise _Invalid("a search may hold at most 18 filters in all")
        return parsed

    def _sort(self, sorts: Any) -> tuple[str, bool] | None:
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise _Invalid("sorts takes at most one sort rule")
        if not sorts:
            return None
        rule = sorts[0]
        if isinstance(rule, str):
            name, descending = rule.lstrip("-"), rule.startswith("-")
        elif isinstance(rule, dict):
            name, descending = rule.get("propertyName"), rule.get("direction", "ASCENDING") == "DESCENDING"
        else:
            raise _Invalid("a sort rule is a property name or {propertyName, direction}")
        if name not in self._definitions:
            raise _Invalid(f"Cannot sort on unknown property {name!r}")
        return name, descending

    def _matching(self, groups: list[list[tuple[str, str, Any]]], sort: tuple[str, bool] | None) -> tuple[list, int]:
        """Ids matching the filters, in sort order. The incremental read (a range on lastmodifieddate,
        sorted by it ascending) is answered from the sorted index by bisection, without a scan."""
        by_modified = sort == ("lastmodifieddate", False)
        ranged = len(groups) <= 1 and all(
            name == "lastmodifieddate" and op in _RANGE_OPERATORS for name, op, _ in (groups[0] if groups else [])
        )
        if by_modified and ranged:
            low: tuple[float, float] = (-math.inf, -math.inf)
            high: tuple[float, float] = (math.inf, math.inf)
            for _, op, value in groups[0] if groups else []:
                first, last = (value[0], value[1]) if op == "BETWEEN" else (value, value)
                if op == "GT":
                    low = max(low, (_parse_ms(first), math.inf))
                elif op in ("GTE", "EQ", "BETWEEN"):
                    low = max(low, (_parse_ms(first), -math.inf))
                if op == "LT":
                    high = min(high, (_parse_ms(last), -math.inf))
                elif op in ("LTE", "EQ", "BETWEEN"):
                    high = min(high, (_parse_ms(last), math.inf))
            start = bisect.bisect_left(self._by_modified, low)
            stop = bisect.bisect_left(self._by_modified, high)
            ids = [cid for _, cid in self._by_modified[start:stop]]
            return ids, len(ids)
        ids = [cid for cid in self._ids if not groups or any(self._all(cid, g) for g in groups)]
        if sort is not None:
            name, descending = sort
            ids.sort(key=lambda cid: self._sort_key(cid, name), reverse=descending)
        return ids, len(ids)

    def _all(self, cid: int, terms: list[tuple[str, str, Any]]) -> bool:
        props = self._props[cid]
        for name, op, value in terms:
            raw = props.get(name)
            if op == "HAS_PROPERTY":
                ok = raw not in (None, "")
            elif op == "NOT_HAS_PROPERTY":
                ok = raw in (None, "")
            elif raw in (None, ""):
                ok = op in ("NEQ", "NOT_IN")
            else:
                have = self._comparable(name, raw)
                if op in ("IN", "NOT_IN"):
                    inside = any(have == self._comparable(name, v) for v in value or [])
                    ok = inside if op == "IN" else not inside
                elif op == "BETWEEN":
                    ok = self._comparable(name, value[0]) <= have <= self._comparable(name, value[1])
                else:
                    want = self._comparable(name, value)
                    ok = {
                        "EQ": have == want,
                        "NEQ": have != want,
                        "LT": have < want,
                        "LTE": have <= want,
                        "GT": have > want,
                        "GTE": have >= want,
                    }[op]
            if not ok:
                return False
        return True

    def _comparable(self, name: str, value: Any) -> Any:
        kind = self._definitions[name]["type"]
        try:
            if kind == "datetime":
                return _parse_ms(value)
            if kind == "number":
                return float(value)
        except ValueError as exc:
            raise _Invalid(f"{value!r} is not a valid value for {name} ({kind})") from exc
        return str(value).lower()

    def _sort_key(self, cid: int, name: str) -> tuple:
        raw = self._props[cid].get(name)
        return (raw in (None, ""), self._comparable(name, raw) if raw not in (None, "") else 0, cid)

    def _object(self, cid: int, wanted: tuple[str, ...]) -> dict[str, Any]:
        props = self._props[cid]
        return {
            "id": str(cid),
            "properties": {name: props[name] for name in wanted if props.get(name) is not None},
            "createdAt": props["createdate"],
            "updatedAt": props["lastmodifieddate"],
            "archived": False,
        }

    # ------------------------------------------------------------------------- contacts: writes
    def _batch_update(self, request: Request, match: re.Match[str]) -> Response:
        started = _now_iso()
        try:
            inputs = self._inputs(request)
            for item in inputs:
                if item.get("idProperty") not in (None, "hs_object_id"):
                    prop = item["idProperty"]
                    if not self._definitions.get(prop, {}).get("hasUniqueValue") and prop != "email":
                        raise _Invalid(f"{prop} is not a unique property and cannot identify contacts")
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        results, errors = [], []
        for item in inputs:
            cid = self._find(str(item["id"]), item.get("idProperty"))
            if cid is None:
                errors.append(_row_error("OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", item))
                continue
            problem = self._check_values(cid, item["properties"])
            if problem:
                errors.append(_row_error("VALIDATION_ERROR", problem, item))
                continue
            self._write(cid, item["properties"])
            results.append(self._written(cid, item["properties"]))
        return _batch_response(results, errors, started)

    def _batch_upsert(self, request: Request, match: re.Match[str]) -> Response:
        started = _now_iso()
        try:
            inputs = self._inputs(request)
            for item in inputs:
                prop = item.get("idProperty")
                if prop is None:
                    raise _Invalid("idProperty is required for upsert")
                if prop != "email" and not self._definitions.get(prop, {}).get("hasUniqueValue"):
                    raise _Invalid(f"{prop} is not a unique property and cannot identify contacts")
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        results, errors = [], []
        for item in inputs:
            prop, key = item["idProperty"], str(item["id"])
            cid = self._find(key, prop)
            values = {**item["properties"], prop: key}
            problem = self._check_values(cid, values)
            if problem:
                errors.append(_row_error("VALIDATION_ERROR", problem, item))
                continue
            new = cid is None
            if new:
                cid = self._next_id
                self._next_id += 3
                now = _now_iso()
                self._store(cid, {"hs_object_id": str(cid), "createdate": now, "lastmodifieddate": now})
            self._write(cid, values)
            results.append({**self._written(cid, values), "new": new})
        return _batch_response(results, errors, started)

    def _inputs(self, request: Request) -> list[dict[str, Any]]:
        body = _json_object(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise _Invalid("inputs is required and must be a list")
        if len(inputs) > BATCH_MAX:
            raise _Invalid(f"inputs: size must be between 0 and {BATCH_MAX}, got {len(inputs)}")
        seen = set()
        for position, item in enumerate(inputs):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise _Invalid(f"inputs[{position}].id is required and must be a string")
            if not isinstance(item.get("properties"), dict):
                raise _Invalid(f"inputs[{position}].properties is required and must be an object")
            for name, value in item["properties"].items():
                if name not in self._definitions:
                    raise _Invalid(f'Property "{name}" does not exist')
                if not isinstance(value, str):
                    raise _Invalid(f"inputs[{position}].properties.{name}: values must be strings, got {value!r}")
            if item["id"] in seen:
                raise _Invalid(f"Duplicate IDs found in batch input: [{item['id']}]. IDs must be unique")
            seen.add(item["id"])
        return inputs

    def _find(self, key: str, prop: str | None) -> int | None:
        if prop in (None, "hs_object_id"):
            return int(key) if key.isdigit() and int(key) in self._props else None
        if prop == "email":
            return self._by_email.get(key.lower())
        return self._unique.get(prop, {}).get(key)

    def _check_values(self, cid: int | None, values: dict[str, str]) -> str | None:
        problems = []
        for name, value in values.items():
            definition = self._definitions[name]
            if definition.get("modificationMetadata", {}).get("readOnlyValue"):
                problems.append(f'{{"name":"{name}","error":"READ_ONLY_VALUE","message":"{name} is read only"}}')
            elif value == "":
                continue
            elif definition["type"] == "number":
                try:
                    float(value)
                except ValueError:
                    problems.append(f'{{"name":"{name}","error":"INVALID_FLOAT","message":"{value} is not a number"}}')
            elif definition["type"] == "enumeration":
                allowed = [o["value"] for o in definition.get("options", [])]
                if value not in allowed:
                    problems.append(
                        f'{{"name":"{name}","error":"INVALID_OPTION","message":"{value} was not one of the allowed '
                        f'options: {allowed}"}}'
                    )
            if definition.get("hasUniqueValue") and value:
                holder = self._unique.get(name, {}).get(value)
                if holder is not None and holder != cid:
                    problems.append(
                        f'{{"name":"{name}","error":"ALREADY_HAS_UNIQUE_VALUE","message":"{value} is already '
                        f'used by object {holder}"}}'
                    )
        return f"Property values were not valid: [{','.join(problems)}]" if problems else None

    def _write(self, cid: int, values: dict[str, str]) -> None:
        props = dict(self._props[cid])
        for name, value in values.items():
            if value == "":
                props.pop(name, None)
            else:
                props[name] = value
        if self.bump_modified:
            props["lastmodifieddate"] = _now_iso()
        self._store(cid, props)

    def _store(self, cid: int, props: dict[str, str]) -> None:
        """Put a contact's properties in place and keep every index in step."""
        old = self._props.get(cid)
        if old is None:
            bisect.insort(self._ids, cid)
        else:
            at = bisect.bisect_left(self._by_modified, (self._modified[cid], cid))
            if at < len(self._by_modified) and self._by_modified[at] == (self._modified[cid], cid):
                del self._by_modified[at]
            if old.get("email"):
                self._by_email.pop(old["email"].lower(), None)
            for name, index in self._unique.items():
                if old.get(name):
                    index.pop(old[name], None)
        self._props[cid] = props
        self._modified[cid] = _parse_ms(props["lastmodifieddate"])
        bisect.insort(self._by_modified, (self._modified[cid], cid))
        if props.get("email"):
            self._by_email[props["email"].lower()] = cid
        for name, definition in self._definitions.items():
            if definition.get("hasUniqueValue") and props.get(name):
                self._unique.setdefault(name, {})[props[name]] = cid
        self._dirty.add(cid)

    def _written(self, cid: int, values: dict[str, str]) -> dict[str, Any]:
        props = self._props[cid]
        shown = {name: props.get(name, "") for name in values}
        shown.update({k: props[k] for k in ("hs_object_id", "createdate", "lastmodifieddate")})
        return {
            "id": str(cid),
            "properties": shown,
            "createdAt": props["createdate"],
            "updatedAt": props["lastmodifieddate"],
            "archived": False,
        }

    # ------------------------------------------------------------------------- properties
    def _list_properties(self, request: Request, match: re.Match[str]) -> Response:
        return Response(200, {"results": list(self._definitions.values())})

    def _get_property(self, request: Request, match: re.Match[str]) -> Response:
        definition = self._definitions.get(match["name"])
        if definition is None:
            return _error(404, f"Unable to find property with name: {match['name']}", "OBJECT_NOT_FOUND")
        return Response(200, definition)

    def _create_property(self, request: Request, match: re.Match[str]) -> Response:
        try:
            spec = _json_object(request)
            for key in ("name", "label", "type", "fieldType", "groupName"):
                if not isinstance(spec.get(key), str) or not spec[key]:
                    raise _Invalid(f"{key} is required")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", spec["name"]):
                raise _Invalid(f"{spec['name']!r} is not a valid property name: use lower case, digits and _")
            if spec["type"] not in _TYPES:
                raise _Invalid(f"type {spec['type']!r} is not one of {sorted(_TYPES)}")
            if spec["fieldType"] not in _FIELD_TYPES:
                raise _Invalid(f"fieldType {spec['fieldType']!r} is not one of {sorted(_FIELD_TYPES)}")
            options = _options(spec.get("options"))
            if spec["type"] == "enumeration" and not options:
                raise _Invalid("an enumeration property needs options")
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        if spec["name"] in self._definitions:
            return _error(
                409,
                f"Property named '{spec['name']}' already exists.",
                "OBJECT_ALREADY_EXISTS",
                context={"name": [spec["name"]]},
            )
        now = _now_iso()
        definition = {
            "name": spec["name"],
            "label": spec["label"],
            "type": spec["type"],
            "fieldType": spec["fieldType"],
            "groupName": spec["groupName"],
            "description": spec.get("description", ""),
            "options": options,
            "displayOrder": spec.get("displayOrder", -1),
            "hasUniqueValue": bool(spec.get("hasUniqueValue", False)),
            "hidden": bool(spec.get("hidden", False)),
            "formField": bool(spec.get("formField", False)),
            "calculated": False,
            "externalOptions": False,
            "hubspotDefined": False,
            "archived": False,
            "createdAt": now,
            "updatedAt": now,
            "modificationMetadata": {"archivable": True, "readOnlyDefinition": False, "readOnlyValue": False},
        }
        self._definitions[spec["name"]] = definition
        return Response(201, definition, {"Location": f"{self.base_url}/crm/v3/properties/contacts/{spec['name']}"})

    def _update_property(self, request: Request, match: re.Match[str]) -> Response:
        definition = self._definitions.get(match["name"])
        if definition is None:
            return _error(404, f"Unable to find property with name: {match['name']}", "OBJECT_NOT_FOUND")
        try:
            spec = _json_object(request)
            if definition.get("hubspotDefined"):
                raise _Invalid(f"{match['name']} is defined by HubSpot and cannot be changed")
            changes = {k: v for k, v in spec.items() if k in ("label", "description", "groupName", "hidden")}
            if "options" in spec:
                changes["options"] = _options(spec["options"])
        except _Invalid as exc:
            return _error(400, str(exc), "VALIDATION_ERROR")
        definition.update(changes, updatedAt=_now_iso())
        return Response(200, definition)


# ----------------------------------------------------------------------------- helpers
def _builtin(name: str) -> dict[str, Any]:
    kind, field_type, label, read_only = _BUILTIN[name]
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": "contactinformation",
        "description": "",
        "options": [],
        "displayOrder": -1,
        "hasUniqueValue": name in ("email", "hs_object_id"),
        "hidden": False,
        "formField": not read_only,
        "calculated": False,
        "externalOptions": False,
        "hubspotDefined": True,
        "archived": False,
        "modificationMetadata": {"archivable": False, "readOnlyDefinition": True, "readOnlyValue": read_only},
    }


def _properties(contact_id: int, copy: MemberCopy, index: int) -> dict[str, str]:
    """A contact's properties as HubSpot stores them: strings, times in ISO 8601 with ``Z``. A phone
    goes in ``mobilephone`` for most contacts and in ``phone`` for some, as sales teams enter it."""
    created = _iso(_ms(copy.created_at) + (copy.person_id * 17 + index) % 1000)
    props = {
        "hs_object_id": str(contact_id),
        "createdate": created,
        "email": copy.email,
        "firstname": copy.given_name,
        "lastname": copy.family_name,
        "date_of_birth": copy.birthday.isoformat() if copy.birthday else None,
        "city": copy.city,
    }
    if copy.phone:
        props["phone" if index % 4 == 3 else "mobilephone"] = copy.phone
    return {k: v for k, v in props.items() if v not in (None, "")}


def _wanted(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return DEFAULT_PROPERTIES
    names: list[str] = []
    for value in values:
        names.extend(part.strip() for part in str(value).split(",") if part.strip())
    return tuple(dict.fromkeys(names))


def _int_arg(value: str | None, name: str) -> int:
    try:
        return int(str(value))
    except ValueError as exc:
        raise _Invalid(f"{name} must be a whole number, got {value!r}") from exc


def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError as exc:
        raise _Invalid(f"Invalid input JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Invalid("Invalid input JSON: expected an object")
    return body


def _options(options: Any) -> list[dict[str, Any]]:
    if options is None:
        return []
    if not isinstance(options, list):
        raise _Invalid("options must be a list")
    out = []
    for position, option in enumerate(options):
        if not isinstance(option, dict) or not option.get("label") or not option.get("value"):
            raise _Invalid(f"options[{position}] needs a label and a value")
        out.append(
            {
                "label": str(option["label"]),
                "value": str(option["value"]),
                "description": str(option.get("description", "")),
                "displayOrder": int(option.get("displayOrder", position)),
                "hidden": bool(option.get("hidden", False)),
            }
        )
    return out


def _error(status: int, message: str, category: str, *, context: dict[str, list[str]] | None = None) -> Response:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if context:
        body["context"] = context
    return Response(status, body)


def _row_error(category: str, message: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": [str(item["id"])]},
        "errors": [],
        "links": {},
    }


def _batch_response(results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str) -> Response:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now_iso()}
    if not errors:
        return Response(200, body)
    body.update(numErrors=len(errors), errors=errors)
    return Response(207, body)
