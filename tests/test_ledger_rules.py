"""Earn rules, expiry and pending terms, refund proportions, and the programme's validation:
pure functions as input -> expected tables."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub import programme as calendar
from hub.config import load_config
from hub.ledger import refund_target
from hub.ledger_rules import EarnRules, OrderFacts
from schemas import ProgrammeConfig
from schemas.config import EARN_RULES
from schemas.errors import ConfigError

SHANGHAI_NOON = datetime(2025, 6, 18, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai, a Wednesday
RULES = {
    "brands": {"north": ["BJ01", "BJ02"]},
    "earn_rules": [
        {"type": "store_rate", "stores": ["ONLINE"], "points_per_unit": "0.5"},
        {"type": "brand_rate", "brand": "north", "points_per_unit": 2},
        {"type": "sku_multiplier", "skus": ["TEA-1"], "factor": 3},
        {"type": "category_multiplier", "category": "生鲜", "sku_prefixes": ["FR-"], "factor": 2},
        {"type": "promotion", "label": "618", "start": "2025-06-18", "end": "2025-06-18", "factor": 2},
        {
            "type": "promotion",
            "label": "周末",
            "start": "2025-06-01",
            "end": "2025-06-30",
            "weekdays": [6, 7],
            "bonus": 50,
        },
        {"type": "tier_multiplier", "factors": {"gold": "1.5", "diamond": 2}},
        {"type": "cap", "per": "order", "max": 1000},
        {"type": "cap", "per": "day", "max": 1500},
    ],
}


def facts(total, *, store="SH01", at=SHANGHAI_NOON, lines=(), tier=None, channel="pos"):
    return OrderFacts("MH1", store, channel, Decimal(total), at, tuple((s, Decimal(a)) for s, a in lines), tier)


@pytest.mark.parametrize(
    ("order", "already", "points"),
    [
        # base rate: programme 1/unit, floored, never rounded up; ×2 for the 618 promotion (a Wednesday)
        (facts("99.99", at=datetime(2025, 6, 17, 4, tzinfo=UTC)), 0, 99),
        (facts("99.99"), 0, 199),
        # store rate beats brand rate beats the programme's rate
        (facts("100", store="ONLINE", at=datetime(2025, 6, 17, 4, tzinfo=UTC)), 0, 50),
        (facts("100", store="BJ01", at=datetime(2025, 6, 17, 4, tzinfo=UTC)), 0, 200),
        # the 618 promotion is a local date: 23:30 on the 17th UTC is already the 18th in Shanghai
        (facts("100", at=datetime(2025, 6, 17, 23, 30, tzinfo=UTC)), 0, 200),
        (facts("100", at=datetime(2025, 6, 18, 16, 30, tzinfo=UTC)), 0, 100),  # 00:30 on the 19th
        # line multipliers weight the order by its lines' amounts; the highest matching factor wins
        (facts("100", at=datetime(2025, 6, 17, 4, tzinfo=UTC), lines=[("TEA-1", "50"), ("X", "50")]), 0, 200),
        (facts("90", at=datetime(2025, 6, 17, 4, tzinfo=UTC), lines=[("FR-APPLE", "100")]), 0, 180),
        # tier multiplier multiplies after the promotion; then the floor
        (facts("33.33", tier="gold"), 0, 99),  # 33.33 × 2 × 1.5 = 99.99
        (facts("100", tier="silver"), 0, 200),
        # weekend bonus is flat, added after the floor (Saturday 21 June)
        (facts("10.5", at=datetime(2025, 6, 21, 4, tzinfo=UTC)), 0, 60),
        # caps: per order, then per member per local day less what was earned that day
        (facts("800"), 0, 1000),
        (facts("800"), 1200, 300),
        (facts("800"), 1500, 0),
    ],
)
def test_earn_rules_apply_in_their_documented_order(order, already, points):
    rules = EarnRules(ProgrammeConfig.model_validate(RULES))
    assert rules.earn(order, lambda member, key: already).points == points


def test_earning_is_explained_and_yaml_order_does_not_matter():
    forward = ProgrammeConfig.model_validate(RULES)
    backward = ProgrammeConfig.model_validate({**RULES, "earn_rules": list(reversed(RULES["earn_rules"]))})
    orders = [
        facts("123.45", tier="gold"),
        facts("77", store="BJ02", lines=[("FR-1", "10")]),
        facts("5", store="ONLINE"),
    ]
    for order in orders:
        a, b = EarnRules(forward).earn(order), EarnRules(backward).earn(order)
        assert a == b
    assert EarnRules(forward).earn(orders[0]).explain == "1/unit; ×2 618; ×1.5 tier gold"


@pytest.mark.parametrize(
    ("expiry", "earned_at", "expires_at"),
    [
        ({"policy": "never"}, datetime(2025, 3, 1, tzinfo=UTC), None),
        # days: spendable through the Nth local day after the purchase
        ({"policy": "days", "days": 30}, datetime(2025, 3, 1, 2, tzinfo=UTC), datetime(2025, 3, 31, 16, tzinfo=UTC)),
        # end of the purchase month in Shanghai: 23:00 UTC on 31 March is already April there
        ({"policy": "end_of_month"}, datetime(2025, 3, 31, 15, 59, tzinfo=UTC), datetime(2025, 3, 31, 16, tzinfo=UTC)),
        ({"policy": "end_of_month"}, datetime(2025, 3, 31, 16, 0, tzinfo=UTC), datetime(2025, 4, 30, 16, tzinfo=UTC)),
        (
            {"policy": "end_of_month", "months": 11},
            datetime(2025, 3, 5, tzinfo=UTC),
            datetime(2026, 2, 28, 16, tzinfo=UTC),
        ),
        # 次年年底: the end of the next year
        (
            {"policy": "end_of_year", "years": 1},
            datetime(2025, 12, 31, 17, tzinfo=UTC),
            datetime(2027, 12, 31, 16, tzinfo=UTC),
        ),
        ({"policy": "end_of_year"}, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 12, 31, 16, tzinfo=UTC)),
    ],
)
def test_expiry_is_counted_in_the_programmes_time_zone(expiry, earned_at, expires_at):
    assert calendar.expires_at(ProgrammeConfig(expiry=expiry), earned_at) == expires_at


def test_other_time_zones_move_the_boundaries():
    programme = ProgrammeConfig(timezone="Europe/Berlin", expiry={"policy": "end_of_year"})
    assert calendar.expires_at(programme, datetime(2025, 6, 1, tzinfo=UTC)) == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert calendar.available_at(ProgrammeConfig(pending_days=7), datetime(2025, 6, 1, tzinfo=UTC)) == datetime(
        2025, 6, 8, tzinfo=UTC
    )
    assert calendar.available_at(ProgrammeConfig(), datetime(2025, 6, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("earned", "total", "refunded", "status", "target"),
    [
        (99, "99.99", "40.50", "partially_refunded", 40),  # floor(99 × 40.50 / 99.99) = 40: the member's favour
        (99, "99.99", "99.99", "refunded", 99),
        (100, "100", "0.01", "partially_refunded", 0),
        (100, "100", "0", "paid", 0),
        (100, "100", "30", "cancelled", 100),
        (0, "0.50", "0.50", "refunded", 0),
        (7, "0", "0", "refunded", 0),
    ],
)
def test_refunds_take_back_points_in_proportion(earned, total, refunded, status, target):
    assert refund_target(earned, Decimal(total), Decimal(refunded), status) == target


def test_rule_types_are_looked_up_by_name_with_the_closest_valid_name(tmp_path):
    assert set(EARN_RULES) == {
        "store_rate",
        "brand_rate",
        "sku_multiplier",
        "category_multiplier",
        "promotion",
        "tier_multiplier",
        "cap",
    }
    path = tmp_path / "memberhub.yaml"
    path.write_text(
        "programme:\n  earn_rules:\n    - {type: cap, per: order, max: 10}\n    - {type: promtion, factor: 2}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert ":4: programme.earn_rules.1" in message
    assert "unknown earn rule type 'promtion'; did you mean 'promotion'?" in message


@pytest.mark.parametrize(
    ("programme", "message"),
    [
        (
            {"earn_rules": [{"type": "brand_rate", "brand": "sout", "points_per_unit": 1}], "brands": {"south": []}},
            "did you mean 'south'",
        ),
        ({"earn_rules": [{"type": "tier_multiplier", "factors": {"platinum": 2}}]}, "unknown tiers ['platinum']"),
        ({"earn_rules": [{"type": "promotion", "start": "2025-02-02", "end": "2025-02-01", "factor": 2}]}, "ends"),
        ({"earn_rules": [{"type": "promotion", "start": "2025-02-01", "end": "2025-02-01"}]}, "factor above 1"),
        ({"earn_rules": [{"points_per_unit": 2}]}, "needs a `type`"),
        ({"brands": {"a": ["SH01"], "b": ["SH01"]}}, "two brands"),
        ({"earn_rules": [{"type": "store_rate", "stores": ["SH01"], "points_per_unit": 1}] * 2}, "two store_rate"),
        ({"expiry": {"policy": "days"}}, "exactly when"),
        ({"expiry": {"policy": "days", "days": 7}, "pending_days": 7}, "before they are released"),
        ({"timezone": "Asia/Shangai"}, "unknown time zone"),
        ({"tier_policy": {"basis": "points"}}, "needs min_points"),
        (
            {
                "tiers": [
                    {"name": "a", "label": "A", "min_spend": 0},
                    {"name": "b", "label": "B", "min_spend": 5, "retain_spend": 6},
                ]
            },
            "floor below",
        ),
    ],
)
def test_inconsistent_programmes_are_refused_with_a_reason(programme, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ProgrammeConfig.model_validate(programme)


def test_the_shipped_configuration_keeps_its_meaning():
    config = load_config(Path(__file__).resolve().parents[1] / "memberhub.yaml")
    programme = config.programme
    assert (programme.points_per_unit, programme.pending_days, programme.expiry.policy) == (1, 0, "never")
    assert (programme.tier_policy.basis, programme.tier_policy.window_days) == ("spend", None)
    assert programme.earn_rules == []


def test_the_example_programme_is_valid_and_earns_as_documented():
    programme = load_config(Path(__file__).resolve().parents[1] / "hub" / "programme.example.yaml").programme
    rules = EarnRules(programme)
    singles_day = datetime(2025, 11, 11, 4, tzinfo=UTC)  # a Tuesday in Shanghai
    assert rules.earn(facts("100", at=singles_day, tier="gold")).points == 240  # 100 × 2 × 1.2
    assert rules.earn(facts("100", store="ONLINE", at=singles_day)).points == 100  # 100 × 0.5 × 2
    wednesday = datetime(2025, 11, 12, 4, tzinfo=UTC)
    assert rules.earn(facts("100", store="BJ01", at=wednesday)).points == 170  # 150 + 20 member-day bonus
    assert calendar.expires_at(programme, singles_day) == datetime(2026, 12, 31, 16, tzinfo=UTC)
