"""Points ledger entries (积分流水) and tier assignments (会员等级)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import Field, model_validator

from schemas._types import AwareDatetime, Canonical, Channel


class EntryKind(StrEnum):
    earn = "earn"
    redeem = "redeem"
    expire = "expire"
    reverse = "reverse"
    adjust = "adjust"
    transfer = "transfer"


_SIGN = {
    EntryKind.earn: 1,
    EntryKind.redeem: -1,
    EntryKind.expire: -1,
    EntryKind.reverse: -1,
}


class LedgerEntry(Canonical):
    """One movement of points. Points are whole numbers; the natural key is (source, document, kind)."""

    member_id: str = Field(min_length=1)
    kind: EntryKind
    points: int
    store_code: str | None = None
    channel: Channel | None = None
    source: str = Field(min_length=1)
    document: str = Field(min_length=1, description="the source document, e.g. an order id")
    actor: str = "system"
    occurred_at: AwareDatetime

    @model_validator(mode="after")
    def _sign_matches_kind(self) -> LedgerEntry:
        sign = _SIGN.get(self.kind)
        if sign is not None and self.points * sign < 0:
            word = "positive" if sign > 0 else "negative"
            raise ValueError(f"points for a {self.kind.value} entry must be {word}, got {self.points}")
        return self


class TierAssignment(Canonical):
    member_id: str = Field(min_length=1)
    tier: str = Field(min_length=1)
    qualifying_amount: Decimal
    assigned_at: AwareDatetime
    reason: str = "evaluation"
