"""Sessions, CSRF tokens and the sign-in rate limit of the web app (issue 14).

* Sessions live in this process's memory, keyed by the SHA-256 of a 256-bit random token that only the
  browser holds (cookie ``p2pwatch_session``: HttpOnly, SameSite=Strict, Secure unless ``web.secure_cookies``
  is off for plain-http loopback tests; RFC 6265bis). A restart signs everyone out. Sign-in replaces the
  session (no fixation); sign-out and disabling the account end it; it expires after ``session_minutes`` idle.
* Every session, signed-in or not, has a CSRF token (synchronizer-token pattern, OWASP); every POST must
  carry it in the ``csrf`` form field, compared in constant time, or it is refused with 403.
* Failed sign-ins are counted per account name and per client address in a sliding window; past the limit
  sign-in answers 429 until the window has passed, whatever the password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

COOKIE = "p2pwatch_session"
CSRF_FIELD = "csrf"


@dataclass
class WebSession:
    csrf: str
    user_id: int | None = None
    created: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)


class SessionStore:
    """Server-side sessions by token digest; thread-safe (handlers run database work in threads)."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()

    def get(self, token: str | None) -> WebSession | None:
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(self._key(token))
            if session is None:
                return None
            if now - session.touched > self.idle_seconds:
                del self._sessions[self._key(token)]
                return None
            session.touched = now
            return session

    def new(self, user_id: int | None = None) -> tuple[str, WebSession]:
        token = secrets.token_urlsafe(32)
        session = WebSession(csrf=secrets.token_urlsafe(32), user_id=user_id)
        with self._lock:
            self._expire()
            self._sessions[self._key(token)] = session
        return token, session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(self._key(token), None)

    def drop_user(self, user_id: int) -> int:
        with self._lock:
            doomed = [k for k, s in self._sessions.items() if s.user_id == user_id]
            for key in doomed:
                del self._sessions[key]
        return len(doomed)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.touched > self.idle_seconds]:
            del self._sessions[key]


def csrf_ok(session: WebSession | None, submitted: object) -> bool:
    return (session is not None and isinstance(submitted, str) and bool(submitted)
            and hmac.compare_digest(session.csrf.encode(), submitted.encode("utf-8", "replace")))


class SignInLimiter:
    """At most ``attempts`` failures per key (account name, client address) in ``window`` seconds."""

    def __init__(self, attempts: int, window: float, clock: object = time.monotonic) -> None:
        self.attempts, self.window = attempts, window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    def blocked(self, *keys: str) -> bool:
        now = self._now()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = self._now()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # bound memory against a flood of names
                self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)
