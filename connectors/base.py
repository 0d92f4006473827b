"""What every connector declares and does. The hub talks to connectors only through this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from schemas import Channel, ConnectorConfig


@dataclass(frozen=True)
class Stream:
    """One kind of record a system serves: its id field and the field its incremental cursor reads."""

    name: str
    kind: str  # "members" or "orders"
    id_field: str = "id"


@dataclass
class Page:
    """Records read in one request. ``cursor`` is set only when every record up to it has been read,
    so the hub may store it in the same transaction as these records; ``None`` means "not yet"."""

    records: list[dict[str, Any]]
    cursor: str | None = None


@dataclass(frozen=True)
class CheckStep:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class WritebackUpdate:
    """The state a destination should hold for one of its customers."""

    member_id: str  # the hub's golden member id
    external_id: str  # the customer's id inside the destination
    points: int
    tier: str  # tier code name, e.g. "gold"
    tier_label: str  # what members read, e.g. "金卡"
    acknowledged_points: int | None = None  # what the destination last confirmed (delta targets)
    idempotency_key: str = ""  # stable for the same (member, from, to) change: safe to resend
    phone: str | None = None  # E.164, for systems that key loyalty accounts by phone
    remote: dict[str, Any] = field(default_factory=dict)  # ids the destination gave us last time


@dataclass(frozen=True)
class WritebackResult:
    external_id: str
    ok: bool
    error: str | None = None
    remote: dict[str, Any] = field(default_factory=dict)  # ids to remember (metafield ids, account ids)


class Connector(ABC):
    """A source system. Subclasses declare ``kind``, ``channel`` and ``streams``; the HTTP client,
    retries and paging live in ``connectors._http`` and the paginators, not here."""

    kind: ClassVar[str]
    channel: ClassVar[Channel]
    streams: ClassVar[tuple[Stream, ...]]

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        self.name = name
        self.config = config

    def stream(self, name: str) -> Stream:
        for stream in self.streams:
            if stream.name == name:
                return stream
        valid = ", ".join(s.name for s in self.streams)
        raise KeyError(f"{self.name} has no stream {name!r}; it has: {valid}")

    @abstractmethod
    def read(self, stream: str, since: str | None) -> Iterator[Page]:
        """Yield pages of raw records updated at or after ``since`` (an ISO 8601 time), or all."""

    @abstractmethod
    def check(self) -> list[CheckStep]:
        """Reachability, authentication and a sample read, each explained."""

    @abstractmethod
    def push(self, updates: list[WritebackUpdate]) -> list[WritebackResult]:
        """Write points and tier for these customers; one result per update, in the same order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
