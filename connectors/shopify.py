"""Shopify Admin REST 2025-01: customers and orders read by ``updated_at_min`` through ``Link``-header
pages, points and tier written back as the customer metafields ``loyalty.points`` and ``loyalty.tier``.

Shopify lists by id, not by update time, so only a read's last page carries a cursor. Calls are
paced by the ``X-Shopify-Shop-Api-Call-Limit`` counter to stay under the leaky bucket; a 429 that
still happens is retried after its ``Retry-After`` by the shared HTTP core.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx

from connectors._http import ApiClient
from connectors._paging import Watermark, paginator, utc_iso
from connectors.base import CheckStep, Connector, Page, Stream, WritebackResult, WritebackUpdate
from connectors.tags import TagUpdate
from schemas import Channel, ConnectorConfig
from schemas.errors import ConnectorError, FatalError

API_VERSION = "2025-01"
MAX_PAGE = 250
LEAK_PER_SECOND = 2.0
"""The standard plan's drain rate; Plus shops drain faster, so pacing for this is always safe."""
HEADROOM = 4
"""Calls kept free in the bucket, for other apps of the same shop and for retries."""
REFUSED = (404, 422)
METAFIELDS = (("points", "number_integer"), ("tier", "single_line_text_field"))


class _Refused(Exception):
    """Shopify refused one customer's write; the batch goes on."""


