"""The hub database: SQLAlchemy 2.0 tables. Alembic migrations (hub/migrations) create them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from hub.privacy.types import EncryptedJSON, EncryptedText, keep_blind_indexes

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; attach its time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """Decimal money, exact everywhere: NUMERIC where the database has it, text on SQLite."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(String(40) if dialect.name == "sqlite" else Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(Decimal(value)) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime,
        Decimal: ExactDecimal,
        dict[str, Any]: JSON,
        date: Date,
    }


class SourceRecordRow(Base):
    """A record exactly as a source returned it. Upserted by (source, stream, external_id)."""

    __tablename__ = "source_records"
    __table_args__ = (UniqueConstraint("source", "stream", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, doc="sealed: a raw record holds contact data")
    content_hash: Mapped[str] = mapped_column(String(64))
    staged_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class StagedMember(Base):
    """A source member after mapping and normalisation (canonical)."""

    __tablename__ = "staged_members"
    __table_args__ = (
        UniqueConstraint("source", "source_id"),
        Index("ix_staged_members_phone_bidx", "phone_bidx"),
        Index("ix_staged_members_email_bidx", "email_bidx"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_record_id: Mapped[int] = mapped_column(ForeignKey("source_records.id"), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    full_name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    # Contact fields are sealed (hub.privacy) and found by their blind indexes; the city-level
    # address parts (city, province, district) stay plain: the hub keeps no street address.
    phone_raw: Mapped[str | None] = mapped_column(EncryptedText)
    phone: Mapped[str | None] = mapped_column(EncryptedText, doc="E.164 when valid")
    email: Mapped[str | None] = mapped_column(EncryptedText, doc="trimmed, lower-cased")
    birthday: Mapped[date | None] = mapped_column(Date)
    gender: Mapped[str | None] = mapped_column(String(8))
    city: Mapped[str | None] = mapped_column(String(64))
    store_code: Mapped[str | None] = mapped_column(String(32))
    marketing_consent: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column()
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)
    name_pinyin: Mapped[str | None] = mapped_column(String(200), doc="Chinese names: toneless pinyin, family first")
    name_key: Mapped[str | None] = mapped_column(String(200), doc="for matching: simplified / folded, nicknames")
    resident_id_hash: Mapped[str | None] = mapped_column(String(64), index=True, doc="keyed hash; never the number")
    province: Mapped[str | None] = mapped_column(String(32))
    district: Mapped[str | None] = mapped_column(String(64))
    flags: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON,
        default=dict,
        doc="field -> why its value was dropped or kept raw (invalid phone, no birth year…); sealed: it quotes values",
    )
    phone_bidx: Mapped[str | None] = mapped_column(String(32), doc="blind index of phone (hub.privacy)")
    email_bidx: Mapped[str | None] = mapped_column(String(32), doc="blind index of email (hub.privacy)")


class StagedOrder(Base):
    __tablename__ = "staged_orders"
    __table_args__ = (
        UniqueConstraint("source", "source_id"),
        Index("ix_staged_orders_member", "source", "member_source_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_record_id: Mapped[int] = mapped_column(ForeignKey("source_records.id"), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(128))
    member_source_id: Mapped[str | None] = mapped_column(String(128))
    store_code: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    total_amount: Mapped[Decimal] = mapped_column()
    refunded_amount: Mapped[Decimal] = mapped_column(default=Decimal(0))
    ordered_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column()
    lines: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)


class GoldenMember(Base):
    """One person. ``member_id`` is stable: merges keep the older id and redirect the other."""

    __tablename__ = "golden_members"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    member_id: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(12), default="active", doc="active | merged")
    merged_into: Mapped[str | None] = mapped_column(String(16))
    full_name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(EncryptedText)
    email: Mapped[str | None] = mapped_column(EncryptedText)
    birthday: Mapped[date | None] = mapped_column(Date)
    city: Mapped[str | None] = mapped_column(String(64))
    phone_bidx: Mapped[str | None] = mapped_column(String(32), index=True, doc="kept by hub.privacy on every set")
    email_bidx: Mapped[str | None] = mapped_column(String(32), index=True, doc="kept by hub.privacy on every set")
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="field -> source record and rule")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MemberLink(Base):
    """Which golden member a staged member belongs to, and the evidence for it."""

    __tablename__ = "member_links"

    staged_member_id: Mapped[int] = mapped_column(ForeignKey("staged_members.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("golden_members.member_id"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)


class MemberIdChange(Base):
    """Every change of golden id, for downstream systems to follow (merge: old -> surviving id)."""

    __tablename__ = "member_id_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    old_member_id: Mapped[str] = mapped_column(String(16), index=True)
    new_member_id: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(12), doc="merge | split")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntryRow(Base):
    """Append-only points movements. The natural key makes every posting idempotent.

    ``points`` is the change to the spendable balance and ``pending_points`` the change to the pending
    one, so each balance is a plain sum. On PostgreSQL and SQLite a trigger refuses UPDATE and DELETE."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("source", "document", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(BigInteger)
    store_code: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(String(160))
    payload_hash: Mapped[str] = mapped_column(String(64), doc="what was posted, to refuse a changed replay")
    actor: Mapped[str] = mapped_column(String(64), default="system")
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    pending_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(Text, doc="an adjustment's reason; the rules behind an earning")
    ref: Mapped[str | None] = mapped_column(String(160), doc="the document acted on: order reversed, lot expired")
    available_at: Mapped[datetime | None] = mapped_column(doc="credits: the lot is pending until then")
    expires_at: Mapped[datetime | None] = mapped_column(doc="credits: the lot lapses then")


class TierAssignmentRow(Base):
    """Tier history: a row each time a member's tier changes."""

    __tablename__ = "tier_assignments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    tier: Mapped[str] = mapped_column(String(32))
    qualifying_amount: Mapped[Decimal] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64), default="evaluation")
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    previous_tier: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime | None] = mapped_column(doc="a manual override lapses then")
    actor: Mapped[str] = mapped_column(String(64), default="system", server_default="system")


