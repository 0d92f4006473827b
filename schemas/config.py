"""The shape of a hub's configuration file (memberhub.yaml): connectors and the programme."""

from __future__ import annotations

import codecs
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from schemas._types import Canonical, CurrencyCode
from schemas.errors import closest

SystemKind = Literal["shopify", "square", "hubspot", "odoo", "sql", "spreadsheet"]

API_KINDS = frozenset({"shopify", "square", "hubspot", "odoo"})
"""Kinds that speak a system's HTTP API, at ``base_url``."""

WEBHOOK_KINDS = frozenset({"shopify", "square", "hubspot"})
"""Kinds whose systems push signed webhooks the hub takes in (``POST /webhooks/{connector}``)."""

MAPPED_BY_NAME = frozenset({"sql", "spreadsheet"})
"""Kinds whose records take the shape of one deployment (a legacy schema, a spreadsheet's columns):
their mapping files name the connector (``source: legacy_pos``), not the kind, and they are read
only — nothing is written back into them."""

StreamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
    return value


class SqlStream(Canonical):
    """One table or query of a SQL database, read as a stream in pages ordered by ``cursor`` then
    ``id`` (keyset paging), e.g. ``{table: pos_member, id: member_id, cursor: updated_at}``."""

    table: str | None = Field(default=None, description="table or view, schema-qualified if needed (dbo.member)")
    query: str | None = Field(
        default=None,
        description="a SELECT read as a subquery: it may join, filter and rename, but leaves ORDER BY and LIMIT "
        "to the connector",
    )
    kind: Literal["members", "orders"] = Field(default="members", description="what the rows are")
    id: str = Field(min_length=1, description="the primary key column: unique per row and never changed")
    cursor: str | None = Field(
        default=None,
        description="column of each row's last change time (DATETIME, TIMESTAMP or DATE): a sync reads the rows "
        "changed since the last one. Unset: every sync reads the whole stream",
    )
    page_size: int | None = Field(default=None, gt=0, description="rows per page; the connector's page_size or 1000")

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlStream:
        if (self.table is None) == (self.query is None):
            raise ValueError("give a stream either `table` or `query`, not both and not neither")
        return self


_NEEDS: dict[str, dict[str, str]] = {
    **{kind: {"base_url": "the API's scheme, host and port"} for kind in API_KINDS},
    "sql": {
        "url": "the database's SQLAlchemy URL, e.g. mysql+pymysql://pos:${POS_PASSWORD}@10.0.0.5/pos",
        "streams": "at least one stream: a table or query with its id column",
    },
    "spreadsheet": {
        "path": "the file or a glob of files (.csv, .xlsx)",
        "id_column": "the column (a field name after `header`) that holds each member's id",
    },
}
"""What each kind cannot work without, and how to explain it."""

_ONLY_FOR: dict[str, frozenset[str]] = {
    "base_url": API_KINDS,
    "token": API_KINDS,
    "database": API_KINDS,
    "login": API_KINDS,
    "locations": API_KINDS,
    "webhook_secret": WEBHOOK_KINDS,
    "webhook_url": WEBHOOK_KINDS,
    "url": frozenset({"sql"}),
    "streams": frozenset({"sql"}),
    "path": frozenset({"spreadsheet"}),
    "encoding": frozenset({"spreadsheet"}),
    "sheet": frozenset({"spreadsheet"}),
    "header": frozenset({"spreadsheet"}),
    "id_column": frozenset({"spreadsheet"}),
    "stream": frozenset({"spreadsheet"}),
    "timezone": MAPPED_BY_NAME,
}
"""Settings that mean something to some kinds only; giving one to another kind is a mistake."""


