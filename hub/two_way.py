"""Two-way sync: points changed inside a destination — a reward redeemed at a Square till, a balance
corrected in its Dashboard — come into the ledger before the hub writes balances back, so a
member's spend at the till is never overwritten.

Each event is taken once (``destination_events``, keyed by the destination's event id; its ledger
entry has the natural key (destination, ``loyalty-event/<id>``, kind) as well):

    imported   posted to the ledger: a redemption, a redemption undone (points back), an adjustment
    refused    the ledger would not take it (more points than the member holds here): kept with the
               reason for a steward; the hub's balance is written back over it
    unmatched  its customer is not (yet) linked to a member: tried again every run
    ignored    a kind of change the hub makes from its own data

The hub's own writes coming back (echoes: Square adjustments whose reason starts with the hub's
mark) are recognised by the connector and skipped without a row. The events cursor
(``connector_state``, stream ``loyalty_events``) moves in the transaction that stores the events
it covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors import Connector, DestinationEvent
from hub import ledger
from hub.resolve import active_member_id
from hub.tables import ConnectorState, DestinationEventRow, MemberLink, StagedMember, WritebackState, utcnow
from mappings.engine import load_stores
from schemas import ProgrammeConfig
from schemas.errors import LedgerError

EVENTS_STREAM = "loyalty_events"


@dataclass
class ImportCounts:
    read: int = 0
    imported: int = 0
    points: int = 0  # net points the imported events moved
    own: int = 0  # the hub's own writes coming back: skipped
    ignored: int = 0
    unmatched: int = 0
    refused: int = 0


def import_events(
    connector: Connector, session_factory: Callable[[], Session], programme: ProgrammeConfig
) -> ImportCounts:
    """Read the destination's points events since the last import and post them to the ledger."""
    destination = connector.name
    counts = ImportCounts()
    with session_factory() as session:
        state = session.get(ConnectorState, (destination, EVENTS_STREAM))
        since = state.cursor if state else None
        accounts = _accounts(session, destination)
    events: dict[str, DestinationEvent] = {}
    latest = since
    for event in connector.read_events(since, accounts=accounts):
        counts.read += 1
        events[event.id] = event
        if latest is None or _moment(event.occurred_at) > _moment(latest):
            latest = event.occurred_at
    with session_factory() as session, session.begin():
        store_of = _store_resolver(connector)
        waiting = {
            row.event_id: row
            for row in session.scalars(
                select(DestinationEventRow).where(
                    DestinationEventRow.destination == destination, DestinationEventRow.outcome == "unmatched"
                )
            )
        }
        for row in waiting.values():
            if row.event_id not in events:
                events[row.event_id] = DestinationEvent(**row.payload)
        for event in sorted(events.values(), key=lambda e: (_moment(e.occurred_at), e.id)):
            _take(session, destination, event, store_of, programme, counts)
        if latest is not None and latest != since:
            if state is None:
                session.add(ConnectorState(connector=destination, stream=EVENTS_STREAM, cursor=latest))
            else:
                stored = session.get(ConnectorState, (destination, EVENTS_STREAM))
                stored.cursor, stored.updated_at = latest, utcnow()
    return counts


def _take(
    session: Session,
    destination: str,
    event: DestinationEvent,
    store_of: Callable[[str | None], str | None],
    programme: ProgrammeConfig,
    counts: ImportCounts,
) -> None:
    if event.own:
        counts.own += 1
        return
    row = session.get(DestinationEventRow, (destination, event.id))
    if row is not None and row.outcome != "unmatched":
        return  # taken before
    member_id = _member_of(session, destination, event.external_id)
    if row is None:
        row = DestinationEventRow(
            destination=destination,
            event_id=event.id,
            occurred_at=_moment(event.occurred_at),
            kind=event.kind,
            points=event.points,
            external_id=event.external_id,
            outcome="unmatched",
            payload=_payload(event),
        )
        session.add(row)
    row.member_id = member_id
    if event.kind not in ("redeem", "return", "adjust") or event.points == 0:
        row.outcome, row.detail = "ignored", f"{event.kind} events are not taken into the ledger"
        counts.ignored += 1
        return
    if member_id is None:
        row.outcome = "unmatched"
        row.detail = (
            f"customer {event.external_id} is not linked to a member yet"
            if event.external_id
            else f"loyalty account {event.account_id} belongs to no customer"
        )
        counts.unmatched += 1
        return
    try:
        with session.begin_nested():
            _post(session, destination, event, member_id, store_of(event.location), programme)
    except LedgerError as exc:
        row.outcome, row.detail = "refused", str(exc)
        counts.refused += 1
        return
    row.outcome, row.detail = "imported", event.detail or None
    counts.imported += 1
    counts.points += event.points


def _post(
    session: Session,
    destination: str,
    event: DestinationEvent,
    member_id: str,
    store: str | None,
    programme: ProgrammeConfig,
) -> None:
    at, actor = _moment(event.occurred_at), f"{destination} (till)"
    document = f"loyalty-event/{event.id}"
    if event.kind == "redeem":
        ledger.redeem(
            session,
            member_id,
            -event.points,
            source=destination,
            document=document,
            store_code=store,
            channel="pos",
            actor=actor,
            at=at,
        )
        return
    reason = (
        f"{destination}: a reward redeemed at the till was deleted; its points came back"
        if event.kind == "return"
        else f"{destination}: adjusted there ({event.detail or 'no reason given'})"
    )
    ledger.adjust(
        session,
        member_id,
        event.points,
        reason=reason,
        actor=actor,
        programme=programme,
        document=f"{destination}/{document}",
        store_code=store,
        at=at,
    )


def _accounts(session: Session, destination: str) -> dict[str, str]:
    """Loyalty account id -> customer id, from what the destination acknowledged."""
    found = {}
    for external_id, remote in session.execute(
        select(WritebackState.external_id, WritebackState.remote).where(WritebackState.destination == destination)
    ):
        account = (remote or {}).get("loyalty_account_id")
        if account:
            found[str(account)] = external_id
    return found


def _member_of(session: Session, destination: str, external_id: str | None) -> str | None:
    if not external_id:
        return None
    member_id = session.scalar(
        select(MemberLink.member_id)
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .where(StagedMember.source == destination, StagedMember.source_id == external_id)
    )
    return active_member_id(session, member_id) if member_id else None


def _store_resolver(connector: Connector) -> Callable[[str | None], str | None]:
    resolve = load_stores().resolver(connector.config.kind)

    def store(location: str | None) -> str | None:
        try:
            return resolve(location)
        except ValueError:
            return None  # a location the chain has not mapped: the points still count, store unknown

    return store


def _payload(event: DestinationEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.occurred_at,
        "kind": event.kind,
        "points": event.points,
        "external_id": event.external_id,
        "account_id": event.account_id,
        "location": event.location,
        "own": event.own,
        "detail": event.detail,
    }


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def recent(session: Session, destination: str | None = None, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest events taken in, newest first."""
    query = select(DestinationEventRow).order_by(DestinationEventRow.occurred_at.desc()).limit(limit)
    if destination:
        query = query.where(DestinationEventRow.destination == destination)
    return [
        {
            "destination": r.destination,
            "event_id": r.event_id,
            "occurred_at": r.occurred_at,
            "kind": r.kind,
            "points": r.points,
            "external_id": r.external_id,
            "member_id": r.member_id,
            "outcome": r.outcome,
            "detail": r.detail,
        }
        for r in session.scalars(query)
    ]