class ConnectorState(Base):
    """The incremental cursor of one connector's stream; moves with the records it covers."""

    __tablename__ = "connector_state"

    connector: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuarantineRow(Base):
    """A record that failed mapping or validation, with the reason; it can be retried."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_record_id: Mapped[int | None] = mapped_column(ForeignKey("source_records.id"), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON)
    field: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(EncryptedText, doc="sealed: it may quote the bad value (an email)")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload_hash: Mapped[str | None] = mapped_column(String(64), doc="records that never got an id: one row each")
    mapping_hash: Mapped[str | None] = mapped_column(String(64), doc="the mapping file version that failed")
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_attempt_at: Mapped[datetime | None] = mapped_column()


class WritebackState(Base):
    """What a destination last acknowledged for one of its customers."""

    __tablename__ = "writeback_state"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    points: Mapped[int | None] = mapped_column(BigInteger)
    tier: Mapped[str | None] = mapped_column(String(32))
    remote: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(EncryptedText, doc="sealed: a refusal may quote the phone")
    ledger_mark: Mapped[int | None] = mapped_column(BigInteger, doc="the last ledger entry id the points include")
    skipped: Mapped[str | None] = mapped_column(Text, doc="a part deliberately not written, and why")


class WritebackRun(Base):
    __tablename__ = "writeback_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running", doc="running, finished or failed")
    error: Mapped[str | None] = mapped_column(Text, doc="why the run stopped, or a sample of row failures")


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(160))
    before: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON, doc="sealed: may hold a pinned phone")
    after: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON)


class PointsAccount(Base):
    """One row per member: the lock every points movement takes first (SELECT ... FOR UPDATE on
    PostgreSQL, a write on SQLite), and a cache of the balances that ``ledger.reconcile`` checks
    against the sums of the ledger."""

    __tablename__ = "points_accounts"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0, doc="spendable; negative is a debt")
    pending: Mapped[int] = mapped_column(BigInteger, default=0, doc="earned, not yet spendable")
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PointsLot(Base):
    """Points earned together, with their own expiry and pending state. A credit entry opens a lot;
    debits draw on lots through allocations. ``remaining`` is a cache of ``points`` plus the lot's
    allocations. A debt lot (negative) holds a refund's shortfall until later credits pay it."""

    __tablename__ = "points_lots"
    __table_args__ = (Index("ix_points_lots_member_spend_order", "member_id", "pending", "expires_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(16))
    # Ids of ledger entries and lots, without foreign keys on purpose: a lot is a cache derived from the
    # append-only entries, FK checks would cost a third of a bulk posting, and ledger.reconcile proves
    # every lot points at real entries and lots.
    entry_id: Mapped[int] = mapped_column(BigId, doc="the entry that opened it")
    origin_entry_id: Mapped[int] = mapped_column(
        BigId, index=True, doc="the earning it descends from, across merges and splits"
    )
    parent_id: Mapped[int | None] = mapped_column(BigId, doc="the lot it was moved from")
    kind: Mapped[str] = mapped_column(String(12), doc="earn | adjust | debt | transfer")
    store_code: Mapped[str | None] = mapped_column(String(32), doc="where the points were earned")
    channel: Mapped[str | None] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column()
    available_at: Mapped[datetime | None] = mapped_column()
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column()


# Partial indexes: the rows a bulk posting writes (earnings have no ref; a fresh lot has no parent, was
# opened by its own earning, and may never expire or be pending) skip most of them, so posting stays
# fast while refunds, moves, splits and the nightly jobs still find their rows.
Index(
    "ix_ledger_entries_source_ref",
    LedgerEntryRow.source,
    LedgerEntryRow.ref,
    postgresql_where=LedgerEntryRow.ref.is_not(None),
    sqlite_where=LedgerEntryRow.ref.is_not(None),
)
Index(
    "ix_points_lots_parent_id",
    PointsLot.parent_id,
    postgresql_where=PointsLot.parent_id.is_not(None),
    sqlite_where=PointsLot.parent_id.is_not(None),
)
Index(
    "ix_points_lots_entry_id",
    PointsLot.entry_id,
    postgresql_where=PointsLot.entry_id != PointsLot.origin_entry_id,
    sqlite_where=PointsLot.entry_id != PointsLot.origin_entry_id,
)
Index(  # BRIN on PostgreSQL: expiry follows the order lots are written in, and BRIN costs a bulk load ~nothing
    "ix_points_lots_expires_at",
    PointsLot.expires_at,
    postgresql_using="brin",
    sqlite_where=PointsLot.expires_at.is_not(None),
)
Index(
    "ix_points_lots_available_at",
    PointsLot.available_at,
    postgresql_where=PointsLot.pending,
    sqlite_where=PointsLot.pending,
)


class PointsAllocation(Base):
    """Append-only: how many points an entry took from (negative) or gave back to (positive) a lot."""

    __tablename__ = "points_allocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("points_lots.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)


class TierReview(Base):
    """One downgrade review per period (e.g. 2025-04): re-running a review in the same period changes nothing."""

    __tablename__ = "tier_reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(16), unique=True)
    reviewed_at: Mapped[datetime] = mapped_column()
    downgraded: Mapped[int] = mapped_column(Integer, default=0)
    retained: Mapped[int] = mapped_column(Integer, default=0)
    per_tier: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StreamField(Base):
    """A field path seen in a source stream's raw records, per JSON type (discovery). Mapping
    validation checks expressions against these; drift (a field appearing, disappearing or
    changing type) is computed from them by ``hub.drift``. Nested objects are dotted paths, items
    of a list of objects ``name[].field``; the row with path ``$`` counts the stream's records."""

    __tablename__ = "stream_fields"
    __table_args__ = (UniqueConstraint("connector", "stream", "path", "json_type"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))
    json_type: Mapped[str] = mapped_column(String(8), doc="string | number | boolean | object | array | null")
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    record_count: Mapped[int] = mapped_column(BigInteger, default=0, doc="record versions that had it")
    last_seen_seq: Mapped[int] = mapped_column(BigInteger, default=0, doc="the stream's record count when last seen")
    accepted: Mapped[bool] = mapped_column(Boolean, default=True, doc="part of the known schema; False: drift")


class ReviewQueueItem(Base):
    """A pair of source members the resolver is unsure about (待审核), with the evidence, until a
    steward merges, rejects or defers it. ``staged_member_a`` < ``staged_member_b``."""

    __tablename__ = "review_queue"
    __table_args__ = (
        UniqueConstraint("staged_member_a", "staged_member_b"),
        Index("ix_review_queue_status", "status", "probability"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    staged_member_a: Mapped[int] = mapped_column(ForeignKey("staged_members.id"))
    staged_member_b: Mapped[int] = mapped_column(ForeignKey("staged_members.id"))
    weight: Mapped[float] = mapped_column(doc="match weight in bits")
    probability: Mapped[float] = mapped_column()
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default="open", doc="open|merged|rejected|deferred|obsolete")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)


class MatchConstraint(Base):
    """A steward's decision about two source members, honoured by every later run: ``must_link``
    (one person) or ``cannot_link`` (different people). ``staged_member_a`` < ``staged_member_b``."""

    __tablename__ = "match_constraints"
    __table_args__ = (UniqueConstraint("staged_member_a", "staged_member_b"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(12), doc="must_link | cannot_link")
    staged_member_a: Mapped[int] = mapped_column(ForeignKey("staged_members.id"), index=True)
    staged_member_b: Mapped[int] = mapped_column(ForeignKey("staged_members.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)


class GoldenFieldPin(Base):
    """A golden member's field fixed by a steward: survivorship shows this value whatever the sources say."""

    __tablename__ = "golden_field_pins"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    field: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str | None] = mapped_column(EncryptedText, doc="sealed: a pinned phone or email")
    pinned_by: Mapped[str] = mapped_column(String(64))
    pinned_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)


class MatchModelRow(Base):
    """A trained matching model (m/u per comparison level, prior, term-frequency reference). The
    newest row is the one in use; every run with the same model and data gives the same clusters."""

    __tablename__ = "match_models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    pairs: Mapped[int] = mapped_column(BigInteger, default=0)
    labelled_pairs: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="system")


class ResolutionQueueRow(Base):
    """A staged member the resolver has to look at again. Database triggers (migration 0010_5) add a
    row whenever a staged member is inserted, updated or deleted, a steward constraint about it
    changes, or a pin changes on its golden member; a resolve run takes the rows it reads away in
    its own transaction. No foreign key: a deleted staged member must stay queued."""

    __tablename__ = "resolution_queue"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    staged_member_id: Mapped[int] = mapped_column(BigInteger)


class ResolutionState(Base):
    """One row: how far resolution has got. ``generation`` goes up with every run that changed
    something, so a process whose in-memory index is of another generation knows to rebuild it;
    ``model_id`` is the model every golden member was last decided with."""

    __tablename__ = "resolution_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    model_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Account(Base):
    """A person or a till that signs in to the console or the API. ``role``: admin | steward | clerk |
    auditor; a clerk sees only the members and points of ``stores``. The password is an argon2 hash."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    stores: Mapped[list[str]] = mapped_column(JSON, default=list, doc="store codes a clerk may see")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token: only its SHA-256 is kept (a token is 256 random bits; it is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), doc="the first characters, to tell tokens apart")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class WebSession(Base):
    """A console sign-in: the cookie holds a random id, the table its SHA-256 and the CSRF token."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class AccessState(Base):
    """One row. ``generation`` goes up, in the same transaction, whenever an API token is revoked or an
    account disabled: a web worker trusts a token it verified earlier only while the generation is the
    one it verified it at (hub.web.auth), so a revocation holds on every worker at once."""

    __tablename__ = "access_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class LoginFailure(Base):
    """A failed sign-in, kept while it counts towards the login rate limit (hub.accounts). ``key``:
    ``account:NAME`` or ``address:IP``."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The response to a write sent with an ``Idempotency-Key``: a retry with the same key and body
    gets it again; the same key with another body is refused."""

    __tablename__ = "idempotency_keys"

    account_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), doc="method, path and body")
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrivacyTombstone(Base):
    """A person erased by ``memberhub privacy forget``: a record that carries one of their keys is not
    staged again, however often a source sends it. Keys are keyed hashes, never the values: ``kind``
    source_id (of ``source:source_id``), email or resident_id; ``member_id`` is the golden id forgotten."""

    __tablename__ = "privacy_tombstones"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


