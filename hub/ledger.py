"""The points ledger (积分流水): append-only entries, lots with expiry, balances derived from entries.

Model
    entry       one movement (``ledger_entries``), never changed or deleted; natural key
                (source, document, kind). ``points`` is its effect on the spendable balance,
                ``pending_points`` its effect on the pending balance, so each balance is a sum.
    lot         points earned together (``points_lots``): store, expiry, pending state. A credit
                opens a lot; a debit draws on lots through allocations (``points_allocations``, also
                append-only). A debt lot is negative: what a refund took back after the points had
                been spent. ``remaining`` is a cache of the lot's points plus its allocations.
    account     one row per member (``points_accounts``): the lock every movement takes first, and
                a cache of the two balances. ``reconcile`` proves the caches equal the sums.

Rules the code keeps
    * Redemptions draw on spendable lots soonest-expiring first (then oldest, then lowest id) and
      never take the balance below zero; pending lots count toward nothing until released.
    * A refund takes back ``floor(earned × refunded / total)`` points in total — never more than the
      order earned, less what of it already expired. It draws on the order's own lots first, then on
      other spendable lots, and records any shortfall as debt. Later credits pay debt first, so a
      member never holds debt and spendable points at once.
    * Cancelling a redemption gives each lot back what it gave, with its original expiry.
    * Merging moves every open lot with its expiry and pending state; a split moves back what the
      merge brought and undoes the debt it settled.
    * Every movement for a member first locks the member's account row: ``SELECT ... FOR UPDATE`` on
      PostgreSQL, an ``UPDATE`` (the database write lock) on SQLite. Reads of lots happen after it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from types import SimpleNamespace
from typing import Any, NamedTuple

from sqlalchemy import Row, Table, bindparam, func, insert, literal, null, select, text, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from hub import programme as calendar
from hub.ledger_rules import EarnRules, OrderFacts
from hub.tables import (
    AuditLog,
    LedgerEntryRow,
    MemberLink,
    PointsAccount,
    PointsAllocation,
    PointsLot,
    StagedMember,
    StagedOrder,
    TierAssignmentRow,
    utcnow,
)
from schemas import EntryKind, LedgerEntry, ProgrammeConfig
from schemas.errors import LedgerError

EARNING_STATUSES = ("paid", "partially_refunded", "refunded", "cancelled")
HUB = "hub"  # the source of the entries the hub makes itself: transfers, expiry, release

E: Table = LedgerEntryRow.__table__  # type: ignore[assignment]
L: Table = PointsLot.__table__  # type: ignore[assignment]
A: Table = PointsAllocation.__table__  # type: ignore[assignment]
ACC: Table = PointsAccount.__table__  # type: ignore[assignment]


class InsufficientPoints(LedgerError):
    """A redemption or deduction asked for more than the member's spendable balance."""


@dataclass
class PostCounts:
    entries: int = 0
    points: int = 0  # net movement posted this run (earned less reversed), pending included
    unattributed_orders: int = 0  # orders with no known member (guests)
    pending: int = 0  # of the earned points, how many are locked in the return window
    reversed: int = 0  # points taken back by refunds and cancellations
    debt: int = 0  # of those, how many the member had already spent (recorded as negative balance)


@dataclass
class JobCounts:
    """What a nightly job did: lots touched, entries written, points moved."""

    lots: int = 0
    entries: int = 0
    points: int = 0
    members: int = 0


@dataclass(frozen=True)
class Lot:
    id: int
    member_id: str
    kind: str
    store_code: str | None
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime | None
    pending: bool
    expires_at: datetime | None
    parent_id: int | None


@dataclass(frozen=True)
class Difference:
    """One thing ``reconcile`` found that does not add up."""

    check: str
    key: str
    expected: int
    found: int


@dataclass
class Liability:
    available: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.available + self.pending