class ConnectorConfig(Canonical):
    """One system the hub pulls from and, for the API kinds, writes back to. Which settings a
    connector takes depends on its ``kind`` (see ``_NEEDS`` and ``_ONLY_FOR``)."""

    kind: SystemKind = Field(description="which system's API this connector speaks")
    base_url: str | None = Field(
        default=None, description="API kinds: scheme, host and port of the API, e.g. https://shop.myshopify.com"
    )
    token: SecretStr | None = Field(default=None, description="access token or API key; use ${ENV_VAR}")
    database: str | None = Field(default=None, description="Odoo database name")
    login: str | None = Field(default=None, description="Odoo login")
    locations: list[str] = Field(default_factory=list, description="Square location ids to read orders from")
    writeback: bool = Field(
        default=True, description="write points and tier back into this system (never for sql and spreadsheet)"
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")
    max_retry_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest pause between two attempts of a failed request (a server's Retry-After is cut to "
        "this too); lower it to give up sooner, raise it for a system that asks for long pauses",
    )
    page_size: int | None = Field(default=None, gt=0, description="records per page; the API's maximum if unset")
    enabled: bool = True
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shopify, square, hubspot: the key that signs this system's webhooks (Shopify's app secret, "
        "Square's subscription signature key, HubSpot's client secret); use ${ENV_VAR}. Unset: webhooks from it "
        "are refused",
    )
    webhook_url: str | None = Field(
        default=None,
        description="square, hubspot: the public URL the system was told to send webhooks to, exactly as "
        "registered (they sign it); unset: the URL the request arrived at, right unless a proxy stands between",
    )

    # kind sql -----------------------------------------------------------------------------------
    url: SecretStr | None = Field(
        default=None,
        description="sql: SQLAlchemy URL of the database; put the password in ${ENV_VAR}. Shown only with the "
        "password hidden",
    )
    streams: dict[StreamName, SqlStream] = Field(
        default_factory=dict, description="sql: stream name -> the table or query it reads"
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="sql, spreadsheet: the IANA zone of times stored without an offset (a legacy DATETIME, an "
        "Excel date)",
    )

    # kind spreadsheet ---------------------------------------------------------------------------
    path: str | None = Field(
        default=None, description="spreadsheet: a .csv or .xlsx file, or a glob of them (members/*.csv)"
    )
    encoding: str | None = Field(
        default=None, description="spreadsheet: the CSV files' text encoding; unset: UTF-8 (with or without BOM) or GBK"
    )
    sheet: str | None = Field(default=None, description="spreadsheet: the .xlsx sheet to read; unset: the first")
    header: dict[str, str] = Field(
        default_factory=dict,
        description="spreadsheet: column title in the file -> field name in the record, e.g. 手机号: mobile; "
        "unlisted columns keep their titles",
    )
    id_column: str | None = Field(default=None, description="spreadsheet: the field (after `header`) holding the id")
    stream: StreamName | None = Field(default=None, description="spreadsheet: the stream's name; unset: members")

    @model_validator(mode="before")
    @classmethod
    def _read_only_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") in MAPPED_BY_NAME and "writeback" not in data:
            return {**data, "writeback": False}
        return data

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _iana_zone(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                make_url(value.get_secret_value())
            except ArgumentError:
                raise ValueError("not a SQLAlchemy URL such as mysql+pymysql://user:${PASSWORD}@host/db") from None
        return value

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}; e.g. utf-8, utf-8-sig, gbk, gb18030") from None
        return value

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> ConnectorConfig:
        problems = [
            f"kind {self.kind} needs `{name}`: {what}"
            for name, what in _NEEDS.get(self.kind, {}).items()
            if getattr(self, name) in (None, {}, "")
        ]
        problems += [
            f"`{name}` is a setting of kind {' or '.join(sorted(kinds))}, not {self.kind}"
            for name, kinds in _ONLY_FOR.items()
            if self.kind not in kinds and name in self.model_fields_set
        ]
        if self.kind in MAPPED_BY_NAME and self.writeback:
            problems.append(f"kind {self.kind} is read only: the hub cannot write back into it; drop `writeback`")
        if problems:
            raise PydanticCustomError("connector_settings", "{problems}", {"problems": "; ".join(problems)})
        return self

    def display_url(self) -> str | None:
        """``url`` with its password hidden, for logs, messages and ``connectors list``."""
        if self.url is None:
            return None
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