keep_blind_indexes(GoldenMember, StagedMember)


# -- segments, RFM, churn risk, marketing triggers (hub.segments, hub.analytics, hub.triggers) ---------
class MemberMetrics(Base):
    """The member view (会员画像) that segment rules read: one row per active golden member, rebuilt
    in the database by ``hub.analytics.metrics.refresh``. Columns are documented in hub/segments.yaml."""

    __tablename__ = "member_metrics"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(64))
    home_store: Mapped[str | None] = mapped_column(String(32))
    home_store_city: Mapped[str | None] = mapped_column(String(64))
    birthday: Mapped[date | None] = mapped_column(Date)
    marketing_consent: Mapped[bool | None] = mapped_column(Boolean)
    enrolled_at: Mapped[datetime | None] = mapped_column()
    first_order_at: Mapped[datetime | None] = mapped_column()
    last_order_at: Mapped[datetime | None] = mapped_column()
    orders: Mapped[int] = mapped_column(Integer, default=0)
    spend: Mapped[float] = mapped_column(Numeric(18, 2, asdecimal=False), default=0)
    avg_order_value: Mapped[float | None] = mapped_column(Numeric(18, 2, asdecimal=False))
    store_orders: Mapped[int] = mapped_column(Integer, default=0)
    online_orders: Mapped[int] = mapped_column(Integer, default=0)
    stores: Mapped[int] = mapped_column(Integer, default=0)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    days_since_first_order: Mapped[int | None] = mapped_column(Integer)
    days_since_last_order: Mapped[int | None] = mapped_column(Integer)
    tenure_days: Mapped[int | None] = mapped_column(Integer)
    typical_interval_days: Mapped[float | None] = mapped_column(doc="the gap churn risk compares against")
    interval_basis: Mapped[str | None] = mapped_column(String(8), doc="own | chain: whose typical gap that is")
    churn_risk: Mapped[float | None] = mapped_column()
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)
    aov_score: Mapped[int | None] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column()