# ----------------------------------------------------------------------------------------------- hashing
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _instant(value: datetime | None) -> str:
    """Microseconds since the epoch: the same instant hashes the same, whatever its offset."""
    return "" if value is None else str((value - _EPOCH) // _MICROSECOND)


def payload_hash(
    *,
    member_id: str,
    kind: str,
    points: int,
    store_code: str | None,
    channel: str | None,
    occurred_at: datetime,
    ref: str | None = None,
    reason: str | None = None,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> str:
    """What an entry says, so a replay of its natural key with different content can be refused.
    Times are compared as instants, whatever offset they were written with."""

    text = "|".join(
        (
            member_id,
            kind,
            str(points),
            store_code or "",
            channel or "",
            _instant(occurred_at),
            ref or "",
            reason or "",
            _instant(available_at),
            _instant(expires_at),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _entry_hash(entry: LedgerEntry) -> str:
    return payload_hash(
        member_id=entry.member_id,
        kind=entry.kind.value,
        points=entry.points,
        store_code=entry.store_code,
        channel=entry.channel.value if entry.channel else None,
        occurred_at=entry.occurred_at,
        ref=entry.ref,
        reason=entry.reason,
        available_at=entry.available_at,
        expires_at=entry.expires_at,
    )


# ----------------------------------------------------------------------------------------------- locking
def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _upsert(session: Session, table: Table) -> Any:
    return (postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert)(table)


def _ensure_accounts(session: Session, members: Iterable[str]) -> None:
    rows = [{"member_id": m, "balance": 0, "pending": 0, "version": 0, "updated_at": utcnow()} for m in members]
    if rows:
        session.execute(_upsert(session, ACC).on_conflict_do_nothing(index_elements=["member_id"]), rows)


_LOCK_PG = (
    select(ACC.c.member_id, ACC.c.balance, ACC.c.pending)
    .where(ACC.c.member_id.in_(bindparam("members", expanding=True)))
    .order_by(ACC.c.member_id)
    .with_for_update()
)
_LOCK_SQLITE = (
    update(ACC)
    .where(ACC.c.member_id.in_(bindparam("members", expanding=True)))
    .values(version=ACC.c.version + 1)
    .returning(ACC.c.member_id, ACC.c.balance, ACC.c.pending)
)


def _lock(session: Session, members: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Lock the accounts of ``members`` (in a fixed order, so two movements cannot deadlock) and
    return their cached (balance, pending). Everything read after this is current."""
    ordered = sorted(set(members))
    if not ordered:
        return {}
    for _attempt in range(2):
        if _dialect(session) == "postgresql":
            rows = session.execute(_LOCK_PG, {"members": ordered}).all()
        else:  # SQLite has no row locks: the first write of a transaction takes the database's write lock
            rows = session.execute(_LOCK_SQLITE, {"members": ordered}).all()
        found = {r.member_id: (int(r.balance), int(r.pending)) for r in rows}
        if len(found) == len(ordered):
            return found
        _ensure_accounts(session, [m for m in ordered if m not in found])
    raise LedgerError(f"could not lock the points accounts of {ordered}")  # pragma: no cover - a bug


_BUMP = (
    update(ACC)
    .where(ACC.c.member_id == bindparam("m"))
    .values(
        balance=ACC.c.balance + bindparam("db"),
        pending=ACC.c.pending + bindparam("dp"),
        version=ACC.c.version + 1,
        updated_at=bindparam("now"),
    )
)


def _bump(session: Session, deltas: dict[str, tuple[int, int]]) -> None:
    rows = [{"m": m, "db": b, "dp": p, "now": utcnow()} for m, (b, p) in sorted(deltas.items()) if b != 0 or p != 0]
    if rows:
        session.execute(_BUMP, rows)


# ----------------------------------------------------------------------------------------------- primitives
_INSERT_ENTRY = insert(E).returning(E.c.id)


def _insert_entry(session: Session, values: dict[str, Any]) -> int:
    return int(session.execute(_INSERT_ENTRY, values).scalar_one())


def _entry_values(entry: LedgerEntry, digest: str, points: int, pending_points: int) -> dict[str, Any]:
    return {
        "member_id": entry.member_id,
        "kind": entry.kind.value,
        "points": points,
        "pending_points": pending_points,
        "store_code": entry.store_code,
        "channel": entry.channel.value if entry.channel else None,
        "source": entry.source,
        "document": entry.document,
        "payload_hash": digest,
        "actor": entry.actor,
        "occurred_at": entry.occurred_at,
        "recorded_at": utcnow(),
        "reason": entry.reason,
        "ref": entry.ref,
        "available_at": entry.available_at,
        "expires_at": entry.expires_at,
    }


def _hub_entry(
    member_id: str,
    kind: EntryKind,
    points: int,
    pending_points: int,
    document: str,
    *,
    occurred_at: datetime,
    actor: str = "system",
    store_code: str | None = None,
    channel: str | None = None,
    ref: str | None = None,
    reason: str | None = None,
    source: str = HUB,
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "kind": kind.value,
        "points": points,
        "pending_points": pending_points,
        "store_code": store_code,
        "channel": channel,
        "source": source,
        "document": document,
        "payload_hash": payload_hash(
            member_id=member_id,
            kind=kind.value,
            points=points + pending_points,
            store_code=store_code,
            channel=channel,
            occurred_at=occurred_at,
            ref=ref,
            reason=reason,
        ),
        "actor": actor,
        "occurred_at": occurred_at,
        "recorded_at": utcnow(),
        "reason": reason,
        "ref": ref,
        "available_at": None,
        "expires_at": None,
    }


def _open_lot(session: Session, **values: Any) -> int:
    values.setdefault("parent_id", None)
    values.setdefault("remaining", values["points"])
    return int(session.execute(insert(L).returning(L.c.id), [values]).scalar_one())


_DRAW = update(L).where(L.c.id == bindparam("lot")).values(remaining=L.c.remaining + bindparam("delta"))


def _allocate(session: Session, entry_id: int, moves: Sequence[tuple[int, int]]) -> None:
    """Record that ``entry_id`` moved ``points`` into (positive) or out of (negative) each lot."""
    moves = [(lot, pts) for lot, pts in moves if pts != 0]
    if not moves:
        return
    if _dialect(session) == "postgresql":  # one round trip: a redemption's latency is mostly round trips
        values = ", ".join(f"(CAST(:l{i} AS BIGINT), CAST(:p{i} AS BIGINT))" for i in range(len(moves)))
        params: dict[str, int] = {"entry": entry_id}
        for i, (lot, pts) in enumerate(moves):
            params[f"l{i}"], params[f"p{i}"] = lot, pts
        session.execute(
            text(
                f"WITH moves (lot_id, points) AS (VALUES {values}), "
                # UPDATE ... FROM applies one matching row per lot: sum a lot's moves first
                "drawn AS (UPDATE points_lots SET remaining = points_lots.remaining + m.points "
                "FROM (SELECT lot_id, sum(points) AS points FROM moves GROUP BY lot_id) AS m "
                "WHERE points_lots.id = m.lot_id) "
                "INSERT INTO points_allocations (entry_id, lot_id, points) SELECT :entry, lot_id, points FROM moves"
            ),
            params,
        )
        return
    session.execute(insert(A), [{"entry_id": entry_id, "lot_id": lot, "points": pts} for lot, pts in moves])
    session.execute(_DRAW, [{"lot": lot, "delta": pts} for lot, pts in moves])


_SPEND_ORDER = (L.c.expires_at.is_(None), L.c.expires_at, L.c.earned_at, L.c.id)


_SPENDABLE = (
    select(L.c.id, L.c.remaining)
    .where(L.c.member_id == bindparam("m"), ~L.c.pending, L.c.remaining > 0)
    .order_by(*_SPEND_ORDER)
)


def _spendable(session: Session, member_id: str, exclude: Iterable[int] = ()) -> list[Row[Any]]:
    """Spendable lots, soonest-expiring first (never-expiring last, then oldest)."""
    excluded = set(exclude)
    return [lot for lot in session.execute(_SPENDABLE, {"m": member_id}) if lot.id not in excluded]


def _draw(lots: Sequence[Row[Any]], need: int) -> tuple[list[tuple[int, int]], int]:
    """Take up to ``need`` from ``lots`` in their order: the moves, and what is still missing."""
    moves = []
    for lot in lots:
        if need <= 0:
            break
        take = min(int(lot.remaining), need)
        moves.append((int(lot.id), -take))
        need -= take
    return moves, need


def _settle(session: Session, member_id: str, entry_id: int) -> int:
    """Pay the member's debt lots from their spendable lots; tagged with the entry that brought the
    credit. Returns the points settled. Balances do not change: both sides are spendable."""
    debts = session.execute(
        select(L.c.id, L.c.remaining)
        .where(L.c.member_id == member_id, ~L.c.pending, L.c.remaining < 0)
        .order_by(L.c.earned_at, L.c.id)
    ).all()
    if not debts:
        return 0
    lots = _spendable(session, member_id)
    moves: list[tuple[int, int]] = []
    settled = 0
    available = [[int(lot.id), int(lot.remaining)] for lot in lots]
    for debt in debts:
        owed = -int(debt.remaining)
        for slot in available:
            if owed == 0:
                break
            take = min(slot[1], owed)
            if take:
                slot[1] -= take
                owed -= take
                moves.append((slot[0], -take))
                moves.append((int(debt.id), take))
                settled += take
    _allocate(session, entry_id, moves)
    return settled


_FIND = select(E).where(E.c.source == bindparam("s"), E.c.document == bindparam("d"), E.c.kind == bindparam("k"))


def _find(session: Session, source: str, document: str, kind: str) -> Row[Any] | None:
    return session.execute(_FIND, {"s": source, "d": document, "k": kind}).first()


# ----------------------------------------------------------------------------------------------- posting
def post(session: Session, entry: LedgerEntry, *, now: datetime | None = None) -> bool:
    """Append ``entry`` unless its natural key is already there. True when it was appended.

    The same key with the same content changes nothing; with different content it is refused.
    Earnings and positive adjustments open a lot (pending while ``available_at`` is after ``now``);
    redemptions and negative adjustments draw on spendable lots soonest-expiring first and are refused
    beyond the balance; a reversal needs ``ref``: an order's earning document (takes points back) or a
    redemption's document (gives them back to their lots). Transfers, expiry and release are made by
    ``transfer_balance``, ``split_balance``, ``expire`` and ``release_pending``.
    """
    if entry.kind in (EntryKind.transfer, EntryKind.expire, EntryKind.release):
        raise LedgerError(
            f"{entry.kind.value} entries are made by the hub's own jobs (transfer_balance, split_balance, "
            "expire, release_pending), not posted directly"
        )
    digest = _entry_hash(entry)
    if _already_posted(session, entry, digest):  # a replay: nothing to lock, nothing to write
        return False
    _lock(session, [entry.member_id])
    if _already_posted(session, entry, digest):  # a concurrent twin held the lock and wrote it
        return False
    now = now or utcnow()
    if entry.kind == EntryKind.earn or (entry.kind == EntryKind.adjust and entry.points >= 0):
        _credit(session, entry, digest, now)
    elif entry.kind in (EntryKind.redeem, EntryKind.adjust):
        _debit(session, entry, digest)
    elif entry.points < 0:
        _reverse_earning(session, entry, digest)
    else:
        _restore_redemption(session, entry, digest)
    return True


def _already_posted(session: Session, entry: LedgerEntry, digest: str) -> bool:
    existing = _find(session, entry.source, entry.document, entry.kind.value)
    if existing is None:
        return False
    if existing.payload_hash != digest:
        raise LedgerError(
            f"ledger entry {entry.source}/{entry.document}/{entry.kind.value} was already posted with "
            f"different content ({existing.points + existing.pending_points} points for {existing.member_id}); "
            "refusing to change it — post an adjustment or a reversal instead"
        )
    return True


def _credit(session: Session, entry: LedgerEntry, digest: str, now: datetime) -> int:
    pending = entry.available_at is not None and entry.available_at > now
    spendable, locked = (0, entry.points) if pending else (entry.points, 0)
    entry_id = _insert_entry(session, _entry_values(entry, digest, spendable, locked))
    if entry.points > 0:
        _open_lot(
            session,
            member_id=entry.member_id,
            entry_id=entry_id,
            origin_entry_id=entry_id,
            kind=entry.kind.value,
            store_code=entry.store_code,
            channel=entry.channel.value if entry.channel else None,
            points=entry.points,
            earned_at=entry.occurred_at,
            available_at=entry.available_at,
            pending=pending,
            expires_at=entry.expires_at,
        )
    _bump(session, {entry.member_id: (spendable, locked)})
    if spendable:
        _settle(session, entry.member_id, entry_id)
    return entry_id


def _debit(session: Session, entry: LedgerEntry, digest: str, *, allow_debt: bool = False) -> int:
    need = -entry.points
    lots = _spendable(session, entry.member_id)
    moves, missing = _draw(lots, need)
    if missing and not allow_debt:
        have = need - missing
        raise InsufficientPoints(
            f"{entry.member_id} has {have} spendable points; {entry.kind.value} {entry.source}/{entry.document} "
            f"needs {need}"
        )
    entry_id = _insert_entry(session, _entry_values(entry, digest, entry.points, 0))
    _allocate(session, entry_id, moves)
    if missing:
        _open_debt(session, entry_id, entry.member_id, missing, entry.store_code, entry.channel, entry.occurred_at)
    _bump(session, {entry.member_id: (entry.points, 0)})
    return entry_id


def _open_debt(
    session: Session,
    entry_id: int,
    member_id: str,
    points: int,
    store_code: str | None,
    channel: Any,
    at: datetime,
) -> None:
    _open_lot(
        session,
        member_id=member_id,
        entry_id=entry_id,
        origin_entry_id=entry_id,
        kind="debt",
        store_code=store_code,
        channel=getattr(channel, "value", channel),
        points=-points,
        earned_at=at,
        available_at=None,
        pending=False,
        expires_at=None,
    )


def _earning_of(session: Session, source: str, document: str | None) -> Row[Any]:
    earning = _find(session, source, document or "", EntryKind.earn.value) if document else None
    if earning is None:
        raise LedgerError(f"a reversal needs `ref`: the earning it takes back ({source}/{document} was not found)")
    return earning


def _reversal_room(session: Session, earning: Row[Any]) -> tuple[int, int]:
    """(points of the earning already reversed, points of it that expired unspent)."""
    reversed_ = -int(
        session.scalar(
            select(func.coalesce(func.sum(E.c.points + E.c.pending_points), 0)).where(
                E.c.source == earning.source, E.c.ref == earning.document, E.c.kind == EntryKind.reverse.value
            )
        )
    )
    expired = -int(
        session.scalar(
            select(func.coalesce(func.sum(A.c.points), 0))
            .join(E, E.c.id == A.c.entry_id)
            .join(L, L.c.id == A.c.lot_id)
            .where(L.c.origin_entry_id == earning.id, E.c.kind == EntryKind.expire.value)
        )
    )
    return reversed_, expired


def _reverse_earning(session: Session, entry: LedgerEntry, digest: str) -> int:
    earning = _earning_of(session, entry.source, entry.ref)
    earned = int(earning.points + earning.pending_points)
    reversed_, _expired = _reversal_room(session, earning)
    need = -entry.points
    if reversed_ + need > earned:
        raise LedgerError(
            f"reversing {need} points of {entry.source}/{entry.ref} would take back more than it earned "
            f"({earned}, of which {reversed_} already reversed)"
        )
    return _claw_back(session, entry, digest, earning, need)


def _claw_back(session: Session, entry: LedgerEntry, digest: str, earning: Row[Any], need: int) -> int:
    """Take ``need`` points back for a refunded order: its own lots, then other spendable lots, then debt."""
    own = session.execute(
        select(L.c.id, L.c.remaining, L.c.pending)
        .where(L.c.origin_entry_id == earning.id, L.c.member_id == entry.member_id, L.c.remaining > 0)
        .order_by(L.c.id)
    ).all()
    moves, missing = _draw(own, need)
    pending_lots = {int(lot.id) for lot in own if lot.pending}
    from_pending = -sum(pts for lot, pts in moves if lot in pending_lots)
    if missing:
        more, missing = _draw(_spendable(session, entry.member_id, exclude=[int(lot.id) for lot in own]), missing)
        moves += more
    spendable = -(need - from_pending)
    entry_id = _insert_entry(session, _entry_values(entry, digest, spendable, -from_pending))
    _allocate(session, entry_id, moves)
    if missing:
        _open_debt(session, entry_id, entry.member_id, missing, entry.store_code, entry.channel, entry.occurred_at)
    _bump(session, {entry.member_id: (spendable, -from_pending)})
    return missing


def _live_lot(session: Session, lot_id: int, member_id: str) -> int | None:
    """The lot ``lot_id`` became for ``member_id``, following merges and splits."""
    seen = 0
    while seen < 64:
        row = session.execute(select(L.c.id, L.c.member_id).where(L.c.id == lot_id)).one()
        if row.member_id == member_id:
            return lot_id
        child = session.scalar(select(L.c.id).where(L.c.parent_id == lot_id).order_by(L.c.id.desc()).limit(1))
        if child is None:
            return None
        lot_id, seen = int(child), seen + 1
    return None


def _restore_redemption(session: Session, entry: LedgerEntry, digest: str) -> int:
    redemption = _find(session, entry.source, entry.ref or "", EntryKind.redeem.value) if entry.ref else None
    if redemption is None:
        raise LedgerError(
            f"a positive reversal cancels a redemption; `ref` must name one ({entry.source}/{entry.ref} not found)"
        )
    if entry.points != -redemption.points:
        raise LedgerError(
            f"cancelling {entry.source}/{entry.ref} gives back exactly the {-redemption.points} points it took, "
            f"not {entry.points}"
        )
    taken = session.execute(select(A.c.lot_id, A.c.points).where(A.c.entry_id == redemption.id).order_by(A.c.id)).all()
    entry_id = _insert_entry(session, _entry_values(entry, digest, entry.points, 0))
    moves: list[tuple[int, int]] = []
    for lot_id, points in taken:
        live = _live_lot(session, int(lot_id), entry.member_id)
        if live is None:  # the lot left with a split: give the points back as a lot with the same terms
            live = _copy_lot(session, int(lot_id), entry.member_id, entry_id)
        moves.append((live, -int(points)))
    _allocate(session, entry_id, moves)
    _bump(session, {entry.member_id: (entry.points, 0)})
    _settle(session, entry.member_id, entry_id)
    return entry_id


def _copy_lot(session: Session, lot_id: int, member_id: str, entry_id: int) -> int:
    lot = session.execute(select(L).where(L.c.id == lot_id)).one()
    return _open_lot(
        session,
        member_id=member_id,
        entry_id=entry_id,
        origin_entry_id=lot.origin_entry_id,
        parent_id=lot.id,
        kind=lot.kind,
        store_code=lot.store_code,
        channel=lot.channel,
        points=0,
        earned_at=lot.earned_at,
        available_at=lot.available_at,
        pending=False,
        expires_at=lot.expires_at,
    )


# ----------------------------------------------------------------------------------------------- operations
def redeem(
    session: Session,
    member_id: str,
    points: int,
    *,
    source: str,
    document: str,
    store_code: str | None = None,
    channel: str | None = None,
    actor: str = "system",
    at: datetime | None = None,
) -> bool:
    """Spend ``points`` (积分抵现) at any store; refused with InsufficientPoints beyond the balance."""
    if points <= 0:
        raise LedgerError(f"a redemption spends a positive number of points, not {points}")
    return post(
        session,
        LedgerEntry(
            member_id=member_id,
            kind=EntryKind.redeem,
            points=-points,
            store_code=store_code,
            channel=channel,
            source=source,
            document=document,
            actor=actor,
            occurred_at=at or utcnow(),
        ),
    )


def cancel_redemption(
    session: Session, *, source: str, document: str, actor: str = "system", at: datetime | None = None
) -> bool:
    """Give a redemption's points back to the lots they came from, with their original expiry."""
    redemption = _find(session, source, document, EntryKind.redeem.value)
    if redemption is None:
        raise LedgerError(f"no redemption {source}/{document} to cancel")
    from hub.resolve import active_member_id

    return post(
        session,
        LedgerEntry(
            member_id=active_member_id(session, redemption.member_id),
            kind=EntryKind.reverse,
            points=-redemption.points,
            store_code=redemption.store_code,
            channel=redemption.channel,
            source=source,
            document=f"{document}/cancel",
            ref=document,
            actor=actor,
            occurred_at=at or utcnow(),
        ),
    )


def adjust(
    session: Session,
    member_id: str,
    delta: int,
    *,
    reason: str,
    actor: str,
    programme: ProgrammeConfig | None = None,
    document: str | None = None,
    store_code: str | None = None,
    at: datetime | None = None,
) -> int:
    """A person's correction, audited. A positive delta opens a lot that expires under the programme's
    policy; a negative one draws on lots like a redemption and is refused beyond the balance.
    Returns the new balance. ``document`` makes a retried call idempotent."""
    if delta == 0:
        raise LedgerError("an adjustment of 0 points changes nothing")
    if not reason.strip():
        raise LedgerError("an adjustment needs a reason (it is kept in the ledger and the audit log)")
    when = at or utcnow()
    before = balance(session, member_id)
    entry = LedgerEntry(
        member_id=member_id,
        kind=EntryKind.adjust,
        points=delta,
        store_code=store_code,
        source=HUB,
        document=document or f"adjust:{uuid.uuid4().hex}",
        actor=actor,
        reason=reason,
        occurred_at=when,
        expires_at=calendar.expires_at(programme, when) if programme is not None and delta > 0 else None,
    )
    if not post(session, entry):
        return before
    after = balance(session, member_id)
    session.add(
        AuditLog(
            actor=actor,
            action="points.adjust",
            entity="member",
            entity_id=member_id,
            before={"balance": before},
            after={"balance": after, "delta": delta, "reason": reason, "document": entry.document},
        )
    )
    return after


# ----------------------------------------------------------------------------------------------- orders
def points_for(amount: Decimal, points_per_unit: int | Decimal) -> int:
    """Whole points for an amount: 1 point per whole currency unit by default, never rounded up."""
    return int((amount * points_per_unit).to_integral_value(rounding=ROUND_FLOOR))


def _programme(value: ProgrammeConfig | int) -> ProgrammeConfig:
    return value if isinstance(value, ProgrammeConfig) else ProgrammeConfig(points_per_unit=value)


def _owners(session: Session) -> dict[tuple[str, str], str]:
    return {
        (source, source_id): member_id
        for source, source_id, member_id in session.execute(
            select(StagedMember.source, StagedMember.source_id, MemberLink.member_id).join(
                MemberLink, MemberLink.staged_member_id == StagedMember.id
            )
        )
    }


def _tier_history(session: Session) -> dict[str, list[tuple[datetime, str]]]:
    history: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    rows = session.execute(
        select(TierAssignmentRow.member_id, TierAssignmentRow.assigned_at, TierAssignmentRow.tier).order_by(
            TierAssignmentRow.id
        )
    )
    for member_id, at, tier in rows:
        history[member_id].append((at, tier))
    return history


def _tier_at(history: list[tuple[datetime, str]], at: datetime) -> str | None:
    tier = None
    for assigned_at, name in history:
        if assigned_at <= at:
            tier = name
    return tier


def refund_target(earned: int, total: Decimal, refunded: Decimal, status: str) -> int:
    """Points a refund takes back in total: in proportion to the amount refunded, rounded in the
    member's favour, all of them when the order is cancelled, never more than it earned."""
    if status == "cancelled":
        return earned
    if total <= 0 or refunded <= 0:
        return 0
    return min(earned, int((earned * refunded / total).to_integral_value(rounding=ROUND_FLOOR)))


def post_orders(
    session: Session, programme: ProgrammeConfig | int, *, now: datetime | None = None, actor: str = "system"
) -> PostCounts:
    """Earn points for every attributed order under the programme's earn rules, and take back what
    refunds and cancellations took back.

    An order earns once (document ``order:ID``); each later refund state posts one reversal
    (``order:ID/refund:AMOUNT:STATUS``, ``ref`` ``order:ID``) for the part not yet reversed, so
    re-runs change nothing. New earnings are written in bulk (COPY on PostgreSQL) and only add to
    balances, so redemptions may run alongside; reversals are posted one by one under the member's
    lock. Orders are taken in order of time, so caps per day or month are deterministic. Run one
    ``post_orders`` at a time (the pipeline does): two racing on the same order fail on its natural key
    and the loser's transaction changes nothing.
    ``programme`` may be a bare points-per-unit rate (the skeleton's signature).
    """
    programme = _programme(programme)
    now = now or utcnow()
    rules = EarnRules(programme)
    counts = PostCounts()
    owner = _owners(session)
    earned: dict[tuple[str, str], int] = {}
    for source, document, points, pending in session.execute(
        select(E.c.source, E.c.document, E.c.points, E.c.pending_points).where(
            E.c.kind == EntryKind.earn.value, E.c.document.like("order:%")
        )
    ):
        earned[(source, document)] = int(points + pending)
    reversed_: dict[tuple[str, str], int] = defaultdict(int)
    for source, ref, points in session.execute(
        select(E.c.source, E.c.ref, E.c.points + E.c.pending_points).where(
            E.c.kind == EntryKind.reverse.value, E.c.ref.like("order:%")
        )
    ):
        reversed_[(source, ref)] -= int(points)
    tiers = _tier_history(session) if rules.needs_tier else {}
    used: dict[tuple[str, str], int] = defaultdict(int)
    if rules.period_caps:
        for member_id, at, points in session.execute(
            select(E.c.member_id, E.c.occurred_at, E.c.points + E.c.pending_points).where(
                E.c.kind == EntryKind.earn.value
            )
        ):
            for key in rules.period_keys(at):
                used[(member_id, key)] += int(points)

    o = StagedOrder.__table__.c  # Core columns: rows without the ORM's per-row work
    raw = _raw if _dialect(session) == "postgresql" else (lambda column: column)
    columns = [
        o.id,
        o.source,
        o.source_id,
        o.member_source_id,
        o.store_code,
        o.channel,
        o.status,
        raw(o.total_amount),
        raw(o.refunded_amount),
        raw(o.ordered_at),
        raw(o.updated_at),
    ]
    if rules.needs_lines:
        columns.append(o.lines)
    query = select(*columns).where(o.status.in_(EARNING_STATUSES))
    new: list[_NewEarning] = []
    terms = _Terms(programme)
    refunds: list[tuple[str, Any, str, int]] = []
    needs_lines = rules.needs_lines

    def already(member_id: str, period: str) -> int:
        return used[(member_id, period)]

    for order in session.execute(query.order_by(o.ordered_at, o.id)).all():
        member_id = owner.get((order.source, order.member_source_id or ""))
        if member_id is None:
            counts.unattributed_orders += 1
            continue
        document = f"order:{order.source_id}"
        key = (order.source, document)
        points = earned.get(key)
        if points is None:
            if order.status == "cancelled":
                continue  # never earned, nothing to take back
            facts = OrderFacts(
                member_id,
                order.store_code,
                order.channel,
                order.total_amount,
                order.ordered_at,
                _lines(order.lines) if needs_lines else (),
                _tier_at(tiers.get(member_id, []), order.ordered_at) if tiers else None,
            )
            earning = rules.earn(facts, already)
            points = earning.points
            for period in rules.period_keys(order.ordered_at) if rules.period_caps else ():
                used[(member_id, period)] += points
            available, expires = terms(order.ordered_at) if points > 0 else (None, None)
            new.append(_NewEarning(member_id, points, order, document, earning.explain, available, expires))
            earned[key] = points
        if order.status == "paid" and not order.refunded_amount:
            continue  # the common case: nothing to take back
        target = refund_target(points, order.total_amount, order.refunded_amount, order.status)
        if target > reversed_.get(key, 0):
            refunds.append((member_id, order, document, target))
    _bulk_earn(session, new, counts, now, actor)
    for member_id, order, document, target in refunds:
        _refund(session, member_id, order, document, target, counts, actor)
    return counts


def _raw(column: Any) -> Any:
    """The driver's own value: psycopg already gives Decimal for numeric and aware datetimes for
    timestamptz, so the hub's per-value converters, which SQLite needs, are skipped."""
    return type_coerce(column, NullType()).label(column.name)


def _lines(value: Any) -> list[tuple[str | None, Decimal]]:
    items = (value or {}).get("items", []) if isinstance(value, dict) else []
    lines = []
    for item in items:
        price = item.get("unit_price") or {}
        lines.append((item.get("sku"), Decimal(str(price.get("amount", 0))) * int(item.get("quantity", 1))))
    return lines


ENTRY_COLUMNS = (
    "id",
    "member_id",
    "kind",
    "points",
    "pending_points",
    "store_code",
    "channel",
    "source",
    "document",
    "payload_hash",
    "actor",
    "occurred_at",
    "recorded_at",
    "reason",
    "ref",
    "available_at",
    "expires_at",
)
LOT_COLUMNS = (
    "member_id",
    "entry_id",
    "origin_entry_id",
    "parent_id",
    "kind",
    "store_code",
    "channel",
    "points",
    "remaining",
    "earned_at",
    "available_at",
    "pending",
    "expires_at",
)


class _NewEarning(NamedTuple):
    member_id: str
    points: int
    order: Any
    document: str
    explain: str
    available_at: datetime | None
    expires_at: datetime | None


class _Terms:
    """Pending and expiry terms of an order's lot; expiry is computed once per local day."""

    def __init__(self, programme: ProgrammeConfig) -> None:
        self.programme = programme
        self.pending = timedelta(days=programme.pending_days) if programme.pending_days else None
        self.expiry: dict[date, datetime | None] = {}

    def __call__(self, ordered_at: datetime) -> tuple[datetime | None, datetime | None]:
        available = ordered_at + self.pending if self.pending else None
        if self.programme.expiry.policy == "never":
            return available, None
        day = calendar.local_date(self.programme, ordered_at)
        if day not in self.expiry:
            self.expiry[day] = calendar.expires_at(self.programme, ordered_at)
        return available, self.expiry[day]


_PG_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "TEXT": "text", "BOOLEAN": "bool"}


def _pg_type(column: Any) -> str:
    name = column.type.compile(dialect=postgresql.dialect())
    if name.startswith("VARCHAR"):
        return "varchar"
    if name.startswith("TIMESTAMP"):
        return "timestamptz"
    return _PG_TYPES[name]


def _write(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    *,
    name: str | None = None,
) -> None:
    """Append many rows: binary COPY on PostgreSQL (into ``name`` if given, a table shaped like
    ``table``), executemany elsewhere. ``rows`` may be a generator: the database takes rows while
    the next ones are being made."""
    if _dialect(session) == "postgresql":
        driver = session.connection().connection.driver_connection
        statement = f"COPY {name or table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types([_pg_type(table.c[column]) for column in columns])
            for row in rows:
                copy.write_row(row)
        return
    params = [dict(zip(columns, row, strict=True)) for row in rows]
    if params:
        session.execute(insert(table), params)


def _earn_rows(earnings: list[_NewEarning], now: datetime, actor: str, stamp: datetime) -> Iterable[tuple[Any, ...]]:
    """The ledger rows of new earnings, without their ids (ENTRY_COLUMNS[1:])."""
    earn = EntryKind.earn.value
    for e in earnings:
        order = e.order
        pending = e.available_at is not None and e.available_at > now
        yield (
            e.member_id,
            earn,
            0 if pending else e.points,
            e.points if pending else 0,
            order.store_code,
            order.channel,
            order.source,
            e.document,
            payload_hash(
                member_id=e.member_id,
                kind=earn,
                points=e.points,
                store_code=order.store_code,
                channel=order.channel,
                occurred_at=order.ordered_at,
                reason=e.explain,
                available_at=e.available_at,
                expires_at=e.expires_at,
            ),
            actor,
            order.ordered_at,
            stamp,
            e.explain,
            None,
            e.available_at,
            e.expires_at,
        )


def _bulk_earn(session: Session, earnings: list[_NewEarning], counts: PostCounts, now: datetime, actor: str) -> None:
    """Write many earnings at once: the entries (streamed), then their lots made by the database from
    those entries, then the account caches; then pay any debts from the new points."""
    if not earnings:
        return
    debtors = set(session.scalars(select(ACC.c.member_id).where(ACC.c.balance < 0)))  # debt ⇔ negative balance
    floor = int(session.scalar(select(func.coalesce(func.max(E.c.id), 0))))
    stamp = utcnow()
    _write(session, E, ENTRY_COLUMNS[1:], _earn_rows(earnings, now, actor, stamp))
    # this batch: written after ``floor``, with its own stamp (a concurrent writer's rows are not)
    batch = (E.c.id > floor) & (E.c.recorded_at == stamp) & (E.c.kind == EntryKind.earn.value) & (E.c.actor == actor)
    total = E.c.points + E.c.pending_points
    session.execute(
        insert(L).from_select(
            LOT_COLUMNS,
            select(
                E.c.member_id,
                E.c.id,
                E.c.id,
                null(),
                literal(EntryKind.earn.value),
                E.c.store_code,
                E.c.channel,
                total,
                total,
                E.c.occurred_at,
                E.c.available_at,
                E.c.pending_points > 0,
                E.c.expires_at,
            ).where(batch, total > 0),
        )
    )
    deltas: dict[str, tuple[int, int]] = {}
    for e in earnings:
        pending = e.available_at is not None and e.available_at > now
        b, p = deltas.get(e.member_id, (0, 0))
        deltas[e.member_id] = (b, p + e.points) if pending else (b + e.points, p)
        counts.pending += e.points if pending else 0
    counts.entries += len(earnings)
    counts.points += sum(e.points for e in earnings)
    _add_to_accounts(session, deltas)
    paying = sorted(m for m in debtors & set(deltas) if deltas[m][0] > 0)
    if paying:
        last = dict(
            session.execute(
                select(E.c.member_id, func.max(E.c.id)).where(batch, E.c.member_id.in_(paying)).group_by(E.c.member_id)
            ).all()
        )
        for member_id in paying:
            _lock(session, [member_id])
            _settle(session, member_id, int(last[member_id]))


def _add_to_accounts(session: Session, deltas: dict[str, tuple[int, int]]) -> None:
    """Add to many accounts' cached balances, creating missing ones, in member order."""
    stamp = utcnow()
    rows = [(m, b, p, 0, stamp) for m, (b, p) in sorted(deltas.items())]
    columns = ("member_id", "balance", "pending", "version", "updated_at")
    if _dialect(session) == "postgresql":
        session.execute(
            text(
                "CREATE TEMP TABLE IF NOT EXISTS points_account_deltas "
                "(LIKE points_accounts INCLUDING DEFAULTS) ON COMMIT DROP"
            )
        )
        session.execute(text("TRUNCATE points_account_deltas"))
        _write(session, ACC, columns, rows, name="points_account_deltas")
        session.execute(
            text(
                "INSERT INTO points_accounts (member_id, balance, pending, version, updated_at) "
                "SELECT member_id, balance, pending, version, updated_at FROM points_account_deltas ORDER BY member_id "
                "ON CONFLICT (member_id) DO UPDATE SET balance = points_accounts.balance + excluded.balance, "
                "pending = points_accounts.pending + excluded.pending, version = points_accounts.version + 1, "
                "updated_at = excluded.updated_at"
            )
        )
        return
    upsert = _upsert(session, ACC)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["member_id"],
            set_={
                "balance": ACC.c.balance + upsert.excluded.balance,
                "pending": ACC.c.pending + upsert.excluded.pending,
                "version": ACC.c.version + 1,
                "updated_at": upsert.excluded.updated_at,
            },
        ),
        [dict(zip(columns, row, strict=True)) for row in rows],
    )


def _refund(
    session: Session, member_id: str, order: Any, document: str, target: int, counts: PostCounts, actor: str
) -> None:
    taken, shortfall = refund(
        session,
        member_id,
        source=order.source,
        order_document=document,
        target=target,
        document=f"{document}/refund:{order.refunded_amount}:{order.status}",
        store_code=order.store_code,
        channel=order.channel,
        at=order.updated_at or order.ordered_at,
        actor=actor,
    )
    if taken:
        counts.entries += 1
        counts.points -= taken
        counts.reversed += taken
        counts.debt += shortfall


def refund(
    session: Session,
    member_id: str,
    *,
    source: str,
    order_document: str,
    target: int,
    document: str,
    store_code: str | None = None,
    channel: str | None = None,
    at: datetime,
    actor: str = "system",
) -> tuple[int, int]:
    """Bring what an order's refunds took back up to ``target`` points in total (see
    ``refund_target``), less any of its points that expired unspent. Returns (points taken back now,
    of which recorded as debt). Posting the same ``document`` again changes nothing."""
    _lock(session, [member_id])
    earning = _find(session, source, order_document, EntryKind.earn.value)
    if earning is None:
        raise LedgerError(f"no earning {source}/{order_document} to reverse")
    earned = int(earning.points + earning.pending_points)
    reversed_, expired = _reversal_room(session, earning)
    need = min(target, earned, earned - expired) - reversed_
    if need <= 0:
        return 0, 0
    entry = LedgerEntry(
        member_id=member_id,
        kind=EntryKind.reverse,
        points=-need,
        store_code=store_code if store_code is not None else earning.store_code,
        channel=channel if channel is not None else earning.channel,
        source=source,
        document=document,
        ref=order_document,
        actor=actor,
        occurred_at=at,
    )
    digest = _entry_hash(entry)
    if _already_posted(session, entry, digest):
        return 0, 0
    return need, _claw_back(session, entry, digest, earning, need)


# ----------------------------------------------------------------------------------------------- merges
def _open_lots(session: Session, member_id: str) -> list[Row[Any]]:
    return list(session.execute(select(L).where(L.c.member_id == member_id, L.c.remaining != 0).order_by(L.c.id)))


def _move_lots(session: Session, lots: Sequence[Any], out_id: int, in_id: int, to_member: str) -> None:
    _allocate(session, out_id, [(int(lot.id), -int(lot.remaining)) for lot in lots])
    if lots:
        session.execute(
            insert(L),
            [
                {
                    "member_id": to_member,
                    "entry_id": in_id,
                    "origin_entry_id": lot.origin_entry_id,
                    "parent_id": lot.id,
                    "kind": lot.kind,
                    "store_code": lot.store_code,
                    "channel": lot.channel,
                    "points": lot.remaining,
                    "remaining": lot.remaining,
                    "earned_at": lot.earned_at,
                    "available_at": lot.available_at,
                    "pending": lot.pending,
                    "expires_at": lot.expires_at,
                }
                for lot in lots
            ],
        )


def _free_document(session: Session, base: str) -> str:
    document, n = base, 1
    while _find(session, HUB, f"{document}:out", EntryKind.transfer.value) is not None:
        n += 1
        document = f"{base}#{n}"
    return document


def _transfer(
    session: Session,
    lots: Sequence[Any],
    from_member: str,
    to_member: str,
    document: str,
    *,
    actor: str,
    at: datetime,
    undo: Sequence[tuple[int, int]] = (),
) -> tuple[int, int, int]:
    """Move ``lots`` (and ``undo`` allocations) between members as a pair of transfer entries."""
    available = sum(int(lot.remaining) for lot in lots if not lot.pending)
    pending = sum(int(lot.remaining) for lot in lots if lot.pending)
    out_id = _insert_entry(
        session,
        _hub_entry(
            from_member,
            EntryKind.transfer,
            -available,
            -pending,
            f"{document}:out",
            occurred_at=at,
            actor=actor,
            ref=document,
        ),
    )
    in_id = _insert_entry(
        session,
        _hub_entry(
            to_member,
            EntryKind.transfer,
            available,
            pending,
            f"{document}:in",
            occurred_at=at,
            actor=actor,
            ref=document,
        ),
    )
    _allocate(session, out_id, undo)
    _move_lots(session, lots, out_id, in_id, to_member)
    _bump(session, {from_member: (-available, -pending), to_member: (available, pending)})
    return available, pending, in_id


def transfer_balance(
    session: Session, from_member: str, to_member: str, *, actor: str = "system", at: datetime | None = None
) -> int:
    """Move a merged member's lots — with their expiry, pending state and any debt — to the surviving
    member, as two audited transfer entries. Returns the spendable points moved."""
    if from_member == to_member:
        return 0
    _lock(session, [from_member, to_member])
    lots = _open_lots(session, from_member)
    if not lots:
        return 0
    when = at or utcnow()
    document = _free_document(session, f"merge:{from_member}->{to_member}")
    available, pending, in_id = _transfer(session, lots, from_member, to_member, document, actor=actor, at=when)
    settled = _settle(session, to_member, in_id)
    session.add(
        AuditLog(
            actor=actor,
            action="points.transfer",
            entity="member",
            entity_id=from_member,
            before={"member_id": from_member, "lots": [int(lot.id) for lot in lots]},
            after={
                "member_id": to_member,
                "document": document,
                "points": available,
                "pending": pending,
                "debt_settled": settled,
            },
        )
    )
    session.flush()
    return available


def split_balance(
    session: Session,
    source_member: str,
    new_member: str,
    *,
    absorbed: str | None = None,
    staged_member_ids: Sequence[int] | None = None,
    actor: str = "system",
    at: datetime | None = None,
) -> int:
    """Move the points of records leaving ``source_member`` to ``new_member`` (the id the split
    mints), each lot with its expiry and pending state, as two audited transfer entries.

    ``absorbed``: undo the merge of that member into ``source_member`` — the lots the merge brought
    go, and debt the merge settled between the two is restored, so with nothing spent in between each
    side ends exactly as it was before the merge.
    ``staged_member_ids``: the lots earned by those source records' orders (wherever they have been
    merged since), and the debt their refunds left, go.
    Returns the spendable points moved."""
    if (absorbed is None) == (staged_member_ids is None):
        raise LedgerError("split_balance needs either the absorbed member or the staged member ids that leave")
    _lock(session, [source_member, new_member])
    when = at or utcnow()
    undo: list[tuple[int, int]] = []
    if absorbed is not None:
        merge_in = _find(session, HUB, f"merge:{absorbed}->{source_member}:in", EntryKind.transfer.value)
        if merge_in is None:
            raise LedgerError(f"no points transfer merge:{absorbed}->{source_member} to split")
        leaving, undo = _merge_lots(session, merge_in.id, source_member)
        origin = merge_in.document
    else:
        leaving = _lots_of_records(session, source_member, staged_member_ids or [])
        origin = f"staged members {sorted(staged_member_ids or [])}"
    if not leaving and not undo:
        return 0
    document = _free_document(session, f"split:{source_member}->{new_member}")
    available, pending, in_id = _transfer(
        session, leaving, source_member, new_member, document, actor=actor, at=when, undo=undo
    )
    _settle(session, source_member, in_id)
    _settle(session, new_member, in_id)
    session.add(
        AuditLog(
            actor=actor,
            action="points.split",
            entity="member",
            entity_id=source_member,
            before={"member_id": source_member, "leaving": origin, "lots": [int(lot.id) for lot in leaving]},
            after={"member_id": new_member, "document": document, "points": available, "pending": pending},
        )
    )
    session.flush()
    return available


def _merge_lots(session: Session, merge_in: int, survivor: str) -> tuple[list[Any], list[tuple[int, int]]]:
    """The lots a merge brought, as they will be once the debt it settled is restored; and that undo."""
    brought: list[Any] = list(
        session.execute(
            select(L)
            .where(
                L.c.entry_id == merge_in,
                L.c.entry_id != L.c.origin_entry_id,  # moved lots: the partial index
                L.c.member_id == survivor,
                L.c.remaining != 0,
            )
            .order_by(L.c.id)
        )
    )
    settled = session.execute(
        select(A.c.lot_id, A.c.points, L.c.member_id)
        .join(L, L.c.id == A.c.lot_id)
        .where(A.c.entry_id == merge_in)
        .order_by(A.c.id)
    ).all()
    if not settled or any(owner != survivor for _lot, _points, owner in settled):
        return brought, []  # nothing settled, or its lots have moved on since: leave it as it is
    undo = [(int(lot_id), -int(points)) for lot_id, points, _owner in settled]
    remaining = {int(lot.id): int(lot.remaining) for lot in brought}
    for lot_id, delta in undo:
        remaining[lot_id] = remaining.get(lot_id, 0) + delta
    rows = {int(r.id): r._mapping for r in session.execute(select(L).where(L.c.id.in_(list(remaining))))}
    lots = [
        SimpleNamespace(**{**rows[i], "remaining": remaining[i]})
        for i in sorted(remaining)
        if rows[i]["entry_id"] == merge_in and remaining[i] != 0
    ]
    return lots, undo


def _lots_of_records(session: Session, member_id: str, staged_member_ids: Sequence[int]) -> list[Any]:
    """Open lots of ``member_id`` earned by orders of these source records, or left by their refunds."""
    orders = session.execute(
        select(StagedOrder.source, StagedOrder.source_id)
        .join(
            StagedMember,
            (StagedMember.source == StagedOrder.source) & (StagedMember.source_id == StagedOrder.member_source_id),
        )
        .where(StagedMember.id.in_(list(staged_member_ids)))
    ).all()
    documents = {(source, f"order:{source_id}") for source, source_id in orders}
    if not documents:
        return []
    lots = session.execute(
        select(L, E.c.source.label("o_source"), E.c.kind.label("o_kind"), E.c.document.label("o_document"), E.c.ref)
        .join(E, E.c.id == L.c.origin_entry_id)
        .where(L.c.member_id == member_id, L.c.remaining != 0)
        .order_by(L.c.id)
    ).all()
    return [
        lot
        for lot in lots
        if (lot.o_source, lot.o_document if lot.o_kind == EntryKind.earn.value else lot.ref) in documents
    ]


# ----------------------------------------------------------------------------------------------- nightly jobs
def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def expire(session: Session, now: datetime, *, actor: str = "system") -> JobCounts:
    """Expire every lot whose validity ended by ``now``: one entry per lot (``lot:ID/expire:N``).
    Idempotent: an expired lot has nothing left, so a re-run finds nothing to do."""
    counts = JobCounts()
    members = sorted(
        set(
            session.scalars(
                select(L.c.member_id)
                .where(L.c.expires_at.is_not(None), L.c.expires_at <= now, L.c.remaining > 0)
                .distinct()
            )
        )
    )
    for chunk in _chunks(members):
        _lock(session, chunk)
        lots = session.execute(
            select(L)
            .where(L.c.member_id.in_(chunk), L.c.remaining > 0, L.c.expires_at <= now)
            .order_by(L.c.member_id, L.c.id)
        ).all()
        earlier = dict(
            session.execute(
                select(E.c.ref, func.count())
                .where(
                    E.c.source == HUB, E.c.kind == EntryKind.expire.value, E.c.ref.in_([f"lot:{r.id}" for r in lots])
                )
                .group_by(E.c.ref)
            ).all()
        )
        deltas: dict[str, tuple[int, int]] = {}
        for lot in lots:
            ref = f"lot:{lot.id}"
            left = int(lot.remaining)
            spendable, locked = (0, -left) if lot.pending else (-left, 0)
            entry_id = _insert_entry(
                session,
                _hub_entry(
                    lot.member_id,
                    EntryKind.expire,
                    spendable,
                    locked,
                    f"{ref}/expire:{earlier.get(ref, 0) + 1}",
                    occurred_at=lot.expires_at,
                    actor=actor,
                    store_code=lot.store_code,
                    channel=lot.channel,
                    ref=ref,
                ),
            )
            _allocate(session, entry_id, [(int(lot.id), -left)])
            b, p = deltas.get(lot.member_id, (0, 0))
            deltas[lot.member_id] = (b + spendable, p + locked)
            counts.lots += 1
            counts.entries += 1
            counts.points += left
        _bump(session, deltas)
        counts.members += len(deltas)
    return counts


def release_pending(session: Session, now: datetime, *, actor: str = "system") -> JobCounts:
    """Make pending lots whose return window ended by ``now`` spendable (``lot:ID/release``), paying
    any debt from them first. Idempotent."""
    counts = JobCounts()
    members = sorted(set(session.scalars(select(L.c.member_id).where(L.c.pending, L.c.available_at <= now).distinct())))
    for chunk in _chunks(members):
        _lock(session, chunk)
        lots = session.execute(
            select(L).where(L.c.member_id.in_(chunk), L.c.pending, L.c.available_at <= now).order_by(L.c.id)
        ).all()
        deltas: dict[str, tuple[int, int]] = {}
        last_entry: dict[str, int] = {}
        for lot in lots:
            left = int(lot.remaining)
            if left:
                ref = f"lot:{lot.id}"
                last_entry[lot.member_id] = _insert_entry(
                    session,
                    _hub_entry(
                        lot.member_id,
                        EntryKind.release,
                        left,
                        -left,
                        f"{ref}/release",
                        occurred_at=lot.available_at,
                        actor=actor,
                        store_code=lot.store_code,
                        channel=lot.channel,
                        ref=ref,
                    ),
                )
                b, p = deltas.get(lot.member_id, (0, 0))
                deltas[lot.member_id] = (b + left, p - left)
                counts.entries += 1
                counts.points += left
            counts.lots += 1
        if lots:
            session.execute(update(L).where(L.c.id.in_([int(lot.id) for lot in lots])).values(pending=False))
        _bump(session, deltas)
        for member_id, entry_id in sorted(last_entry.items()):
            _settle(session, member_id, entry_id)
        counts.members += len(deltas)
    return counts


# ----------------------------------------------------------------------------------------------- reading
def balance(session: Session, member_id: str) -> int:
    """The spendable balance, summed from the ledger (negative: a debt)."""
    return int(session.scalar(select(func.coalesce(func.sum(E.c.points), 0)).where(E.c.member_id == member_id)))


def pending_balance(session: Session, member_id: str) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(E.c.pending_points), 0)).where(E.c.member_id == member_id)))