class TierLevel(Canonical):
    """One rung of the tier ladder (会员等级). Thresholds are compared with the qualifying amount
    (成长值) of the rolling window that ``tier_policy`` describes."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="code name, e.g. gold")
    label: str = Field(description="what members read, e.g. 金卡")
    min_spend: Decimal = Field(ge=0, description="qualifying spend that reaches this tier (basis: spend)")
    min_points: int | None = Field(default=None, ge=0, description="qualifying points that reach it (basis: points)")
    retain_spend: Decimal | None = Field(
        default=None, ge=0, description="保级: a member keeps this tier at review while the window's spend stays ≥ this"
    )
    retain_points: int | None = Field(default=None, ge=0, description="保级 floor when the basis is points")


class TierPolicy(Canonical):
    """How tiers move. Upgrades apply as soon as an evaluation sees the threshold reached;
    downgrades happen only at a review, by at most one level, and not while the retention floor holds."""

    basis: Literal["spend", "points"] = Field(
        default="spend", description="spend: net order amounts; points: points earned and released (never redeemed)"
    )
    window_days: int | None = Field(
        default=None, gt=0, description="rolling window of the qualifying amount, in days; unset means lifetime"
    )
    review_every: Literal["month", "quarter", "year"] = Field(
        default="month", description="how often downgrades are reviewed; a review runs once per period"
    )


class ExpiryPolicy(Canonical):
    """When earned points lapse (积分到期), counted from the purchase in the programme's time zone.

    never         points never expire
    days          spendable through the ``days``-th local day after the purchase
    end_of_month  until the end of the month ``months`` after the purchase month (0: that month)
    end_of_year   until 31 December of the year ``years`` after the purchase year (1: 次年年底)
    """

    policy: Literal["never", "days", "end_of_month", "end_of_year"] = "never"
    days: int | None = Field(default=None, gt=0, description="policy days: how many local days points stay valid")
    months: int = Field(default=0, ge=0, description="policy end_of_month: months after the purchase month")
    years: int = Field(default=0, ge=0, description="policy end_of_year: years after the purchase year")

    @model_validator(mode="after")
    def _days_only_with_days(self) -> ExpiryPolicy:
        if (self.policy == "days") != (self.days is not None):
            raise ValueError("give `days` exactly when the expiry policy is `days`")
        return self


# -- earn rules ---------------------------------------------------------------------------------------
# Each rule type is one small declared shape; ``EARN_RULES`` looks them up by name. However they are
# listed in the YAML, hub/ledger_rules.py applies them in one fixed order (see its docstring).


class _EarnRule(Canonical):
    label: str | None = Field(default=None, description="what a member's statement shows, e.g. 双十一双倍积分")


class StoreRate(_EarnRule):
    """Points per currency unit at some stores, instead of the programme's ``points_per_unit``."""

    type: Literal["store_rate"] = "store_rate"
    stores: list[str] = Field(min_length=1, description="the chain's store codes (mappings/stores.yaml)")
    points_per_unit: Decimal = Field(ge=0)


class BrandRate(_EarnRule):
    """Points per currency unit at every store of a brand (``programme.brands``)."""

    type: Literal["brand_rate"] = "brand_rate"
    brand: str = Field(min_length=1)
    points_per_unit: Decimal = Field(ge=0)


class SkuMultiplier(_EarnRule):
    """Multiply the points of order lines whose SKU is listed."""

    type: Literal["sku_multiplier"] = "sku_multiplier"
    skus: list[str] = Field(min_length=1)
    factor: Decimal = Field(ge=0)


class CategoryMultiplier(_EarnRule):
    """Multiply the points of order lines of a category, recognised by SKU prefix."""

    type: Literal["category_multiplier"] = "category_multiplier"
    category: str = Field(min_length=1, description="e.g. 生鲜")
    sku_prefixes: list[str] = Field(min_length=1)
    factor: Decimal = Field(ge=0)


