"""The root of every error MemberHub raises on purpose.

    HubError                      something a person can act on; printed without a traceback
    ├── ConfigError               a configuration file is wrong (names file, line, closest valid key)
    ├── ConnectorError            talking to a source system failed        (connectors/)
    │   ├── RetriableError        a retry can fix it: 429, 5xx, timeouts, resets, truncated bodies
    │   └── FatalError            it cannot: bad credentials, missing permission, a request we built wrong
    ├── MappingError              a mapping file or expression is wrong     (mappings/)
    ├── ResolutionError           identity resolution could not proceed     (hub/resolve)
    └── LedgerError               a points movement was refused             (hub/ledger)

Each layer raises its own branch and translates lower-level errors at its boundary with
``raise ... from exc``, so a message always says what failed, for what, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HubError(Exception):
    """An error meant for a person: its message says what failed and what to do."""


class ConfigError(HubError):
    pass


class ConnectorError(HubError):
    pass


class RetriableError(ConnectorError):
    """Worth another attempt. ``retry_after`` is the server's own hint in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """Another attempt would fail the same way; stop this connector and tell a person."""


class MappingError(HubError):
    pass


class ResolutionError(HubError):
    pass


class LedgerError(HubError):
    pass


def closest(name: object, choices: Iterable[object], cutoff: float = 0.5) -> str | None:
    """The valid name closest to a wrong one, for "did you mean …?" in messages; None when nothing is close."""
    match = difflib.get_close_matches(str(name), sorted({str(c) for c in choices}), n=1, cutoff=cutoff)
    return match[0] if match else None