class MemberStoreRfm(Base):
    """RFM per store: a member's recency, frequency and spend at one store, scored among that store's
    buyers. The facts are kept between runs and recomputed for the members ``member_facts_queue``
    names; every run scores them again (the scores are NULL only inside a run, between the two)."""

    __tablename__ = "member_store_rfm"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    store_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    orders: Mapped[int] = mapped_column(Integer)
    pos_orders: Mapped[int] = mapped_column(Integer, doc="of them, till orders")
    spend: Mapped[float] = mapped_column(Numeric(18, 2, asdecimal=False))
    first_order_at: Mapped[datetime] = mapped_column()
    last_order_at: Mapped[datetime] = mapped_column()
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)


class MemberOrderTotals(Base):
    """A buyer's orders summed over their stores (``member_store_rfm``), kept with it: what the member
    view reads instead of every per-store row. ``favourite_store``: most orders, then the latest, then
    the lowest code. Average order value and the buyer's own gap between orders are kept with them,
    so a run computes neither again for a million members."""

    __tablename__ = "member_order_totals"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger)
    store_orders: Mapped[int] = mapped_column(BigInteger, doc="of them, till orders")
    spend: Mapped[float] = mapped_column(Numeric(18, 2, asdecimal=False))
    first_order_at: Mapped[datetime] = mapped_column()
    last_order_at: Mapped[datetime] = mapped_column()
    stores: Mapped[int] = mapped_column(Integer)
    favourite_store: Mapped[str] = mapped_column(String(32))
    avg_order_value: Mapped[float] = mapped_column(Numeric(asdecimal=False), doc="unrounded: what scores compare")
    own_interval: Mapped[float | None] = mapped_column(doc="days between first and last order / (orders − 1)")