class Promotion(_EarnRule):
    """A promotion window (e.g. double points days): local dates, inclusive, in the programme's zone."""

    type: Literal["promotion"] = "promotion"
    start: date
    end: date
    weekdays: list[int] = Field(default_factory=list, description="ISO weekdays 1-7 within the window; empty: all")
    stores: list[str] = Field(default_factory=list, description="empty: every store")
    channels: list[str] = Field(default_factory=list, description="empty: every channel")
    factor: Decimal = Field(default=Decimal(1), ge=1, description="multiplies the order's points")
    bonus: int = Field(default=0, ge=0, description="flat points added to each qualifying order")
    min_spend: Decimal = Field(default=Decimal(0), ge=0, description="orders below this amount do not qualify")

    @model_validator(mode="after")
    def _window(self) -> Promotion:
        if self.end < self.start:
            raise ValueError(f"promotion ends ({self.end}) before it starts ({self.start})")
        if any(day not in range(1, 8) for day in self.weekdays):
            raise ValueError("weekdays are ISO numbers 1 (Monday) to 7 (Sunday)")
        if self.factor == 1 and self.bonus == 0:
            raise ValueError("a promotion needs a factor above 1 or a bonus")
        return self


class TierMultiplier(_EarnRule):
    """Multiply points by the member's tier at the time of the order."""

    type: Literal["tier_multiplier"] = "tier_multiplier"
    factors: dict[str, Decimal] = Field(min_length=1, description="tier name -> factor; unlisted tiers earn ×1")


class Cap(_EarnRule):
    """The most points one order, or one member in one local day or month, can earn."""

    type: Literal["cap"] = "cap"
    per: Literal["order", "day", "month"]
    max: int = Field(ge=0)


EARN_RULES: dict[str, type[_EarnRule]] = {
    cls.model_fields["type"].default: cls
    for cls in (StoreRate, BrandRate, SkuMultiplier, CategoryMultiplier, Promotion, TierMultiplier, Cap)
}
"""Every earn rule type by the name a YAML file uses."""


def _known_rule(value: Any) -> Any:
    if isinstance(value, dict):
        name = value.get("type")
        if name is None:
            raise ValueError(f"an earn rule needs a `type`; one of {', '.join(sorted(EARN_RULES))}")
        if name not in EARN_RULES:
            close = closest(name, EARN_RULES, cutoff=0.4)
            hint = f"did you mean {close!r}? " if close else ""
            raise ValueError(f"unknown earn rule type {name!r}; {hint}(known: {', '.join(sorted(EARN_RULES))})")
    return value


EarnRule = Annotated[
    StoreRate | BrandRate | SkuMultiplier | CategoryMultiplier | Promotion | TierMultiplier | Cap,
    Field(discriminator="type"),
    BeforeValidator(_known_rule),
]


