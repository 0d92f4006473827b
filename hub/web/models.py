"""The API's request and response bodies (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def is_plain_text(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _plain_text(self) -> Strict:
        for name, value in self:
            if isinstance(value, str) and not is_plain_text(value):
                raise ValueError(f"{name}: NUL characters and broken Unicode are not accepted")
        return self


# ----------------------------------------------------------------------------------------------- requests
class DecisionIn(Strict):
    decision: Literal["merge", "reject", "defer"]
    note: str | None = Field(default=None, max_length=2000)


class SplitIn(Strict):
    staged_member_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        min_length=1, max_length=1000, description="source records that leave"
    )
    reason: str | None = Field(default=None, max_length=2000)


class PinIn(Strict):
    value: str | None = Field(max_length=254, description="the value to keep, whatever the sources say")
    reason: str | None = Field(default=None, max_length=2000)


class AdjustIn(Strict):
    delta: int = Field(description="points to add (positive) or take (negative); not 0", ge=-10_000_000, le=10_000_000)
    reason: str = Field(min_length=1, max_length=2000)
    store_code: str | None = Field(default=None, max_length=32, description="a clerk with several stores names one")


# ----------------------------------------------------------------------------------------------- responses
class Me(BaseModel):
    name: str
    role: str
    stores: list[str]
    permissions: list[str]


class LookupMember(BaseModel):
    member_id: str
    name: str | None = Field(description="masked: enough to greet")
    phone: str | None = Field(description="masked")
    email: str | None = Field(description="masked")
    tier: str | None
    balance: int
    pending: int
    redirected_from: str | None = None


class LookupResult(BaseModel):
    items: list[LookupMember]


class SearchHit(BaseModel):
    member_id: str
    full_name: str | None
    phone: str | None
    email: str | None
    matched: str


class Paged(BaseModel):
    page: int
    per_page: int
    total: int


class SearchPage(Paged):
    items: list[SearchHit]


class GoldenField(BaseModel):
    field: str
    value: str | None
    source: str | None
    source_id: str | None
    staged_member_id: int | None
    rule: str | None
    pinned: bool
    pinned_by: str | None


class SourceRecord(BaseModel):
    staged_member_id: int
    source: str
    source_id: str
    store_code: str | None
    full_name: str | None
    phone: str | None
    email: str | None
    birthday: str | None
    city: str | None
    updated_at: datetime | None
    rule: str
    probability: float | None
    linked_at: datetime


class PointsLot(BaseModel):
    id: int
    kind: str
    store_code: str | None
    points: int
    remaining: int
    earned_at: datetime
    expires_at: datetime | None
    pending: bool


class PointsMove(BaseModel):
    id: int
    at: datetime
    kind: str
    points: int
    pending: int
    store: str | None
    source: str
    document: str
    actor: str
    reason: str | None


class Points(BaseModel):
    balance: int
    pending: int
    debt: int
    lots: list[PointsLot]
    history: list[PointsMove]


class TierChange(BaseModel):
    at: datetime
    tier: str
    previous: str | None
    reason: str
    actor: str


class Redirect(BaseModel):
    old_member_id: str
    new_member_id: str
    kind: str
    at: datetime


class MemberDetail(BaseModel):
    member_id: str
    redirected_from: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    fields: list[GoldenField]
    sources: list[SourceRecord]
    stores: list[str]
    points: Points
    tiers: list[TierChange]
    redirects: list[Redirect]


class ReviewSide(BaseModel):
    staged_member_id: int
    source: str
    source_id: str
    store_code: str | None
    full_name: str | None


class ReviewSummary(BaseModel):
    id: int
    status: str
    probability: float
    weight: float
    created_at: datetime
    a: ReviewSide
    b: ReviewSide


class ReviewPage(Paged):
    items: list[ReviewSummary]


class ReviewSideDetail(ReviewSide):
    member_id: str | None
    fields: dict[str, str | None]


class Comparison(BaseModel):
    field: str | None
    label: str | None
    level: str | None
    weight: float | None
    tf_adjustment: float | None = None


class ReviewDetail(BaseModel):
    id: int
    status: str
    probability: float
    weight: float
    created_at: datetime
    a: ReviewSideDetail
    b: ReviewSideDetail
    rule: str | None
    comparisons: list[Comparison]
    decided_by: str | None
    decided_at: datetime | None
    note: str | None


class DecisionOut(BaseModel):
    id: int
    decision: str
    status: str
    members: dict[str, str | None] = Field(description="staged member id -> the member it belongs to now")


class SplitOut(BaseModel):
    member_id: str
    leaving: list[int]
    new_member_ids: list[str]


class PinOut(BaseModel):
    member_id: str
    field: str
    value: str | None
    pinned: bool


class TokensRevoked(BaseModel):
    name: str
    revoked: list[str]
    """the prefixes of the tokens revoked"""


class AdjustOut(BaseModel):
    member_id: str
    delta: int
    balance: int
    store_code: str | None


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(Paged):
    items: list[AuditEntry]