class ShopifyConnector(Connector):
    kind: ClassVar[str] = "shopify"
    channel: ClassVar[Channel] = Channel.online
    streams: ClassVar[tuple[Stream, ...]] = (
        Stream("customers", "members", echo_fields=("tags", "updated_at")),
        Stream("orders", "orders"),
    )
    paths: ClassVar[dict[str, str]] = {"customers": "customers.json", "orders": "orders.json"}
    extra_params: ClassVar[dict[str, dict[str, str]]] = {"orders": {"status": "any"}}  # the default is open only
    paging = paginator("header_link")
    leak_per_second: float = LEAK_PER_SECOND
    """The drain rate pacing assumes; raise it for a Plus shop (or a fast simulator)."""

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        super().__init__(name, config)
        self._client = self._make_client(config.timeout_seconds)

    def _make_client(self, timeout: float, **options: Any) -> ApiClient:
        options.setdefault("max_wait", self.config.max_retry_wait_seconds)
        token = self.config.token.get_secret_value() if self.config.token else ""
        return ApiClient(
            self.name,
            f"{self.config.base_url.rstrip('/')}/admin/api/{API_VERSION}/",
            headers={"X-Shopify-Access-Token": token, "Accept": "application/json"},
            timeout=timeout,
            **options,
        )

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------------- read
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        self.stream(stream)
        params: dict[str, Any] = {"limit": min(self.config.page_size or MAX_PAGE, MAX_PAGE)}
        params.update(self.extra_params.get(stream, {}))
        if since:
            params["updated_at_min"] = utc_iso(since)
        mark = Watermark("updated_at")
        for body, response in self.paging.pages(
            self._client, "GET", self.paths[stream], params=params, on_response=self._pace
        ):
            records = body.get(stream) if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise FatalError(f"{self.name}: GET {self.paths[stream]} answered without a {stream!r} list")
            mark.see(records)
            last = "next" not in response.links
            yield Page(records=records, cursor=mark.cursor() if last else None)

    # ------------------------------------------------------------------------- check
    def check(self) -> list[CheckStep]:
        where = self.config.base_url
        with self._make_client(min(self.config.timeout_seconds, 10.0), max_attempts=2) as client:
            try:
                body, response = client.json_response("GET", "shop.json", accept=(401, 403, 404))
            except ConnectorError as exc:
                return [CheckStep("reach", False, f"{where} did not answer: {exc}")]
            steps = [CheckStep("reach", True, f"{where} answered HTTP {response.status_code}")]
            if response.status_code in (401, 403):
                detail = (body or {}).get("errors") if isinstance(body, dict) else None
                steps.append(
                    CheckStep(
                        "authenticate",
                        False,
                        f"Shopify refused the access token ({detail or response.status_code}); check the "
                        "connector's token and that the app has read_customers, read_orders and "
                        "write_customers scopes",
                    )
                )
                return steps
            if response.status_code == 404:
                steps.append(
                    CheckStep("authenticate", False, f"no Admin API {API_VERSION} under {where}; check base_url")
                )
                return steps
            shop = body.get("shop", {}) if isinstance(body, dict) else {}
            steps.append(
                CheckStep("authenticate", True, f"signed in to {shop.get('name')} ({shop.get('myshopify_domain')})")
            )
            try:
                found = []
                for stream in ("customers", "orders"):
                    params = {"limit": 1, **self.extra_params.get(stream, {})}
                    sample = client.json("GET", self.paths[stream], params=params).get(stream, [])
                    found.append(f"{stream}: {'id ' + str(sample[0]['id']) if sample else 'none yet'}")
                steps.append(CheckStep("sample read", True, "read one of each — " + "; ".join(found)))
            except (ConnectorError, AttributeError, KeyError, TypeError) as exc:
                steps.append(CheckStep("sample read", False, f"reading customers and orders failed: {exc}"))
            return steps

    # ------------------------------------------------------------------------- write-back
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        """Absolute values, so a resend is harmless; metafield ids are remembered to PUT next time.
        Only the metafields whose value changed are written (one call each, Shopify REST has no batch)."""
        return [self._push_one(update) for update in updates]

    def _push_one(self, update: WritebackUpdate) -> WritebackResult:
        remote: dict[str, Any] = {}
        if not str(update.external_id).isdigit():
            return WritebackResult(update.external_id, False, f"{update.external_id!r} is not a Shopify customer id")
        values = {"points": str(update.points), "tier": update.tier}
        try:
            for key, kind in METAFIELDS:
                if key not in update.changed:
                    continue
                field = f"{key}_metafield_id"
                remote[field] = self._write(update.external_id, key, kind, values[key], update.remote.get(field))
        except _Refused as exc:
            return WritebackResult(update.external_id, False, str(exc), remote)
        return WritebackResult(update.external_id, True, None, remote)

    def _write(self, customer: str, key: str, kind: str, value: str, known: int | None) -> int:
        base = f"customers/{customer}/metafields"
        if known:
            body, response = self._call(
                "PUT", f"{base}/{known}.json", {"metafield": {"id": known, "value": value, "type": kind}}
            )
            if response.status_code < 300:
                return int(known)
            if response.status_code != 404:
                raise _Refused(f"Shopify refused loyalty.{key}={value!r}: {_errors(body)}")
        payload = {"metafield": {"namespace": "loyalty", "key": key, "type": kind, "value": value}}
        body, response = self._call("POST", f"{base}.json", payload)
        if response.status_code < 300:
            return int(body["metafield"]["id"])
        if response.status_code == 404:
            raise _Refused(f"customer {customer} is not in Shopify (deleted or merged?)")
        existing = self._find(base, key) if "unique" in str(_errors(body)) else None
        if existing is None:
            raise _Refused(f"Shopify refused loyalty.{key}={value!r}: {_errors(body)}")
        body, response = self._call(
            "PUT", f"{base}/{existing}.json", {"metafield": {"id": existing, "value": value, "type": kind}}
        )
        if response.status_code >= 300:
            raise _Refused(f"Shopify refused loyalty.{key}={value!r}: {_errors(body)}")
        return existing

    def _find(self, base: str, key: str) -> int | None:
        body, response = self._client.json_response(
            "GET", f"{base}.json", params={"namespace": "loyalty", "key": key}, accept=REFUSED
        )
        self._pace(response)
        for metafield in (body or {}).get("metafields", []):
            if metafield.get("namespace") == "loyalty" and metafield.get("key") == key:
                return int(metafield["id"])
        return None

    def _call(self, method: str, url: str, payload: dict[str, Any]) -> tuple[Any, httpx.Response]:
        body, response = self._client.json_response(method, url, json=payload, accept=REFUSED)
        self._pace(response)
        return body, response

    def _pace(self, response: httpx.Response) -> None:
        """Sleep just long enough that the next call finds room in the shop's bucket."""
        counter = response.headers.get("X-Shopify-Shop-Api-Call-Limit", "")
        used, _, size = counter.partition("/")
        if not (used.isdigit() and size.isdigit()):
            return
        excess = int(used) - (int(size) - HEADROOM)
        if excess > 0:
            time.sleep(excess / self.leak_per_second)

    # ------------------------------------------------------------------------- tags (segments, triggers)
    def push_tags(self, updates: list[TagUpdate]) -> list[WritebackResult]:
        """Customer tags: read the customer's tags, replace the hub's own, ``PUT`` only if they differ.
        The merchant's other tags stay as they are."""
        return [self._tag_one(update) for update in updates]

    def _tag_one(self, update: TagUpdate) -> WritebackResult:
        if not str(update.external_id).isdigit():
            return WritebackResult(update.external_id, False, f"{update.external_id!r} is not a Shopify customer id")
        url = f"customers/{update.external_id}.json"
        body, response = self._client.json_response("GET", url, accept=REFUSED)
        self._pace(response)
        if response.status_code == 404:
            return WritebackResult(update.external_id, False, f"customer {update.external_id} is not in Shopify")
        current = [t.strip() for t in str((body.get("customer") or {}).get("tags") or "").split(",") if t.strip()]
        wanted = update.merged(current)
        if wanted != current:
            payload = {"customer": {"id": int(update.external_id), "tags": ", ".join(wanted)}}
            body, response = self._call("PUT", url, payload)
            if response.status_code >= 300:
                return WritebackResult(update.external_id, False, f"Shopify refused the tags: {_errors(body)}")
        return WritebackResult(update.external_id, True)


def _errors(body: Any) -> Any:
    return body.get("errors", body) if isinstance(body, dict) else body
