"""Earn rules (积分规则): how many points an order earns.

The rules come from ``programme.earn_rules`` (schemas/config.py, looked up by name in ``EARN_RULES``).
Whatever order they are listed in, they are applied in this one, so the same order always earns the
same points:

1. **Base rate** per currency unit: a ``store_rate`` naming the order's store, else the ``brand_rate``
   of the store's brand, else ``programme.points_per_unit``.
2. **Line multipliers**: each line is weighted by the highest factor of the ``sku_multiplier`` and
   ``category_multiplier`` rules matching its SKU (1 when none match); the order's factor is the
   average of those factors weighted by the lines' amounts, so discounts and shipping, which the
   order total includes and the lines do not, are shared out evenly. Orders without lines get 1.
3. **Promotions**: the highest ``factor`` among promotions active on the order's local date (in the
   programme's time zone), weekday, store and channel, with the order at or above their
   ``min_spend``. Factors of overlapping promotions do not stack.
4. **Tier multiplier**: the factor for the member's tier at the moment of the order.
5. The product of 1-4 times the amount paid is **floored** to whole points (never rounded up).
6. **Bonuses**: flat ``bonus`` points of every active promotion are added.
7. **Caps**: the total is cut to the smallest of the ``cap`` rules: ``per: order``, then
   ``per: day`` and ``per: month`` less what the member already earned in that local day or month.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import NamedTuple

from hub.programme import local_date
from schemas import ProgrammeConfig
from schemas.config import BrandRate, Cap, CategoryMultiplier, Promotion, SkuMultiplier, StoreRate, TierMultiplier

ONE = Decimal(1)


class OrderFacts(NamedTuple):
    """What the rules look at. (A NamedTuple: one is made per order, so it must be cheap.)"""

    member_id: str
    store_code: str | None
    channel: str | None
    total: Decimal
    ordered_at: datetime
    lines: Sequence[tuple[str | None, Decimal]] = ()  # (sku, amount at list price)
    tier: str | None = None


class Earning(NamedTuple):
    points: int
    explain: str


AlreadyEarned = Callable[[str, str], int]
"""already(member_id, period_key) -> points the member earned in that local day or month so far."""


def _label(rule: object, default: str) -> str:
    return getattr(rule, "label", None) or default


class EarnRules:
    """The compiled rules of one programme; ``earn(facts)`` is pure and cheap."""

    def __init__(self, programme: ProgrammeConfig) -> None:
        self.programme = programme
        self.base = Decimal(programme.points_per_unit)
        brand_of = {store: brand for brand, stores in programme.brands.items() for store in stores}
        brand_rates = {r.brand: r for r in programme.earn_rules if isinstance(r, BrandRate)}
        self.base_rate = (self.base, f"{self.base}/unit")
        self.rate_of: dict[str, tuple[Decimal, str]] = {}  # store -> (rate, how the explanation starts)
        for store, brand in brand_of.items():
            if brand in brand_rates:
                rule = brand_rates[brand]
                self.rate_of[store] = (
                    rule.points_per_unit,
                    f"{rule.points_per_unit}/unit ({_label(rule, f'brand {brand}')})",
                )
        for rule in programme.earn_rules:
            if isinstance(rule, StoreRate):
                for store in rule.stores:
                    self.rate_of[store] = (
                        rule.points_per_unit,
                        f"{rule.points_per_unit}/unit ({_label(rule, f'store {store}')})",
                    )
        self.skus: dict[str, Decimal] = {}
        self.prefixes: list[tuple[str, Decimal]] = []
        for rule in programme.earn_rules:
            if isinstance(rule, SkuMultiplier):
                for sku in rule.skus:
                    self.skus[sku] = max(self.skus.get(sku, rule.factor), rule.factor)
            elif isinstance(rule, CategoryMultiplier):
                self.prefixes.extend((prefix, rule.factor) for prefix in rule.sku_prefixes)
        self.promotions = [r for r in programme.earn_rules if isinstance(r, Promotion)]
        tier_rules = [r for r in programme.earn_rules if isinstance(r, TierMultiplier)]
        self.tier_factors = {
            tier: (factor, f"×{factor.normalize():f} tier {tier}")
            for tier, factor in (tier_rules[0].factors.items() if tier_rules else ())
            if factor != ONE
        }
        self._by_day: dict[date, list[Promotion]] = {}
        caps = [r for r in programme.earn_rules if isinstance(r, Cap)]
        self.order_cap = min((c.max for c in caps if c.per == "order"), default=None)
        self.period_caps = sorted({(c.per, c.max) for c in caps if c.per != "order"})

    @property
    def needs_lines(self) -> bool:
        return bool(self.skus or self.prefixes)

    @property
    def needs_tier(self) -> bool:
        return bool(self.tier_factors)

    def period_keys(self, at: datetime) -> list[str]:
        """The keys under which per-day and per-month caps count earnings made at ``at``."""
        day = local_date(self.programme, at)
        keys = []
        for per, _max in self.period_caps:
            keys.append(day.isoformat() if per == "day" else f"{day.year:04d}-{day.month:02d}")
        return keys

    def _line_factor(self, lines: Sequence[tuple[str | None, Decimal]]) -> Decimal:
        if not self.needs_lines or not lines:
            return ONE
        weight = sum((amount for _sku, amount in lines), Decimal(0))
        if weight <= 0:
            return ONE
        total = Decimal(0)
        for sku, amount in lines:
            factor = ONE
            if sku:
                candidates = [self.skus[sku]] if sku in self.skus else []
                candidates += [f for prefix, f in self.prefixes if sku.startswith(prefix)]
                if candidates:
                    factor = max(candidates)
            total += amount * factor
        return total / weight

    def _promotions_on(self, day: date) -> list[Promotion]:
        active = self._by_day.get(day)
        if active is None:
            active = [
                p
                for p in self.promotions
                if p.start <= day <= p.end and (not p.weekdays or day.isoweekday() in p.weekdays)
            ]
            self._by_day[day] = active
        return active

    def earn(self, facts: OrderFacts, already: AlreadyEarned | None = None) -> Earning:
        rate, explain = self.rate_of.get(facts.store_code or "", self.base_rate)
        amount = facts.total * rate
        parts = [explain]
        if self.needs_lines and facts.lines:
            line_factor = self._line_factor(facts.lines)
            if line_factor != ONE:
                amount *= line_factor
                parts.append(f"×{line_factor.normalize():f} lines")
        bonus = 0
        if self.promotions:
            promo_factor, promo_label = ONE, ""
            for promo in self._promotions_on(local_date(self.programme, facts.ordered_at)):
                if facts.total < promo.min_spend:
                    continue
                if promo.stores and facts.store_code not in promo.stores:
                    continue
                if promo.channels and facts.channel not in promo.channels:
                    continue
                if promo.factor > promo_factor:
                    promo_factor, promo_label = promo.factor, _label(promo, f"promotion {promo.start}")
                bonus += promo.bonus
            if promo_factor != ONE:
                amount *= promo_factor
                parts.append(f"×{promo_factor.normalize():f} {promo_label}")
        if self.tier_factors and facts.tier in self.tier_factors:
            factor, text = self.tier_factors[facts.tier]
            amount *= factor
            parts.append(text)
        points = max(int(amount.to_integral_value(rounding=ROUND_FLOOR)), 0)
        if bonus:
            points += bonus
            parts.append(f"+{bonus} bonus")
        if self.order_cap is not None and points > self.order_cap:
            points = self.order_cap
            parts.append(f"cap {self.order_cap}/order")
        if self.period_caps:
            for (per, most), key in zip(self.period_caps, self.period_keys(facts.ordered_at), strict=True):
                room = max(most - (already(facts.member_id, key) if already else 0), 0)
                if points > room:
                    points = room
                    parts.append(f"cap {most}/{per}")
        return Earning(points, parts[0] if len(parts) == 1 else "; ".join(parts))
