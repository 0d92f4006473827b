"""The shared HTTP core: one pooled httpx client per system, retries only where a retry can help.

Status codes and transport failures become the error tree of ``schemas.errors``; tenacity retries
exactly ``RetriableError``, honouring the server's ``Retry-After`` where it sends one and otherwise
backing off exponentially with jitter, for a bounded number of attempts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from schemas.errors import FatalError, RetriableError

log = logging.getLogger(__name__)

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_FATAL_ADVICE = {
    401: "check the access token in the connector's configuration (it may be wrong or expired)",
    403: "grant the API token the scopes MemberHub needs (read customers and orders, write loyalty)",
    404: "check the connector's base_url and API version",
}


class ApiClient:
    """A pooled HTTP client for one system. ``system`` names it in every error message."""

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_wait: float = 30.0,
    ) -> None:
        self.system = system
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers or {},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request with retries; return a 2xx response or raise a ConnectorError."""
        return self._with_retries(lambda: self._send_once(method, url, **kwargs))

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON body; a truncated or garbled body is retriable."""
        return self.json_response(method, url, **kwargs)[0]

    def json_response(
        self, method: str, url: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> tuple[Any, httpx.Response]:
        """Like ``json``, and the response too, for the headers a caller reads (``Link`` paging,
        rate-limit counters). Statuses in ``accept`` are handed back instead of raised, so a caller
        can turn one refused row of a batch into that row's failure; their body is ``None`` when it
        is not JSON. Only statuses a retry cannot fix belong in ``accept``."""

        def decode() -> tuple[Any, httpx.Response]:
            response = self._send_once(method, url, accept=accept, **kwargs)
            try:
                return response.json(), response
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if response.status_code >= 400:
                    return None, response
                raise RetriableError(
                    f"{self.system}: {method} {url} returned a body that is not valid JSON "
                    f"({len(response.content)} bytes); it was probably cut off"
                ) from exc

        return self._with_retries(decode)

    def _with_retries(self, call: Any) -> Any:
        retrying = retry(
            retry=retry_if_exception_type(RetriableError),
            stop=stop_after_attempt(self.max_attempts),
            wait=lambda state: _hint_or_backoff(state, self.max_wait),
            before_sleep=lambda state: log.warning(
                "retrying after: %s", state.outcome.exception() if state.outcome else "?"
            ),
            reraise=True,
        )
        return retrying(call)()

    def _send_once(self, method: str, url: str, *, accept: Collection[int] = (), **kwargs: Any) -> httpx.Response:
        where = f"{self.system}: {method} {url}"
        try:
            response = self._http.request(method, url, **kwargs)
            response.read()
        except httpx.TimeoutException as exc:
            raise RetriableError(f"{where} timed out") from exc
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            raise RetriableError(f"{where} failed on the network: {exc.__class__.__name__}") from exc
        status = response.status_code
        if status < 400 or status in accept:
            return response
        body = response.text[:300]
        if status in RETRIABLE_STATUS:
            raise RetriableError(f"{where} answered {status}: {body}", retry_after=_retry_after(response))
        advice = _FATAL_ADVICE.get(status, "the request was refused; see the body for the reason")
        raise FatalError(f"{where} answered {status}: {body} — {advice}")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _hint_or_backoff(state: RetryCallState, max_wait: float) -> float:
    error = state.outcome.exception() if state.outcome else None
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        return min(max_wait, hint)
    return wait_exponential_jitter(multiplier=0.2, max=max_wait, jitter=0.5)(state)
