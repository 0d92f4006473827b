"""Field types shared by the canonical models: exact money, aware times, channels."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _require_timezone(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (carry an offset such as +08:00 or Z)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_require_timezone)]
"""A datetime that must carry its offset; naive times are ambiguous across stores' time zones."""

CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY")]


class Channel(StrEnum):
    """Where a sale or a member came from (渠道)."""

    pos = "pos"
    online = "online"
    crm = "crm"
    erp = "erp"
    spreadsheet = "spreadsheet"


class Canonical(BaseModel):
    """Base of every canonical shape: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, str_strip_whitespace=True)


class Money(Canonical):
    """An exact amount in a currency. Never a float."""

    amount: Decimal = Field(max_digits=18, decimal_places=4)
    currency: CurrencyCode

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
