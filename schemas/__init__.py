"""Canonical shapes shared by every layer. Depends on nothing else of ours."""

from schemas._types import AwareDatetime, Channel, Money
from schemas.config import ConnectorConfig, HubConfig, ProgrammeConfig, TierLevel
from schemas.ledger import EntryKind, LedgerEntry, TierAssignment
from schemas.members import Member
from schemas.orders import Order, OrderLine, OrderStatus, Store
from schemas.source import SourceRecord, content_hash

__all__ = [
    "AwareDatetime",
    "Channel",
    "ConnectorConfig",
    "EntryKind",
    "HubConfig",
    "LedgerEntry",
    "Member",
    "Money",
    "Order",
    "OrderLine",
    "OrderStatus",
    "ProgrammeConfig",
    "SourceRecord",
    "Store",
    "TierAssignment",
    "TierLevel",
    "content_hash",
]
