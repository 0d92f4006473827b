"""``Idempotency-Key`` on API writes: the same key with the same body gets the first response again;
the same key with another body is refused (422). The response is stored in the transaction of the
write it describes, so either both happen or neither; two requests racing with one key meet on the
primary key and the loser gets 409. Only successful responses are kept: a failed write may be retried
with the same key."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.accounts import Principal
from hub.tables import IdempotencyRecord
from hub.web.errors import WebError

MAX_KEY = 255


def request_hash(method: str, path: str, body: Any) -> str:
    text = json.dumps([method.upper(), path, body], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def replay(session: Session, principal: Principal, key: str | None, digest: str) -> tuple[int, Any] | None:
    """The stored (status, body) for this key, or None when the key is new (or absent)."""
    if key is None:
        return None
    if not key or len(key) > MAX_KEY:
        raise WebError(400, "bad_idempotency_key", f"an Idempotency-Key has 1 to {MAX_KEY} characters")
    row = session.scalar(
        select(IdempotencyRecord).where(IdempotencyRecord.account_id == principal.id, IdempotencyRecord.key == key)
    )
    if row is None:
        return None
    if row.request_hash != digest:
        raise WebError(
            422, "idempotency_key_reused", "this Idempotency-Key was used for a different request; use a new key"
        )
    return row.status_code, row.response["body"]


def remember(session: Session, principal: Principal, key: str | None, digest: str, status: int, body: Any) -> None:
    if key is not None:
        session.add(
            IdempotencyRecord(
                account_id=principal.id, key=key, request_hash=digest, status_code=status, response={"body": body}
            )
        )
