"""Connectors: one module per source system, sharing one HTTP core. Looked up by kind."""

from __future__ import annotations

from importlib import import_module

from connectors.base import (
    CheckStep,
    Connector,
    DestinationEvent,
    Page,
    Stream,
    WritebackResult,
    WritebackUpdate,
)
from schemas import ConnectorConfig
from schemas.errors import ConfigError

_KINDS = {
    "shopify": "connectors.shopify:ShopifyConnector",
    "square": "connectors.square:SquareConnector",
    "hubspot": "connectors.hubspot:HubSpotConnector",
    "odoo": "connectors.odoo:OdooConnector",
    "sql": "connectors.sql:SqlConnector",
    "spreadsheet": "connectors.spreadsheet:SpreadsheetConnector",
}


def connector_for(name: str, config: ConnectorConfig) -> Connector:
    """Build the connector for a configured system, e.g. ``connector_for("shop", cfg)``."""
    target = _KINDS.get(config.kind)
    if target is None:
        raise ConfigError(f"connector {name!r}: unknown kind {config.kind!r}; valid kinds: {', '.join(_KINDS)}")
    module, cls = target.split(":")
    return getattr(import_module(module), cls)(name, config)


__all__ = [
    "CheckStep",
    "Connector",
    "DestinationEvent",
    "Page",
    "Stream",
    "WritebackResult",
    "WritebackUpdate",
    "connector_for",
]
