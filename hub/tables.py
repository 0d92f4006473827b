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
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    staged_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class StagedMember(Base):
    """A source member after mapping and normalisation (canonical)."""

    __tablename__ = "staged_members"
    __table_args__ = (
        UniqueConstraint("source", "source_id"),
        Index("ix_staged_members_phone", "phone"),
        Index("ix_staged_members_email", "email"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_record_id: Mapped[int] = mapped_column(ForeignKey("source_records.id"), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    full_name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    phone_raw: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(20), doc="E.164 when valid")
    email: Mapped[str | None] = mapped_column(String(254), doc="trimmed, lower-cased")
    birthday: Mapped[date | None] = mapped_column(Date)
    gender: Mapped[str | None] = mapped_column(String(8))
    city: Mapped[str | None] = mapped_column(String(64))
    store_code: Mapped[str | None] = mapped_column(String(32))
    marketing_consent: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column()
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    birthday: Mapped[date | None] = mapped_column(Date)
    city: Mapped[str | None] = mapped_column(String(64))
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
    """Append-only points movements. The natural key makes every posting idempotent."""

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


class TierAssignmentRow(Base):
    """Tier history: a row each time a member's tier changes."""

    __tablename__ = "tier_assignments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(16), index=True)
    tier: Mapped[str] = mapped_column(String(32))
    qualifying_amount: Mapped[Decimal] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64), default="evaluation")
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    field: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    last_error: Mapped[str | None] = mapped_column(Text)


class WritebackRun(Base):
    __tablename__ = "writeback_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(160))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
