"""Web accounts: argon2id password hashes (RFC 9106, via argon2-cffi), roles, case access, sign-in checks.

Functions take a SQLAlchemy session and leave committing to the caller, like p2pwatch.investigate.registry.
Every account change and every sign-in (good or bad) is appended to the audit chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from p2pwatch.errors import ConfigError
from p2pwatch.locale import N_
from p2pwatch.locale import tr as _
from p2pwatch.storage.ledger import append_audit
from p2pwatch.storage.models import ROLES, Case, CaseMember, User

#: argon2-cffi's defaults are RFC 9106's second recommended option (argon2id, t=3, 64 MiB, p=4).
HASHER = PasswordHasher()
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
#: Verified against when the name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = HASHER.hash("p2pwatch: no such account")


class UnknownUser(ConfigError):
    """No account of that name."""


@dataclass(frozen=True)
class Account:
    """What a signed-in request knows about its user (no password hash)."""

    id: int
    name: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


#: The role names as people read them (shown through ``_(role)``).
ROLE_LABELS = (N_("staff"), N_("investigator"), N_("admin"))
#: role -> what it may do; each role includes the ones before it.
PERMISSIONS: dict[str, frozenset[str]] = {
    "staff": frozenset({"register", "cases"}),
    "investigator": frozenset({"register", "cases", "all_cases", "peers", "export", "lookup", "watch", "audit"}),
    "admin": frozenset({"register", "cases", "all_cases", "peers", "export", "lookup", "watch", "audit", "users"}),
}


def _now() -> datetime:
    return datetime.now(UTC)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(_("a password needs at least %(n)s characters", n=MIN_PASSWORD))


def add_user(session: Session, name: str, role: str, password: str, *, actor: str = "cli") -> User:
    if not NAME_PATTERN.match(name):
        raise ConfigError(_("%(user)s is not a valid account name (letters, digits, . _ @ -; at most 64)",
                            user=repr(name)))
    if role not in ROLES:
        raise ConfigError(_("role must be one of %(roles)s, not %(role)s", roles=", ".join(ROLES), role=repr(role)))
    check_password_strength(password)
    if session.execute(select(User).where(User.name == name)).scalar_one_or_none() is not None:
        raise ConfigError(_("account %(user)s already exists", user=repr(name)))
    user = User(name=name, role=role, password_hash=HASHER.hash(password), created_at=_now())
    session.add(user)
    session.flush()
    append_audit(session, actor, "user.add", {"user": name, "role": role})
    return user


def get_user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise UnknownUser(_("no account named %(user)s (see `p2pwatch user list`)", user=repr(name)))
    return user


def list_users(session: Session) -> list[dict[str, Any]]:
    return [{"user": u.name, "role": u.role, "created_at": u.created_at.isoformat(),
             "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
             "last_signin_at": u.last_signin_at.isoformat() if u.last_signin_at else None}
            for u in session.execute(select(User).order_by(User.name)).scalars()]


def disable_user(session: Session, name: str, *, actor: str = "cli") -> User:
    """Disable an account (kept for the audit trail, never deleted); its sessions stop at the next request."""
    user = get_user(session, name)
    if user.disabled_at is None:
        user.disabled_at = _now()
        session.flush()
        append_audit(session, actor, "user.disable", {"user": name})
    return user


def authenticate(session: Session, name: str, password: str, *, client: str = "") -> Account | None:
    """The account when ``name``/``password`` are right and it is enabled; None otherwise. Audited both ways."""
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    try:
        HASHER.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
        ok = user is not None and user.disabled_at is None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    detail = {"user": name[:64], "client": client, "ok": ok}
    append_audit(session, f"web:{name[:64]}", "web.signin", detail)
    if not ok or user is None:
        return None
    if HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = HASHER.hash(password)
    user.last_signin_at = _now()
    session.flush()
    return Account(user.id, user.name, user.role)


def load_account(session: Session, user_id: int) -> Account | None:
    """The enabled account of a session cookie's user id, or None (deleted, disabled)."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return None
    return Account(user.id, user.name, user.role)


def grant_case(session: Session, case: Case, account: Account) -> None:
    exists = session.execute(select(CaseMember).where(CaseMember.case_id == case.id,
                                                      CaseMember.user_id == account.id)).scalar_one_or_none()
    if exists is None:
        session.add(CaseMember(case_id=case.id, user_id=account.id, added_at=_now()))
        session.flush()


def visible_case_ids(session: Session, account: Account) -> set[int] | None:
    """The case ids the account may open; None means every case (investigators and admins)."""
    if account.can("all_cases"):
        return None
    return set(session.execute(select(CaseMember.case_id).where(CaseMember.user_id == account.id)).scalars())
