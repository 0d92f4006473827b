"""Canonical orders, order lines and stores (门店)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from schemas._types import AwareDatetime, Canonical, Channel, CurrencyCode, Money


class OrderStatus(StrEnum):
    paid = "paid"
    pending = "pending"
    refunded = "refunded"
    partially_refunded = "partially_refunded"
    cancelled = "cancelled"


class OrderLine(Canonical):
    sku: str | None = None
    title: str | None = None
    quantity: int = Field(gt=0)
    unit_price: Money


class Order(Canonical):
    """One sale as one source system holds it. Money is exact; times carry their offset."""

    source: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    member_source_id: str | None = Field(default=None, description="the buyer's member id in the same source")
    store_code: str = Field(min_length=1, description="the chain's own store code (mappings/stores.yaml)")
    channel: Channel
    status: OrderStatus
    total: Money
    refunded: Money | None = None
    ordered_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    lines: list[OrderLine] = Field(default_factory=list)

    @field_validator("source_id", "member_source_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _one_currency(self) -> Order:
        currencies = {self.total.currency} | {line.unit_price.currency for line in self.lines}
        if self.refunded is not None:
            currencies.add(self.refunded.currency)
        if len(currencies) > 1:
            raise ValueError(f"an order must use one currency, found {sorted(currencies)}")
        if self.refunded is not None and self.refunded.amount > self.total.amount:
            raise ValueError("refunded amount exceeds the order total")
        return self

    @property
    def net_amount(self) -> Decimal:
        """What the member finally paid: total less refunds (zero when cancelled)."""
        if self.status == OrderStatus.cancelled:
            return Decimal(0)
        return self.total.amount - (self.refunded.amount if self.refunded else Decimal(0))


class Store(Canonical):
    code: str = Field(min_length=1, pattern=r"^[A-Z0-9][A-Z0-9_-]*$")
    name: str
    city: str | None = None
    timezone: str = "Asia/Shanghai"
    currency: CurrencyCode = "CNY"