def balances(session: Session) -> dict[str, int]:
    rows = session.execute(select(E.c.member_id, func.sum(E.c.points)).group_by(E.c.member_id))
    return {member_id: int(total) for member_id, total in rows}


def lots(session: Session, member_id: str, *, open_only: bool = True) -> list[Lot]:
    """A member's lots in the order redemptions draw on them."""
    query = select(L).where(L.c.member_id == member_id)
    if open_only:
        query = query.where(L.c.remaining != 0)
    return [
        Lot(
            id=int(r.id),
            member_id=r.member_id,
            kind=r.kind,
            store_code=r.store_code,
            points=int(r.points),
            remaining=int(r.remaining),
            earned_at=r.earned_at,
            available_at=r.available_at,
            pending=bool(r.pending),
            expires_at=r.expires_at,
            parent_id=r.parent_id,
        )
        for r in session.execute(query.order_by(L.c.pending, *_SPEND_ORDER))
    ]


def history(session: Session, member_id: str) -> list[dict[str, Any]]:
    rows = session.execute(select(E).where(E.c.member_id == member_id).order_by(E.c.occurred_at, E.c.id))
    return [
        {
            "id": r.id,
            "at": r.occurred_at,
            "kind": r.kind,
            "points": int(r.points),
            "pending": int(r.pending_points),
            "store": r.store_code,
            "channel": r.channel,
            "source": r.source,
            "document": r.document,
            "ref": r.ref,
            "actor": r.actor,
            "reason": r.reason,
        }
        for r in rows
    ]