class ProgrammeConfig(Canonical):
    """The membership programme (会员体系): how points are earned, kept and lost, and how tiers are reached.

    Every field has a default that keeps the simplest programme: one point per whole unit spent,
    spendable at once, never expiring, tiers by lifetime spend."""

    currency: CurrencyCode = "CNY"
    points_per_unit: int = Field(default=1, ge=0, description="points per whole currency unit spent")
    default_region: str = Field(default="CN", pattern=r"^[A-Z]{2}$", description="region for local phones")
    email_rewrite: list[Annotated[str, Field(pattern=r"^(\*|[a-z0-9-]+(\.[a-z0-9-]+)+)$")]] = Field(
        default_factory=list,
        description="mail providers whose dots and plus tags are folded when staging (gmail.com, …; '*' for every "
        "provider hub.normalise.EMAIL_PROVIDERS knows); empty: addresses are kept as written",
    )
    timezone: str = Field(
        default="Asia/Shanghai", description="IANA zone in which days, months, promotions and expiry are counted"
    )
    pending_days: int = Field(
        default=0, ge=0, description="冻结期: days after a purchase before its points can be spent (the return window)"
    )
    expiry: ExpiryPolicy = Field(default_factory=ExpiryPolicy)
    brands: dict[str, list[str]] = Field(default_factory=dict, description="brand -> its store codes")
    earn_rules: list[EarnRule] = Field(default_factory=list, description="applied in the order of hub/ledger_rules")
    tier_policy: TierPolicy = Field(default_factory=TierPolicy)
    tiers: list[TierLevel] = Field(
        default_factory=lambda: [
            TierLevel(name="regular", label="普通", min_spend=Decimal(0)),
            TierLevel(name="silver", label="银卡", min_spend=Decimal(1000)),
            TierLevel(name="gold", label="金卡", min_spend=Decimal(5000)),
            TierLevel(name="diamond", label="钻石", min_spend=Decimal(20000)),
        ]
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value

    @model_validator(mode="after")
    def _ladder_is_ordered(self) -> ProgrammeConfig:
        if not self.tiers:
            raise ValueError("the tier ladder needs at least one tier")
        spends = [tier.min_spend for tier in self.tiers]
        if spends != sorted(spends) or len(set(spends)) != len(spends):
            raise ValueError("tiers must be listed from lowest to highest min_spend, without ties")
        if spends[0] != 0:
            raise ValueError("the first tier must start at min_spend 0 so every member has a tier")
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        if self.tier_policy.basis == "points":
            points = [tier.min_points for tier in self.tiers]
            if any(p is None for p in points):
                raise ValueError("with tier_policy.basis points, every tier needs min_points")
            if points != sorted(points) or len(set(points)) != len(points) or points[0] != 0:  # type: ignore[type-var]
                raise ValueError("min_points must rise from 0 along the ladder, without ties")
        for tier in self.tiers:
            if tier.retain_spend is not None and tier.retain_spend > tier.min_spend:
                raise ValueError(f"tier {tier.name}: retain_spend is a floor below min_spend, not above it")
            if tier.retain_points is not None and tier.min_points is not None and tier.retain_points > tier.min_points:
                raise ValueError(f"tier {tier.name}: retain_points is a floor below min_points, not above it")
        return self

    @model_validator(mode="after")
    def _rules_are_consistent(self) -> ProgrammeConfig:
        owner: dict[str, str] = {}
        for brand, stores in self.brands.items():
            for store in stores:
                if store in owner:
                    raise ValueError(f"store {store} is in two brands ({owner[store]}, {brand})")
                owner[store] = brand
        names = {tier.name for tier in self.tiers}
        rated: dict[str, str] = {}
        for rule in self.earn_rules:
            if isinstance(rule, BrandRate):
                if rule.brand not in self.brands:
                    close = closest(rule.brand, self.brands, cutoff=0.6)
                    hint = f"; did you mean {close!r}?" if close else f"; brands: {sorted(self.brands) or 'none'}"
                    raise ValueError(f"brand_rate names brand {rule.brand!r}, which programme.brands lacks{hint}")
                key = f"brand {rule.brand}"
                if key in rated:
                    raise ValueError(f"two brand_rate rules for {rule.brand}")
                rated[key] = rule.type
            elif isinstance(rule, StoreRate):
                for store in rule.stores:
                    if store in rated:
                        raise ValueError(f"store {store} has two store_rate rules")
                    rated[store] = rule.type
            elif isinstance(rule, TierMultiplier):
                unknown = sorted(set(rule.factors) - names)
                if unknown:
                    raise ValueError(f"tier_multiplier names unknown tiers {unknown}; the ladder has {sorted(names)}")
        if sum(isinstance(rule, TierMultiplier) for rule in self.earn_rules) > 1:
            raise ValueError("give at most one tier_multiplier rule")
        if self.expiry.policy == "days" and self.expiry.days is not None and self.expiry.days <= self.pending_days:
            raise ValueError("points would expire before they are released: expiry.days must exceed pending_days")
        return self


class OrchestrationConfig(Canonical):
    """When Dagster runs what, and what stops a write-back (read by orchestration/)."""

    sync_cron: str = Field(
        default="*/15 * * * *", description="cron of the incremental sync of every connector (pull to write-back)"
    )
    nightly_cron: str = Field(
        default="30 2 * * *", description="cron of the nightly jobs: release pending points, expire lots, review tiers"
    )
    timezone: str = Field(default="Asia/Shanghai", description="the IANA zone the two crons are read in")
    event_poll_seconds: int = Field(
        default=5, ge=1, description="how often the webhook sensor looks for new events; a purchase's points show "
        "about this long plus one incremental run after its webhook"
    )
    max_quarantine_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="write-back stops while any source has more than this share of its records in quarantine",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _iana_zone(value)


class HubConfig(Canonical):
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means the embedded SQLite under .memberhub/"
    )
    programme: ProgrammeConfig = Field(default_factory=ProgrammeConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
