"""The canonical member (会员) as every source system's record is mapped into it."""

from __future__ import annotations

from datetime import date

from pydantic import EmailStr, Field, field_validator

from schemas._types import AwareDatetime, Canonical, Channel


class Member(Canonical):
    """One member as one source system holds it, after mapping. Identity is (source, source_id)."""

    source: str = Field(min_length=1, description="connector name, e.g. shopify")
    source_id: str = Field(min_length=1, description="the member's id inside that system")
    channel: Channel
    full_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    phone: str | None = Field(default=None, description="as the source wrote it; normalised separately")
    email: EmailStr | None = None
    birthday: date | None = None
    gender: str | None = Field(default=None, pattern=r"^(female|male|other)$")
    city: str | None = None
    store_code: str | None = None
    marketing_consent: bool | None = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    @field_validator("source_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("email", mode="before")
    @classmethod
    def _blank_email_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