class MemberSourceFacts(Base):
    """What the source systems and the tier history say of an active golden member, kept with the
    order sums (the member view's definitions, hub/segments.yaml): the latest tier assigned (None: the
    programme's default), marketing consent, the store and time of the earliest enrolment."""

    __tablename__ = "member_source_facts"

    member_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(32))
    marketing_consent: Mapped[bool | None] = mapped_column(Boolean)
    enrolled_store: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime | None] = mapped_column()


class MemberFactsQueueRow(Base):
    """Whose kept facts to recompute: a golden member (``member_id``) or a source customer (``source``,
    ``member_source_id``: whoever it belongs to when the run reads it). Database triggers (migration
    0014_9) add a row when an order or a staged member is inserted, updated or deleted, a link is
    made, moved or removed, a tier is assigned, or a golden member's status changes; a segments run
    takes the rows it reads away in its own transaction. No foreign keys: what was deleted must stay
    queued."""

    __tablename__ = "member_facts_queue"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(64))
    member_source_id: Mapped[str | None] = mapped_column(String(128))


class SegmentRun(Base):
    """One recomputation of the member view and every segment."""

    __tablename__ = "segment_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    as_of: Mapped[datetime] = mapped_column(doc="the moment the figures describe")
    members: Mapped[int] = mapped_column(BigInteger, default=0)
    definitions_hash: Mapped[str] = mapped_column(String(64))
    sizes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="segment -> members, entered, left")


