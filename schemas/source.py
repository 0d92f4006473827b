"""A record exactly as a source system returned it, before any mapping."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from schemas._types import AwareDatetime, Canonical


def content_hash(payload: dict[str, Any]) -> str:
    """Stable hash of a payload: key order and whitespace do not change it."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SourceRecord(Canonical):
    source: str = Field(min_length=1)
    stream: str = Field(min_length=1)
    external_id: str = Field(min_length=1)
    payload: dict[str, Any]
    first_seen_at: AwareDatetime | None = None
    last_seen_at: AwareDatetime | None = None

    @property
    def content_hash(self) -> str:
        return content_hash(self.payload)
