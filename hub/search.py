"""Finding members by what a person at a counter or a desk knows: phone, e-mail, name (Hanzi or
pinyin), member id or a source system's id. The console's search box, the API's search and the
tills' lookup all come through here.

Phone and e-mail are looked up in one place, :func:`member_ids_by_contact`: contacts are sealed at
rest, so the query compares blind indexes (keyed hashes of the normalised value, hub.privacy) on the
source records, an indexed lookup that never puts a phone number into SQL.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Protocol

from sqlalchemy import BigInteger, Select, bindparam, cast, func, or_, select, true, union
from sqlalchemy.orm import Session

from hub.normalise import EMAIL_PROVIDERS, email_key, phone_e164
from hub.privacy import blind_index
from hub.resolution.text import has_han, pinyin
from hub.tables import (
    AccessState,
    GoldenMember,
    LedgerEntryRow,
    MemberIdChange,
    MemberLink,
    StagedMember,
    TierAssignmentRow,
)
from schemas.errors import ConfigError, closest

_STAGED, _LINKS, _GOLDEN = StagedMember.__table__, MemberLink.__table__, GoldenMember.__table__
_LEDGER, _TIERS, _ACCESS = LedgerEntryRow.__table__, TierAssignmentRow.__table__, AccessState.__table__
MEMBER_ID = re.compile(r"^MH\d{8}$", re.IGNORECASE)
_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{7,20}$")
_SOURCE_ID = re.compile(r"^(?P<source>[a-z][a-z0-9_-]*):(?P<id>\S+)$")


@dataclass(frozen=True)
class MemberHit:
    member_id: str
    full_name: str | None
    phone: str | None
    email: str | None
    matched: str
    """what the query matched: member_id | redirect | phone | email | source_id | name"""


@dataclass(frozen=True)
class ContactRules:
    """How a phone or an e-mail someone types is read: as staging read the stored ones, with
    memberhub.yaml's ``programme.default_region`` and ``programme.email_rewrite``. A search that
    read them otherwise would miss (``J.Smith+shop@gmail.com`` is stored as ``jsmith@gmail.com``
    where Gmail addresses are folded)."""

    region: str = "CN"
    email_rewrite: frozenset[str] = frozenset()

    @classmethod
    def of(cls, programme: Any) -> ContactRules:
        """memberhub.yaml's rules; an ``email_rewrite`` provider whose variants are not known is refused."""
        for provider in programme.email_rewrite:
            if provider != "*" and provider not in EMAIL_PROVIDERS:
                close = closest(provider, EMAIL_PROVIDERS, cutoff=0.8)
                raise ConfigError(
                    f"programme.email_rewrite: {provider!r} is not a mail provider whose address variants are known"
                    + (f"; did you mean {close!r}?" if close else "")
                    + f" (known: {', '.join(sorted(EMAIL_PROVIDERS))}; '*' for all of them)"
                )
        return cls(programme.default_region, frozenset(programme.email_rewrite))

    def value(self, kind: str, raw: str) -> str | None:
        """The normalised phone (E.164) or e-mail, or None when it is not a valid one."""
        return phone_e164(raw, self.region) if kind == "phone" else email_key(raw, rewrite=self.email_rewrite)


def contact_key(kind: str, raw: str, rules: ContactRules = ContactRules()) -> str | None:
    """The blind index a phone (any common writing of it) or an e-mail is stored under, or None when
    it is not a valid phone or address."""
    value = rules.value(kind, raw)
    return None if value is None else blind_index(kind, value)


@cache
def contact_query(kind: str) -> Select:
    """Golden member ids holding the contact ``:contact_key`` (a blind index) in any source record: an
    index lookup, built once (a till's lookup should not pay for building SQL)."""
    column = {"phone": _STAGED.c.phone_bidx, "email": _STAGED.c.email_bidx}[kind]
    return (
        select(_LINKS.c.member_id)
        .join(_STAGED, _STAGED.c.id == _LINKS.c.staged_member_id)
        .where(column == bindparam("contact_key"))
    )


def member_ids_by_contact(
    session: Session, *, phone: str | None = None, email: str | None = None, rules: ContactRules = ContactRules()
) -> list[str]:
    """Active golden members holding this phone or e-mail in any source record."""
    found: set[str] = set()
    for kind, raw in (("phone", phone), ("email", email)):
        key = None if raw is None else contact_key(kind, raw, rules)
        if key is not None:
            found.update(session.connection().execute(contact_query(kind), {"contact_key": key}).scalars())
    return sorted(found)


def resolve_member_id(session: Session, member_id: str) -> tuple[str | None, bool]:
    """(the active id a member id names now, whether it was redirected by a merge or split)."""
    member_id = member_id.upper()
    seen: set[str] = set()
    current = member_id
    while current not in seen:
        seen.add(current)
        row = session.execute(
            select(GoldenMember.status, GoldenMember.merged_into).where(GoldenMember.member_id == current)
        ).first()
        if row is None:
            return None, False
        if row.merged_into is None:
            return current, current != member_id
        current = row.merged_into
    return None, False