class SegmentMembership(Base):
    """Who is in which segment now (会员分类)."""

    __tablename__ = "segment_memberships"

    segment: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(16), primary_key=True, index=True)
    entered_at: Mapped[datetime] = mapped_column()
    run_id: Mapped[int] = mapped_column(BigId)


class SegmentChange(Base):
    """Segment history: a row each time a member enters or leaves a segment."""

    __tablename__ = "segment_history"
    __table_args__ = (Index("ix_segment_history_run", "run_id", "segment", "change"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigId)
    segment: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    change: Mapped[str] = mapped_column(String(8), doc="entered | left")
    at: Mapped[datetime] = mapped_column()


class TagWritebackState(Base):
    """Segment and event tags (标签) a destination should show for one of its customers, and what it
    last acknowledged; only the difference is sent."""

    __tablename__ = "tag_writeback_state"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    acknowledged: Mapped[list[str]] = mapped_column(JSON, default=list, doc="the tags the destination confirmed")
    remote: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="ids the destination gave (groups…)")
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc="sends since the last acknowledgement")


class MarketingEvent(Base):
    """An automation trigger (营销自动化) for one member and period: emitted once, whatever the re-runs."""

    __tablename__ = "marketing_events"
    __table_args__ = (UniqueConstraint("kind", "member_id", "period"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    period: Mapped[str] = mapped_column(String(64), doc="what makes it once: 2025-06, a lot's expiry date…")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column()
    tag_until: Mapped[datetime | None] = mapped_column(doc="its tag shows in the CRMs until then")
    delivered_at: Mapped[datetime | None] = mapped_column(doc="the webhook receiver acknowledged it")
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class WebhookDelivery(Base):
    """The delivery log: one row per attempt to post an event to the configured webhook URL."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("marketing_events.id"), index=True)
    url: Mapped[str] = mapped_column(String(500))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)


class DestinationEventRow(Base):
    """A points change made inside a destination (a redemption at a Square till), as the hub took it
    in: imported into the ledger, recognised as the hub's own write, ignored, or waiting for its
    customer to be known (``unmatched``, tried again every run) or refused by the ledger."""

    __tablename__ = "destination_events"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    external_id: Mapped[str | None] = mapped_column(String(128))
    member_id: Mapped[str | None] = mapped_column(String(16), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(
        EncryptedJSON, default=dict, doc="sealed: the destination's event can name the customer's phone or e-mail"
    )
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEventRow(Base):
    """A webhook a source system sent, verified and stored once (its ``event_id`` is unique per
    system: a redelivery is not stored again). ``processed_at`` is set once a pull of that system
    has covered it."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("system", "event_id"), Index("ix_webhook_events_pending", "processed_at", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(64), doc="the connector it came from")
    event_id: Mapped[str] = mapped_column(String(128), doc="the sender's id of the event (or of the delivery)")
    topic: Mapped[str] = mapped_column(String(64), doc="orders/create, customer.updated, contact.creation…")
    object_id: Mapped[str | None] = mapped_column(String(128), doc="the customer or order it is about")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, doc="sealed: it may hold contact data")
    processed_at: Mapped[datetime | None] = mapped_column()


class PipelineRunRow(Base):
    """How a Dagster run ended, as the run-status sensors (or the in-process runner) saw it, for
    ``memberhub status``: the last runs and the failures with their reasons."""

    __tablename__ = "pipeline_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), doc="success | failure | canceled")
    trigger: Mapped[str | None] = mapped_column(String(64), doc="schedule, sensor or cli that started it")
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    error: Mapped[str | None] = mapped_column(Text, doc="failure: which steps failed and why")
