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
    echo_fields: tuple[str, ...] = ()
    """Fields the hub writes itself (tags, groups) and the change stamps such a write moves: left out
    of the content hash, so the hub's own write coming back is not a change (no echo loop). Dotted
    for nested fields (``properties.memberhub_tags``)."""


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


ALL_FIELDS = frozenset({"points", "tier", "member_id"})
"""What a write-back may set on a destination's customer; a first write sets all of them."""
NEEDS_PHONE = "needs_phone"
"""Set in a result's ``remote`` when points could not be written for want of a phone number (Square
keys loyalty accounts by phone): the hub plans the points again once the customer has one."""


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
    changed: frozenset[str] = ALL_FIELDS  # which of points, tier, member_id differ from what was acknowledged
    ledger_mark: int | None = None  # the member's last ledger entry id this balance includes


@dataclass(frozen=True)
class WritebackResult:
    external_id: str
    ok: bool
    error: str | None = None
    remote: dict[str, Any] = field(default_factory=dict)  # ids to remember (metafield ids, account ids)
    skipped: str | None = None  # a part deliberately not written, and why (the rest was): not retried


@dataclass(frozen=True)
class DestinationEvent:
    """A change of points made inside a destination (a redemption at a till, a seller's adjustment),
    for the hub to bring into its ledger before it writes balances back.

    ``kind``: ``redeem`` (points spent), ``return`` (a redemption undone, points back), ``adjust``
    (someone there corrected the balance), or ``ignore`` (a change the hub makes itself from its own
    data, e.g. points a till accrued for an order the hub also earns on). ``own``: the hub's own write
    coming back (an echo), never imported."""

    id: str
    occurred_at: str  # ISO 8601
    kind: str
    points: int  # the effect on the balance there: negative when points were spent
    external_id: str | None  # the destination's customer, when it could be told
    account_id: str | None = None
    location: str | None = None  # the destination's own store code
    own: bool = False
    detail: str = ""


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

    def read_events(self, since: str | None, *, accounts: dict[str, str] | None = None) -> Iterator[DestinationEvent]:
        """Points changes made inside this system at or after ``since`` (ISO 8601), oldest or newest
        first. ``accounts``: loyalty account id -> customer id, as far as the hub knows them. Systems
        whose balances only the hub changes yield nothing."""
        return iter(())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
