from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas import EntryKind, LedgerEntry, Member, Money, Order, ProgrammeConfig, TierLevel

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def order(**overrides):
    values = {
        "source": "shopify",
        "source_id": "1001",
        "store_code": "ONLINE",
        "channel": "online",
        "status": "paid",
        "total": {"amount": "129.00", "currency": "CNY"},
        "ordered_at": NOW,
        "lines": [{"sku": "A", "quantity": 1, "unit_price": {"amount": "129.00", "currency": "CNY"}}],
    }
    return Order.model_validate({**values, **overrides})


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_money_is_exact_decimal():
    assert order().total.amount == Decimal("129.00")
    assert order().net_amount == Decimal("129.00")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ordered_at": datetime(2025, 6, 1, 12)}, "ordered_at"),
        ({"total": {"amount": "1.00", "currency": "yuan"}}, "total.currency"),
        ({"total": {"amount": "abc", "currency": "CNY"}}, "total.amount"),
        ({"status": "shipped"}, "status"),
        ({"channel": "fax"}, "channel"),
        ({"lines": [{"quantity": 0, "unit_price": {"amount": "1", "currency": "CNY"}}]}, "lines.0.quantity"),
        ({"store_code": ""}, "store_code"),
    ],
)
def test_invalid_order_values_name_the_field(overrides, field):
    with pytest.raises(ValidationError) as caught:
        order(**overrides)
    assert field in error_fields(caught.value)


def test_refund_larger_than_total_is_rejected():
    with pytest.raises(ValidationError, match="exceeds"):
        order(status="refunded", refunded={"amount": "500", "currency": "CNY"})


def test_mixed_currencies_are_rejected():
    with pytest.raises(ValidationError, match="one currency"):
        order(refunded={"amount": "1", "currency": "USD"})


def test_member_validation_names_fields():
    with pytest.raises(ValidationError) as caught:
        Member(source="x", source_id="1", channel="pos", email="not-an-email", updated_at=datetime(2025, 1, 1))
    assert {"email", "updated_at"} <= error_fields(caught.value)
    assert Member(source="x", source_id=7, channel="pos", email=" ").email is None


def test_ledger_sign_must_match_kind():
    LedgerEntry(member_id="MH1", kind=EntryKind.earn, points=10, source="s", document="d", occurred_at=NOW)
    with pytest.raises(ValidationError, match="must be negative"):
        LedgerEntry(member_id="MH1", kind=EntryKind.redeem, points=10, source="s", document="d", occurred_at=NOW)
    with pytest.raises(ValidationError):
        LedgerEntry(member_id="MH1", kind=EntryKind.earn, points=1.5, source="s", document="d", occurred_at=NOW)


def test_tier_ladder_must_be_ordered_and_start_at_zero():
    with pytest.raises(ValidationError, match="lowest to highest"):
        ProgrammeConfig(
            tiers=[TierLevel(name="a", label="A", min_spend=0), TierLevel(name="b", label="B", min_spend=0)]
        )
    with pytest.raises(ValidationError, match="min_spend 0"):
        ProgrammeConfig(tiers=[TierLevel(name="a", label="A", min_spend=5)])


def test_money_str():
    assert str(Money(amount=Decimal("9.90"), currency="CNY")) == "9.90 CNY"
