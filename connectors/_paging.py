"""Paginators and incremental-cursor helpers that any connector declares by name.

A paginator turns one first request into the sequence of (body, response) pages of a list endpoint;
the connector only says where the records and the next cursor are. Paginators are looked up by name
in ``PAGINATORS``, so a stream can declare ``paginator("header_link")`` and a typo gets the valid
names. ``Watermark`` tracks the greatest update time read, for the cursor a ``Page`` may carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from connectors._http import ApiClient
from schemas.errors import ConfigError, FatalError, closest

Fetched = tuple[Any, httpx.Response]
OnResponse = Callable[[httpx.Response], None]


class Paginator(Protocol):
    def pages(
        self,
        client: ApiClient,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        on_response: OnResponse | None = None,
    ) -> Iterator[Fetched]:
        """Yield every page's decoded body and response, first request included."""
        ...


@dataclass(frozen=True)
class HeaderLinkPaginator:
    """The next page's full URL is in the ``Link`` header as ``rel="next"`` (Shopify, GitHub).
    The URL carries every parameter the next request needs, so the first request's parameters are
    not sent again (Shopify refuses filters beside ``page_info``)."""

    rel: str = "next"

    def pages(
        self,
        client: ApiClient,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        on_response: OnResponse | None = None,
    ) -> Iterator[Fetched]:
        seen: set[str] = set()
        while True:
            data, response = client.json_response(method, url, params=params, json=body)
            if on_response is not None:
                on_response(response)
            yield data, response
            following = response.links.get(self.rel, {}).get("url")
            if not following:
                return
            if following in seen:
                raise FatalError(f"{client.system}: {method} {url}: the server sent the same next page twice")
            seen.add(following)
            url, params = following, None


@dataclass(frozen=True)
class BodyCursorPaginator:
    """The response body holds an opaque cursor (``cursor_path``, dotted) that the next request sends
    back (``cursor_param``: a query parameter for GET, a dotted body field otherwise) with the same
    query. No cursor, or an empty one, means the last page (Square ``cursor``, HubSpot ``paging.next.after``)."""

    cursor_path: str = "cursor"
    cursor_param: str = "cursor"

    def pages(
        self,
        client: ApiClient,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        on_response: OnResponse | None = None,
    ) -> Iterator[Fetched]:
        params, body = dict(params or {}), _deep_copy(body) if body is not None else None
        seen: set[str] = set()
        while True:
            data, response = client.json_response(method, url, params=params or None, json=body)
            if on_response is not None:
                on_response(response)
            yield data, response
            cursor = dig(data, self.cursor_path)
            if not cursor:
                return
            if cursor in seen:
                raise FatalError(f"{client.system}: {method} {url}: the server sent the same cursor twice")
            seen.add(cursor)
            if body is None:
                params[self.cursor_param] = cursor
            else:
                _put(body, self.cursor_param, cursor)


PAGINATORS: dict[str, Callable[..., Paginator]] = {
    "body_cursor": BodyCursorPaginator,
    "header_link": HeaderLinkPaginator,
}


def paginator(name: str, **options: Any) -> Paginator:
    """The paginator registered under ``name``, e.g. ``paginator("body_cursor", cursor_param="after")``."""
    factory = PAGINATORS.get(name)
    if factory is None:
        close = closest(name, PAGINATORS, cutoff=0.6)
        hint = f"did you mean {close!r}?" if close else f"valid: {', '.join(sorted(PAGINATORS))}"
        raise ConfigError(f"unknown paginator {name!r}; {hint}")
    return factory(**options)


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path of nested dicts, or None where any step is missing."""
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


# ------------------------------------------------------------------------------ cursors
def parse_time(value: str) -> datetime:
    """An ISO 8601 / RFC 3339 time with an offset or ``Z``; a naive time is taken as UTC."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_iso(value: str | datetime) -> str:
    """The same instant as an ISO 8601 UTC string, the form every ``Page.cursor`` takes."""
    moment = parse_time(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).isoformat()


class Watermark:
    """The greatest update time among the records read so far. ``cursor()`` never passes the moment
    the read began: a record changed during a read that is not ordered by update time may have been
    skipped, and the next read must start no later than that."""

    def __init__(self, field: str = "updated_at") -> None:
        self.field = field
        self.started = datetime.now(UTC)
        self.latest: datetime | None = None

    def see(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            value = dig(record, self.field)
            if value:
                moment = parse_time(str(value))
                if self.latest is None or moment > self.latest:
                    self.latest = moment

    def cursor(self) -> str | None:
        if self.latest is None:
            return None
        return utc_iso(min(self.latest, self.started))
