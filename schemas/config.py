"""The shape of a hub's configuration file (memberhub.yaml): connectors and the programme."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from schemas._types import Canonical, CurrencyCode

SystemKind = Literal["shopify", "square", "hubspot", "odoo"]


class ConnectorConfig(Canonical):
    """One source system the hub pulls from and writes back to."""

    kind: SystemKind = Field(description="which system's API this connector speaks")
    base_url: str = Field(description="scheme, host and port of the API, e.g. https://shop.myshopify.com")
    token: SecretStr | None = Field(default=None, description="access token or API key; use ${ENV_VAR}")
    database: str | None = Field(default=None, description="Odoo database name")
    login: str | None = Field(default=None, description="Odoo login")
    locations: list[str] = Field(default_factory=list, description="Square location ids to read orders from")
    writeback: bool = Field(default=True, description="write points and tier back into this system")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")
    page_size: int | None = Field(default=None, gt=0, description="records per page; the API's maximum if unset")
    enabled: bool = True


class TierLevel(Canonical):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="code name, e.g. gold")
    label: str = Field(description="what members read, e.g. 金卡")
    min_spend: Decimal = Field(ge=0, description="lifetime qualifying spend that reaches this tier")


class ProgrammeConfig(Canonical):
    """The membership programme (会员体系): how points are earned and how tiers are reached."""

    currency: CurrencyCode = "CNY"
    points_per_unit: int = Field(default=1, ge=0, description="points per whole currency unit spent")
    default_region: str = Field(default="CN", pattern=r"^[A-Z]{2}$", description="region for local phones")
    tiers: list[TierLevel] = Field(
        default_factory=lambda: [
            TierLevel(name="regular", label="普通", min_spend=Decimal(0)),
            TierLevel(name="silver", label="银卡", min_spend=Decimal(1000)),
            TierLevel(name="gold", label="金卡", min_spend=Decimal(5000)),
            TierLevel(name="diamond", label="钻石", min_spend=Decimal(20000)),
        ]
    )

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
        return self


class HubConfig(Canonical):
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means the embedded SQLite under .memberhub/"
    )
    programme: ProgrammeConfig = Field(default_factory=ProgrammeConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
