"""A small threaded HTTP server that every simulator shares: routing, auth hooks, request counts,
fault injection and persistence of the system's state between runs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    url: str  # path and query as sent

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Faults:
    """Faults a test or ``memberhub simulate --faults`` switches on. Counts are consumed per request.

    ``rate_limit``: the next N requests are answered as the system answers over its limit.
    ``errors``: the next N requests get ``error_status`` (500 by default) with the system's body.
    ``slow_seconds``: every request waits this long before answering (past a client's timeout).
    ``reset``: the next N requests have their connection closed mid-body.
    ``malformed``: the next N successful responses are cut in half (invalid JSON).
    ``expired_token``: every request is refused as unauthenticated until switched off.
    """

    rate_limit: int = 0
    errors: int = 0
    error_status: int = 500
    slow_seconds: float = 0.0
    reset: int = 0
    malformed: int = 0
    expired_token: bool = False

    def take(self, name: str) -> bool:
        remaining = getattr(self, name)
        if remaining > 0:
            setattr(self, name, remaining - 1)
            return True
        return False


Handler = Callable[[Request, re.Match[str]], Response]


class Simulator:
    """Base of a simulated system. Subclasses set ``system``, fill ``routes`` and implement
    ``authorised``, ``rate_limited``, ``server_error`` and ``unauthorised`` with the system's own
    bodies, and ``state``/``load_state`` to persist what writes changed."""

    system: ClassVar[str]

    def __init__(self, *, token: str, state_dir: Path | None = None) -> None:
        self.token = token
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.lock = threading.RLock()
        self.state_dir = state_dir
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # routing ---------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"$"), handler))

    def dispatch(self, request: Request) -> Response:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                key = f"{method} {pattern.pattern[:-1]}"
                with self.lock:
                    self.requests[key] += 1
                if self.faults.expired_token or not self.authorised(request):
                    return self.unauthorised(request)
                if self.faults.take("rate_limit"):
                    return self.rate_limited(request)
                if self.faults.take("errors"):
                    return self.server_error(request, self.faults.error_status)
                with self.lock:
                    return handler(request, match)
        return self.not_found(request)

    # system-specific answers -----------------------------------------------------------------
    def authorised(self, request: Request) -> bool:
        raise NotImplementedError

    def unauthorised(self, request: Request) -> Response:
        raise NotImplementedError

    def rate_limited(self, request: Request) -> Response:
        raise NotImplementedError

    def server_error(self, request: Request, status: int) -> Response:
        return Response(status, {"error": "simulated server error"})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"errors": "Not Found"})

    def decorate(self, request: Request, response: Response) -> None:
        """Add headers every response of this system carries (rate-limit counters and the like)."""

    # what the hub and the tests ask of every simulator ------------------------------------
    def connector_settings(self) -> dict[str, Any]:
        """Extra ConnectorConfig settings the hub needs for this system (Square locations, Odoo db)."""
        return {}

    def truth(self) -> dict[str, str | int]:
        """This system's member id -> the generated person it really is."""
        raise NotImplementedError

    def loyalty(self) -> dict[str, tuple[int | None, str | None]]:
        """This system's member id -> (points, tier code) as the system now shows them."""
        raise NotImplementedError

    # persistence -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What writes have changed, as JSON-able data; restored by ``load_state``."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def _state_file(self) -> Path | None:
        return self.state_dir / f"{self.system}.json" if self.state_dir else None

    def save(self) -> None:
        path = self._state_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            data = json.dumps(self.state(), ensure_ascii=False, default=str)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(data)
        tmp.replace(path)

    def restore(self) -> None:
        path = self._state_file()
        if path is not None and path.exists():
            self.load_state(json.loads(path.read_text()))

    # lifecycle -------------------------------------------------------------------------------
    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self.restore()
        simulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    url=self.path,
                )
                if simulator.faults.slow_seconds:
                    time.sleep(simulator.faults.slow_seconds)
                try:
                    response = simulator.dispatch(request)
                except Exception as exc:  # a simulator bug must show, not hang the client
                    response = Response(500, {"error": f"simulator bug: {exc!r}"})
                simulator.decorate(request, response)
                payload = response.encoded()
                if response.status < 400 and simulator.faults.take("malformed"):
                    payload = payload[: len(payload) // 2]
                self.send_response(response.status)
                if not isinstance(response.body, bytes) or "Content-Type" not in response.headers:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if simulator.faults.take("reset"):
                    self.wfile.write(payload[: len(payload) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{self.system}", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.save()
