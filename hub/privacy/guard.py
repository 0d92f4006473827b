"""Staging's one call into hub.privacy: blind indexes for the rows it is about to write, and people
who asked to be forgotten kept out (their tombstones; ``hub.privacy.requests.forget``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hub.privacy.crypto import Keyring, keyring
from hub.tables import PrivacyTombstone, QuarantineRow, SourceRecordRow

log = logging.getLogger(__name__)
ERASED: dict[str, Any] = {}
"""What an erased raw record's payload becomes (its content hash stays, so an unchanged copy sent
again is recognised as already seen and not stored twice)."""


IDENTIFYING = (("email", "email_bidx"), ("resident_id", "resident_id_hash"))
"""What besides a source's own id keeps a forgotten person out. Not the phone: families share one
(the simulators' world has them too), and forgetting one person must not silence a relative."""


def tombstone_keys(ring: Keyring, values: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, key) pairs that identify the person of one staged member row."""
    keys = {("source_id", ring.blind_index("source_id", f"{values['source']}:{values['source_id']}"))}
    for kind, column in IDENTIFYING:
        if values.get(column):
            keys.add((kind, values[column]))
    return {k for k in keys if k[1]}


def protect_members(session: Session, members: dict[int, dict[str, Any]]) -> list[int]:
    """Add ``phone_bidx``/``email_bidx`` to each staged-member row (source record id -> values), then
    drop the rows of forgotten people: their raw records are erased and they are not staged.
    Returns the source record ids withheld."""
    ring = keyring()
    for values in members.values():
        values["phone_bidx"] = ring.blind_index("phone", values.get("phone"))
        values["email_bidx"] = ring.blind_index("email", values.get("email"))
    if not members or session.scalar(select(PrivacyTombstone.id).limit(1)) is None:
        return []
    wanted = {record_id: tombstone_keys(ring, values) for record_id, values in members.items()}
    found = _tombstoned(session, {k for keys in wanted.values() for k in keys})
    withheld = sorted(record_id for record_id, keys in wanted.items() if keys & found)
    for record_id in withheld:
        del members[record_id]
    erase_records(session, withheld)
    if withheld:
        log.info("withheld %d source records of forgotten people", len(withheld))
    return withheld


def erase_records(session: Session, record_ids: Iterable[int]) -> None:
    """Empty these raw records (marked staged at their current version) and drop their quarantine entries."""
    ids = sorted(set(record_ids))
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        session.execute(
            update(SourceRecordRow)
            .where(SourceRecordRow.id.in_(chunk))
            .values(payload=ERASED, staged_hash=SourceRecordRow.content_hash)
            .execution_options(synchronize_session=False)
        )
        session.execute(delete(QuarantineRow).where(QuarantineRow.source_record_id.in_(chunk)))


def _tombstoned(session: Session, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    values = sorted({key for _kind, key in keys})
    for start in range(0, len(values), 1000):
        rows = session.execute(
            select(PrivacyTombstone.kind, PrivacyTombstone.key).where(
                PrivacyTombstone.key.in_(values[start : start + 1000])
            )
        )
        found.update((kind, key) for kind, key in rows)
    return found & keys


__all__ = ["ERASED", "erase_records", "protect_members", "tombstone_keys"]