def statement(session: Session, member_id: str) -> dict[str, Any]:
    """Balance, pending, debt, open lots and history: what ``memberhub points show`` prints."""
    open_lots = lots(session, member_id)
    return {
        "member_id": member_id,
        "balance": balance(session, member_id),
        "pending": pending_balance(session, member_id),
        "debt": -sum(lot.remaining for lot in open_lots if lot.remaining < 0),
        "lots": [asdict(lot) for lot in open_lots],
        "history": history(session, member_id),
    }


def liabilities(session: Session) -> dict[str | None, Liability]:
    """Outstanding points per store where they were earned (跨店积分: spent anywhere, owed by the
    earning store). The stores' totals add up to every member's balance plus pending."""
    result: dict[str | None, Liability] = defaultdict(Liability)
    rows = session.execute(
        select(L.c.store_code, L.c.pending, func.sum(L.c.remaining)).group_by(L.c.store_code, L.c.pending)
    )
    for store, pending, total in rows:
        if pending:
            result[store].pending += int(total)
        else:
            result[store].available += int(total)
    return dict(result)


def cross_store_redemptions(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> dict[tuple[str | None, str | None], int]:
    """(earning store, redeeming store) -> points, net of cancellations: the basis of settling
    cross-store points between stores."""
    query = (
        select(L.c.store_code, E.c.store_code, func.sum(-A.c.points))
        .join(E, E.c.id == A.c.entry_id)
        .join(L, L.c.id == A.c.lot_id)
        .where((E.c.kind == EntryKind.redeem.value) | ((E.c.kind == EntryKind.reverse.value) & (E.c.points > 0)))
        .group_by(L.c.store_code, E.c.store_code)
    )
    if since is not None:
        query = query.where(E.c.occurred_at >= since)
    if until is not None:
        query = query.where(E.c.occurred_at < until)
    return {(earned, spent): int(points) for earned, spent, points in session.execute(query) if points}


def reconcile(session: Session, member_ids: Sequence[str] | None = None) -> list[Difference]:
    """Prove the caches: every account, lot and entry adds up — for everyone, or for ``member_ids``.
    An empty list means no difference."""
    differences: list[Difference] = []

    def only(query: Any, column: Any) -> Any:
        return query if member_ids is None else query.where(column.in_(list(member_ids)))

    sums = {
        m: (int(b), int(p))
        for m, b, p in session.execute(
            only(select(E.c.member_id, func.sum(E.c.points), func.sum(E.c.pending_points)), E.c.member_id).group_by(
                E.c.member_id
            )
        )
    }
    cached = {
        m: (int(b), int(p))
        for m, b, p in session.execute(only(select(ACC.c.member_id, ACC.c.balance, ACC.c.pending), ACC.c.member_id))
    }
    in_lots: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m, pending, total in session.execute(
        only(select(L.c.member_id, L.c.pending, func.sum(L.c.remaining)), L.c.member_id).group_by(
            L.c.member_id, L.c.pending
        )
    ):
        in_lots[m][1 if pending else 0] += int(total)
    for member_id in sorted(set(sums) | set(cached) | set(in_lots)):
        ledger = sums.get(member_id, (0, 0))
        for check, found in (
            ("account", cached.get(member_id, (0, 0))),
            ("lots", tuple(in_lots.get(member_id, [0, 0]))),
        ):
            for i, bucket in enumerate(("balance", "pending")):
                if found[i] != ledger[i]:
                    differences.append(Difference(f"{check} {bucket}", member_id, ledger[i], found[i]))
    drawn = dict(
        session.execute(
            only(select(A.c.lot_id, func.sum(A.c.points)).join(L, L.c.id == A.c.lot_id), L.c.member_id).group_by(
                A.c.lot_id
            )
        ).all()
    )
    entry = E.alias("opened_by")
    origin = E.alias("origin")
    parent = L.alias("parent")
    dangling = only(
        select(L.c.id)
        .outerjoin(entry, entry.c.id == L.c.entry_id)
        .outerjoin(origin, origin.c.id == L.c.origin_entry_id)
        .outerjoin(parent, parent.c.id == L.c.parent_id)
        .where(entry.c.id.is_(None) | origin.c.id.is_(None) | (L.c.parent_id.is_not(None) & parent.c.id.is_(None))),
        L.c.member_id,
    )
    for (lot_id,) in session.execute(dangling):  # lots carry no foreign keys (bulk speed): proven here
        differences.append(Difference("lot references", f"lot:{lot_id}", 1, 0))
    for lot_id, points, remaining in session.execute(only(select(L.c.id, L.c.points, L.c.remaining), L.c.member_id)):
        expected = int(points) + int(drawn.get(lot_id, 0))
        if expected != int(remaining):
            differences.append(Difference("lot remaining", f"lot:{lot_id}", expected, int(remaining)))
    moved: dict[int, int] = defaultdict(int)
    for entry_id, total in session.execute(
        only(select(A.c.entry_id, func.sum(A.c.points)).join(E, E.c.id == A.c.entry_id), E.c.member_id).group_by(
            A.c.entry_id
        )
    ):
        moved[int(entry_id)] += int(total)
    for entry_id, total in session.execute(
        only(select(L.c.entry_id, func.sum(L.c.points)).join(E, E.c.id == L.c.entry_id), E.c.member_id).group_by(
            L.c.entry_id
        )
    ):
        moved[int(entry_id)] += int(total)
    for entry_id, kind, points, pending in session.execute(
        only(select(E.c.id, E.c.kind, E.c.points, E.c.pending_points), E.c.member_id)
    ):
        if kind == EntryKind.release.value:
            continue  # moves points between a lot's states, not between lots
        if moved.get(int(entry_id), 0) != int(points) + int(pending):
            differences.append(
                Difference("entry allocations", f"entry:{entry_id}", int(points) + int(pending), moved.get(entry_id, 0))
            )
    return differences
