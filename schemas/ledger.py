"""Points ledger entries (积分流水) and tier assignments (会员等级)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import Field, model_validator

from schemas._types import AwareDatetime, Canonical, Channel


class EntryKind(StrEnum):
    """What a movement of points is.

    earn      points for a purchase (may be locked as pending for the return window)
    redeem    points spent (积分抵现 / 兑换)
    expire    unspent points lapsing at the end of their validity
    reverse   taking back points of a refunded order (negative), or cancelling a redemption (positive)
    adjust    a person's correction, with a reason
    transfer  points moving with their lots when members are merged or split
    release   pending points becoming spendable at the end of the return window
    """

    earn = "earn"
    redeem = "redeem"
    expire = "expire"
    reverse = "reverse"
    adjust = "adjust"
    transfer = "transfer"
    release = "release"


_SIGN = {
    EntryKind.earn: 1,
    EntryKind.redeem: -1,
    EntryKind.expire: -1,
    EntryKind.release: 1,
}
CREDIT_TERMS = (EntryKind.earn, EntryKind.adjust)
"""The kinds that can open a lot, and so may carry ``available_at`` and ``expires_at``."""


class LedgerEntry(Canonical):
    """One movement of points. Points are whole numbers; the natural key is (source, document, kind).

    ``points`` is the whole movement; the ledger records which part touched the spendable balance and
    which the pending one."""

    member_id: str = Field(min_length=1)
    kind: EntryKind
    points: int
    store_code: str | None = None
    channel: Channel | None = None
    source: str = Field(min_length=1)
    document: str = Field(min_length=1, description="the source document, e.g. an order id")
    actor: str = "system"
    occurred_at: AwareDatetime
    reason: str | None = Field(default=None, description="why: required for adjustments; the rules for earnings")
    ref: str | None = Field(default=None, description="the document this entry acts on, e.g. the order reversed")
    available_at: AwareDatetime | None = Field(default=None, description="credits: spendable from (pending before)")
    expires_at: AwareDatetime | None = Field(default=None, description="credits: when the points lapse")

    @model_validator(mode="after")
    def _sign_matches_kind(self) -> LedgerEntry:
        sign = _SIGN.get(self.kind)
        if sign is not None and self.points * sign < 0:
            word = "positive" if sign > 0 else "negative"
            raise ValueError(f"points for a {self.kind.value} entry must be {word}, got {self.points}")
        credit = self.kind in CREDIT_TERMS and self.points > 0
        if not credit and (self.available_at is not None or self.expires_at is not None):
            raise ValueError("only earnings and positive adjustments carry available_at / expires_at")
        if self.kind == EntryKind.adjust and not (self.reason or "").strip():
            raise ValueError("an adjustment needs a reason")
        if self.expires_at is not None and self.expires_at <= self.occurred_at:
            raise ValueError("points cannot expire before they are earned")
        return self


class TierAssignment(Canonical):
    member_id: str = Field(min_length=1)
    tier: str = Field(min_length=1)
    qualifying_amount: Decimal
    assigned_at: AwareDatetime
    reason: str = "evaluation"
    previous_tier: str | None = None
    expires_at: AwareDatetime | None = Field(default=None, description="a manual override lapses then")
    actor: str = "system"
