"""Who may do what: accounts with roles, argon2 passwords, API tokens, console sessions.

Roles (``ROLES``): an *admin* does everything; a *steward* (数据管理员) reviews pairs, merges, splits
and pins fields; a *clerk* (门店店员) sees the members and points of their own stores only, with
contact fields masked; an *auditor* reads everything, the audit log included, and changes nothing.
What each role may do is one table, ``PERMISSIONS``, that the API and the console both check.

Tokens and session ids are 256 random bits, so a plain SHA-256 of them is safe to store and cheap to
check on every request; passwords are low-entropy and get argon2.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from hub.tables import AccessState, Account, ApiToken, AuditLog, LoginFailure, WebSession, utcnow
from schemas.errors import HubError

ROLES = ("admin", "steward", "clerk", "auditor")

PERMISSIONS: dict[str, frozenset[str]] = {
    "member.read": frozenset(ROLES),
    "member.lookup": frozenset(ROLES),
    "member.split": frozenset({"admin", "steward"}),
    "member.pin": frozenset({"admin", "steward"}),
    "points.adjust": frozenset({"admin", "clerk"}),
    "review.read": frozenset({"admin", "steward", "auditor"}),
    "review.decide": frozenset({"admin", "steward"}),
    "audit.read": frozenset({"admin", "auditor"}),
    "users.manage": frozenset({"admin"}),
}
"""permission -> the roles that hold it."""

SESSION_HOURS = 12
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
"""After this many failed sign-ins within the window, for one account or from one address, sign-in is
refused (429) until the oldest of them is older than the window."""
_hasher = PasswordHasher()


class AccessError(HubError):
    """Signing in failed, or the account may not do what it asked."""


class TooManyLogins(AccessError):
    """Too many failed sign-ins for this account or from this address; ``retry_after`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} seconds")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """The account behind a request, as the web layer needs it."""

    id: int
    name: str
    role: str
    stores: tuple[str, ...] = field(default=())

    @property
    def actor(self) -> str:
        """How the audit log names this person: ``role:name`` (e.g. ``steward:li``)."""
        return f"{self.role}:{self.name}"

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]

    @property
    def store_scoped(self) -> bool:
        """A clerk sees only their stores' members; every other role sees all."""
        return self.role == "clerk"

    @property
    def sees_contacts(self) -> bool:
        """Unmasked phone and e-mail (each such read by a person is audited)."""
        return self.role != "clerk"


def _principal(account: Account) -> Principal:
    return Principal(account.id, account.name, account.role, tuple(account.stores or ()))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_user(
    session: Session,
    name: str,
    role: str,
    *,
    stores: list[str] | None = None,
    password: str | None = None,
    actor: str = "cli",
) -> Principal:
    name = name.strip()
    if not name:
        raise AccessError("a user needs a name")
    if role not in ROLES:
        raise AccessError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    stores = sorted({s.strip() for s in stores or [] if s.strip()})
    if role == "clerk" and not stores:
        raise AccessError("a clerk needs at least one store (--store CODE)")
    if role != "clerk" and stores:
        raise AccessError(f"only clerks are limited to stores; a {role} sees every store")
    if session.scalar(select(Account).where(Account.name == name)) is not None:
        raise AccessError(f"user {name!r} exists already")
    account = Account(name=name, role=role, stores=stores, disabled=False)
    if password is not None:
        account.password_hash = _hash_password(password)
    session.add(account)
    session.flush()
    session.add(
        AuditLog(
            actor=actor,
            action="user.add",
            entity="account",
            entity_id=name,
            before=None,
            after={"role": role, "stores": stores},
        )
    )
    return _principal(account)


def _hash_password(password: str) -> str:
    if len(password) < 8:
        raise AccessError("a password needs at least 8 characters")
    return _hasher.hash(password)


def set_password(session: Session, name: str, password: str, *, actor: str = "cli") -> None:
    account = _account(session, name)
    account.password_hash = _hash_password(password)
    session.add(
        AuditLog(actor=actor, action="user.password", entity="account", entity_id=name, before=None, after=None)
    )


def _account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise AccessError(f"no user {name!r}; `memberhub users list` shows them")
    return account


def list_users(session: Session) -> list[dict[str, object]]:
    rows = []
    for account in session.scalars(select(Account).order_by(Account.name)):
        tokens = session.scalars(
            select(ApiToken.prefix).where(ApiToken.account_id == account.id, ApiToken.revoked_at.is_(None))
        ).all()
        rows.append(
            {
                "name": account.name,
                "role": account.role,
                "stores": list(account.stores or []),
                "password": account.password_hash is not None,
                "tokens": list(tokens),
                "disabled": account.disabled,
                "created_at": account.created_at.isoformat(),
            }
        )
    return rows


def issue_token(session: Session, name: str, *, actor: str = "cli") -> str:
    """A new API token for ``name``: returned once, only its hash is stored."""
    account = _account(session, name)
    token = "mht_" + secrets.token_urlsafe(32)
    session.add(ApiToken(account_id=account.id, token_hash=digest(token), prefix=token[:12]))
    session.add(
        AuditLog(
            actor=actor,
            action="token.issue",
            entity="account",
            entity_id=name,
            before=None,
            after={"prefix": token[:12]},
        )
    )
    return token


def revoke_tokens(session: Session, name: str, prefix: str | None = None, *, actor: str = "cli") -> list[str]:
    """Revoke ``name``'s active API token that starts with ``prefix`` (as ``users list`` shows it), or
    all of them when ``prefix`` is None; return the prefixes revoked. Every web worker refuses them
    from its next request on (``access_generation``)."""
    account = _account(session, name)
    query = select(ApiToken).where(ApiToken.account_id == account.id, ApiToken.revoked_at.is_(None))
    if prefix is not None:
        query = query.where(or_(ApiToken.prefix == prefix, ApiToken.token_hash == digest(prefix)))  # or the token
    tokens = session.scalars(query).all()
    if prefix is not None and not tokens:
        raise AccessError(f"user {name!r} has no active token {prefix!r}; `memberhub users list` shows them")
    now = utcnow()
    for token in tokens:
        token.revoked_at = now
    if tokens:
        _bump_access_generation(session)
        session.add(
            AuditLog(
                actor=actor,
                action="token.revoke",
                entity="account",
                entity_id=name,
                before=None,
                after={"prefixes": [t.prefix for t in tokens]},
            )
        )
    return [t.prefix for t in tokens]


def disable_user(session: Session, name: str, *, actor: str = "cli") -> None:
    """Shut ``name`` out: its tokens are refused on every web worker from the next request on, and
    its console sessions end."""
    account = _account(session, name)
    if account.disabled:
        return
    account.disabled = True
    session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    _bump_access_generation(session)
    session.add(AuditLog(actor=actor, action="user.disable", entity="account", entity_id=name, before=None, after=None))


def _bump_access_generation(session: Session) -> None:
    session.execute(update(AccessState).values(generation=AccessState.generation + 1))


def access_generation(session: Session) -> int:
    """The number that goes up whenever a token is revoked or an account disabled."""
    return session.scalar(select(AccessState.generation)) or 0


def authenticate_token(session: Session, token: str) -> Principal | None:
    row = session.execute(
        select(Account)
        .join(ApiToken, ApiToken.account_id == Account.id)
        .where(ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None), Account.disabled.is_(False))
    ).scalar_one_or_none()
    return None if row is None else _principal(row)


def _login_keys(name: str, address: str | None) -> list[str]:
    keys = [f"account:{name.strip()}"[:128]]
    if address:
        keys.append(f"address:{address}"[:128])
    return keys


def check_login_allowed(session: Session, name: str, address: str | None, *, now: datetime | None = None) -> None:
    """Raise TooManyLogins while this account, or this client address, has failed to sign in
    ``LOGIN_FAILURES_ALLOWED`` times within ``LOGIN_FAILURE_WINDOW``. Checked before the password, so
    a blocked guesser learns nothing."""
    now = now or utcnow()
    waits = []
    for key in _login_keys(name, address):
        recent = session.scalars(
            select(LoginFailure.at)
            .where(LoginFailure.key == key, LoginFailure.at > now - LOGIN_FAILURE_WINDOW)
            .order_by(LoginFailure.at.desc())
            .limit(LOGIN_FAILURES_ALLOWED)
        ).all()
        if len(recent) >= LOGIN_FAILURES_ALLOWED:  # allowed again once the oldest of these leaves the window
            waits.append((recent[-1] + LOGIN_FAILURE_WINDOW - now).total_seconds())
    if waits:
        raise TooManyLogins(max(1, int(max(waits) + 0.999)))


def record_login(
    session: Session, name: str, address: str | None, *, succeeded: bool, now: datetime | None = None
) -> None:
    """Count a failed sign-in against the account and the address; a success clears the account's
    count (not the address's: one valid account must not reset a guesser's count on others)."""
    now = now or utcnow()
    keys = _login_keys(name, address)
    if succeeded:
        session.execute(delete(LoginFailure).where(LoginFailure.key == keys[0]))
        return
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - LOGIN_FAILURE_WINDOW))
    session.add_all(LoginFailure(key=key, at=now) for key in keys)
    session.add(
        AuditLog(
            actor="anonymous",
            action="login.failed",
            entity="account",
            entity_id=name.strip()[:160],
            before=None,
            after={"address": address},
        )
    )


def authenticate_password(session: Session, name: str, password: str) -> Principal | None:
    account = session.scalar(select(Account).where(Account.name == name.strip(), Account.disabled.is_(False)))
    if account is None or account.password_hash is None:
        _hasher.hash(password)  # the same work as a real check: timing does not tell which names exist
        return None
    try:
        _hasher.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return _principal(account)


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    csrf_token: str


def open_session(session: Session, principal: Principal, *, now: datetime | None = None) -> tuple[str, str]:
    """A new console session: (the cookie value, its CSRF token)."""
    now = now or utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_hash=digest(cookie),
            account_id=principal.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(hours=SESSION_HOURS),
        )
    )
    session.add(
        AuditLog(
            actor=principal.actor, action="login", entity="account", entity_id=principal.name, before=None, after=None
        )
    )
    return cookie, csrf


def session_for(session: Session, cookie: str, *, now: datetime | None = None) -> SignedIn | None:
    row = session.execute(
        select(Account, WebSession.csrf_token)
        .join(WebSession, WebSession.account_id == Account.id)
        .where(
            WebSession.id_hash == digest(cookie), WebSession.expires_at > (now or utcnow()), Account.disabled.is_(False)
        )
    ).first()
    return None if row is None else SignedIn(_principal(row[0]), row[1])


def close_session(session: Session, cookie: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_hash == digest(cookie)))
