"""A small threaded HTTP server that every simulator shares: routing, auth hooks, request counts,
fault injection and persistence of the system's state between runs."""

from __future__ import annotations

import difflib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
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
    ``slow``: the next N requests wait ``slow_by`` seconds before answering (a burst of slowness
    the client should outlast, where ``slow_seconds`` slows everything until switched off).
    ``reset``: the next N requests have their connection closed mid-body.
    ``malformed``: the next N successful responses are cut in half (invalid JSON).
    ``expired_token``: every request is refused as unauthenticated until switched off.
    """

    rate_limit: int = 0
    errors: int = 0
    error_status: int = 500
    slow_seconds: float = 0.0
    slow: int = 0
    slow_by: float = 1.0
    reset: int = 0
    malformed: int = 0
    expired_token: bool = False

    def take(self, name: str) -> bool:
        with _TAKING:  # the server is threaded: two requests must not both take the last one
            remaining = getattr(self, name)
            if remaining > 0:
                setattr(self, name, remaining - 1)
                return True
            return False

    def delay(self) -> float:
        """How long the request being served waits before it is answered."""
        return max(self.slow_seconds, self.slow_by if self.take("slow") else 0.0)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def set(self, name: str, value: str) -> None:
        """Set one fault from text, as ``memberhub simulate --faults`` gives it (``rate_limit=5``)."""
        kind = {f.name: f.type for f in fields(self)}[name]
        if kind in ("bool", bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{name} takes true or false, not {value!r}")
            setattr(self, name, value.lower() in ("1", "true", "yes", "on"))
        elif kind in ("int", int):
            setattr(self, name, int(value))
        else:
            setattr(self, name, float(value))


_TAKING = threading.Lock()


def parse_faults(spec: str, systems: Sequence[str]) -> dict[str, Faults]:
    """``"shopify:rate_limit=5,square:errors=3"`` -> one ``Faults`` per system named. An unknown
    system or fault, or a value of the wrong kind, is a ``ValueError`` that lists the valid choices,
    the closest first."""
    parsed: dict[str, Faults] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        system, colon, setting = item.partition(":")
        name, equals, value = setting.partition("=")
        system, name, value = system.strip(), name.strip(), value.strip()
        if not colon or not equals or not value:
            raise ValueError(f"fault {item!r} is not SYSTEM:FAULT=VALUE, e.g. shopify:rate_limit=5")
        if system not in systems:
            raise ValueError(f"unknown system {system!r} in --faults {item!r}; {_choices(system, systems)}")
        if name not in Faults.names():
            raise ValueError(f"unknown fault {name!r} in --faults {item!r}; {_choices(name, Faults.names())}")
        try:
            parsed.setdefault(system, Faults()).set(name, value)
        except ValueError as exc:
            raise ValueError(f"bad value in --faults {item!r}: {exc}") from None
    return parsed


def _choices(given: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=len(valid), cutoff=0.5)
    ordered = close + [v for v in valid if v not in close]
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid: {', '.join(ordered)}"


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
        self.after_request: Callable[[Request, Response], None] | None = None
        """Called with each request and its answer just before the answer is sent (tests use it to
        change records or switch faults on between one page and the next)."""

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
                delay = simulator.faults.delay()
                if delay:
                    time.sleep(delay)
                try:
                    response = simulator.dispatch(request)
                except Exception as exc:  # a simulator bug must show, not hang the client
                    response = Response(500, {"error": f"simulator bug: {exc!r}"})
                simulator.decorate(request, response)
                if simulator.after_request is not None:
                    simulator.after_request(request, response)
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

    def __enter__(self) -> Simulator:
        """``with Simulator(...) as sim``: started on a free port, stopped (and saved) on leaving."""
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