def _by_source_id(session: Session, text: str) -> list[str]:
    match = _SOURCE_ID.match(text)
    where = (
        [StagedMember.source == match["source"], StagedMember.source_id == match["id"]]
        if match
        else [StagedMember.source_id == text]
    )
    query = select(MemberLink.member_id).join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
    return sorted(set(session.scalars(query.where(*where))))


def _by_name(session: Session, text: str, limit: int) -> list[str]:
    folded = pinyin(text)
    staged_pinyin = func.replace(func.coalesce(StagedMember.name_pinyin, ""), " ", "")
    conditions = [func.lower(StagedMember.full_name).contains(text.lower(), autoescape=True)]
    if folded and has_han(text):
        conditions.append(staged_pinyin == folded)  # same reading: 王芳 finds 汪芳 too
    elif folded:
        conditions.append(staged_pinyin.startswith(folded, autoescape=True))  # wangf, wang fang
    staged = (
        select(MemberLink.member_id)
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .where(or_(*conditions))
    )
    golden = select(GoldenMember.member_id).where(
        GoldenMember.status == "active", func.lower(GoldenMember.full_name).contains(text.lower(), autoescape=True)
    )
    ids = union(staged, golden).subquery()
    return list(session.scalars(select(ids.c.member_id).order_by(ids.c.member_id).limit(limit)))


def find_members(
    session: Session,
    query: str,
    *,
    limit: int = 50,
    stores: tuple[str, ...] | None = None,
    rules: ContactRules = ContactRules(),
) -> list[MemberHit]:
    """Members matching ``query``, best kind of match first. ``stores``: only members of these stores
    (a clerk's search)."""
    text = " ".join(query.split())
    if not text:
        return []
    found: dict[str, str] = {}

    def add(ids: list[str], how: str) -> None:
        for member_id in ids:
            found.setdefault(member_id, how)

    if MEMBER_ID.match(text):
        active, redirected = resolve_member_id(session, text)
        if active:
            add([active], "redirect" if redirected else "member_id")
    elif "@" in text:
        add(member_ids_by_contact(session, email=text, rules=rules), "email")
    else:
        if _PHONE_LIKE.match(text):
            add(member_ids_by_contact(session, phone=text, rules=rules), "phone")
        if " " not in text:
            add(_by_source_id(session, text), "source_id")
        if not found:
            add(_by_name(session, text, limit), "name")
    ids = list(found)
    if stores is not None:
        allowed = members_in_stores(session, ids, stores)
        ids = [i for i in ids if i in allowed]
    rows = {
        g.member_id: g
        for g in session.scalars(
            select(GoldenMember).where(GoldenMember.member_id.in_(ids[:limit]), GoldenMember.status == "active")
        )
    }
    return [MemberHit(m, rows[m].full_name, rows[m].phone, rows[m].email, found[m]) for m in ids[:limit] if m in rows]


def member_stores(session: Session, member_id: str) -> set[str]:
    """The stores a member belongs to: the home store of any of their source records, and any store
    where they earned or spent points."""
    home = (
        select(StagedMember.store_code)
        .join(MemberLink, MemberLink.staged_member_id == StagedMember.id)
        .where(MemberLink.member_id == member_id, StagedMember.store_code.is_not(None))
    )
    visited = select(LedgerEntryRow.store_code).where(
        LedgerEntryRow.member_id == member_id, LedgerEntryRow.store_code.is_not(None)
    )
    return set(session.scalars(union(home, visited)))


def members_in_stores(session: Session, member_ids: list[str], stores: tuple[str, ...]) -> set[str]:
    if not member_ids or not stores:
        return set()
    home = (
        select(MemberLink.member_id)
        .join(StagedMember, StagedMember.id == MemberLink.staged_member_id)
        .where(MemberLink.member_id.in_(member_ids), StagedMember.store_code.in_(stores))
    )
    visited = select(LedgerEntryRow.member_id).where(
        LedgerEntryRow.member_id.in_(member_ids), LedgerEntryRow.store_code.in_(stores)
    )
    return set(session.scalars(union(home, visited)))


def _in_stores(member_id: Any, stores: int) -> Any:
    """The member is one of the stores ``:store_0`` … (a home store of a source record, or points
    earned or spent there). One bind parameter per store, so the statement is the same text every
    time and the driver can prepare it."""
    codes = [bindparam(f"store_{i}") for i in range(stores)]
    home = (
        select(_LINKS.c.member_id)
        .join(_STAGED, _STAGED.c.id == _LINKS.c.staged_member_id)
        .where(_LINKS.c.member_id == member_id, _STAGED.c.store_code.in_(codes))
    )
    visited = select(_LEDGER.c.id).where(_LEDGER.c.member_id == member_id, _LEDGER.c.store_code.in_(codes))
    return or_(home.exists(), visited.exists())


