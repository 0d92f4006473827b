"""Tag write-back (标签回写): the segment and event tags a destination should show for one customer.

Each connector's ``push_tags(updates)`` makes the customer's *managed* tags equal ``tags`` — managed
means listed in ``previous`` (what the destination last acknowledged) or starting with ``prefix`` —
and leaves every other tag a person put there alone. Values are absolute: a resend is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TagUpdate:
    member_id: str
    external_id: str
    tags: tuple[str, ...]  # what the customer should carry, sorted
    previous: tuple[str, ...] = ()  # what the destination last acknowledged
    prefix: str = "MH-"  # tags starting with it are the hub's, even if never acknowledged
    remote: dict[str, Any] = field(default_factory=dict)

    def managed(self, tag: str) -> bool:
        return tag in self.previous or tag in self.tags or (bool(self.prefix) and tag.startswith(self.prefix))

    def merged(self, current: list[str]) -> list[str]:
        """``current`` with the managed tags replaced by ``tags``; the order of the others kept."""
        kept = [t for t in current if not self.managed(t)]
        return kept + [t for t in self.tags if t not in kept]