LOOKUP_COLUMNS = ("access_generation", "member_id", "full_name", "phone", "email", "tier", "balance", "pending")
"""What a row of :func:`lookup_query` holds; ``phone`` and ``email`` come sealed (hub.privacy)."""


@cache
def lookup_query(by: str, stores: int = 0) -> Select:
    """Id, name, contacts, tier, balance and pending points of the members a till asked for, in one
    statement: ``by`` a contact kind (``:contact_key``) or ``member_id`` (``:member_id``); ``stores``
    > 0: only members of the stores ``:store_0`` …

    The statement starts from the one row of ``access_state``, so it answers one row even when no
    member matches, and every row carries the access generation: the web worker checks that its
    cached token is still good (hub.web.auth) without a second round trip."""
    member_id = _GOLDEN.c.member_id
    tier = (
        select(_TIERS.c.tier).where(_TIERS.c.member_id == member_id).order_by(_TIERS.c.id.desc()).limit(1)
    ).scalar_subquery()
    points = select(func.coalesce(func.sum(_LEDGER.c.points), 0)).where(_LEDGER.c.member_id == member_id)
    pending = select(func.coalesce(func.sum(_LEDGER.c.pending_points), 0)).where(_LEDGER.c.member_id == member_id)
    which = member_id == bindparam("member_id") if by == "member_id" else member_id.in_(contact_query(by))
    members = select(
        member_id,
        _GOLDEN.c.full_name,
        _GOLDEN.c.phone,
        _GOLDEN.c.email,
        tier.label("tier"),
        cast(points.scalar_subquery(), BigInteger).label("balance"),
        cast(pending.scalar_subquery(), BigInteger).label("pending"),
    ).where(which, _GOLDEN.c.status == "active")
    if stores:
        members = members.where(_in_stores(member_id, stores))
    found = members.subquery("found")
    return (
        select(_ACCESS.c.generation, *found.c).select_from(_ACCESS.outerjoin(found, true())).order_by(found.c.member_id)
    )


class Reader(Protocol):
    """How :func:`lookup` reads: a compiled statement's rows as plain tuples, and a session for the
    rare redirected member id."""

    def fetch(self, query: Select, params: dict[str, Any]) -> list[tuple[Any, ...]]: ...

    def session(self) -> AbstractContextManager[Session]: ...


def lookup(
    reader: Reader,
    *,
    phone: str | None = None,
    email: str | None = None,
    member_id: str | None = None,
    stores: tuple[str, ...] | None = None,
    rules: ContactRules = ContactRules(),
) -> tuple[int, list[dict[str, Any]]]:
    """What a till or a shop needs about the member(s) behind a phone, e-mail or member id: id,
    name, tier, balance and pending points, in one query, with the access generation it was read at.
    ``stores``: only members of these stores. Contacts come sealed: the caller masks them."""
    params: dict[str, Any] = {}
    if stores is not None:
        if not stores:
            stores = ("",)  # no store at all: matches nobody, but the generation is still read
        params.update((f"store_{i}", code) for i, code in enumerate(stores))
    query_by = partial(lookup_query, stores=0 if stores is None else len(stores))
    redirected_from = None
    if member_id is not None:
        asked = member_id.upper()
        rows = reader.fetch(query_by("member_id"), {**params, "member_id": asked})
        if rows[0][1] is None:  # not an active id: merged into another?
            with reader.session() as session:
                active, redirected = resolve_member_id(session, asked)
            if redirected:
                rows, redirected_from = reader.fetch(query_by("member_id"), {**params, "member_id": active}), asked
    else:
        by, raw = ("phone", phone) if phone is not None else ("email", email)
        key = None if raw is None else contact_key(by, raw, rules)
        rows = reader.fetch(query_by(by), {**params, "contact_key": key or ""})
    generation = rows[0][0]
    members = [dict(zip(LOOKUP_COLUMNS[1:], row[1:], strict=True)) for row in rows if row[1] is not None]
    for member in members:
        member["redirected_from"] = redirected_from
    return generation, members


def id_redirects(session: Session, member_id: str) -> list[dict[str, Any]]:
    """Every change of id that leads to or from a member (merges into it, splits out of it)."""
    rows = session.scalars(
        select(MemberIdChange)
        .where(or_(MemberIdChange.old_member_id == member_id, MemberIdChange.new_member_id == member_id))
        .order_by(MemberIdChange.id)
    )
    return [
        {"old_member_id": r.old_member_id, "new_member_id": r.new_member_id, "kind": r.kind, "at": r.changed_at}
        for r in rows
    ]
