"""Passwords, sessions, CSRF tokens, API tokens and the login rate limit of the feedback app.

- Passwords are hashed with argon2id (``argon2-cffi``'s defaults); a login for an unknown name
  still runs one verification, so the time taken does not tell which names exist.
- A session is a random token in an HttpOnly, SameSite=Lax cookie; the database keeps only its
  SHA-256, so a leaked database holds no usable session. Each session has its own CSRF token,
  which every form carries and every POST must echo (the login form, before any session exists,
  uses a double-submit cookie instead).
- API tokens (for the export endpoint) are random 32-byte strings, stored as SHA-256 as well: they
  carry enough entropy that a slow hash adds nothing.
- ``LoginLimiter``: at most ``per_name`` failed logins for one name from one address, and
  ``per_address`` from one address, in a sliding window; past that the login answers 429 with the
  seconds to wait. A try is counted as it starts (and taken back if it succeeds), so tries sent
  at once cannot all pass the check before the first has failed. It lives in the server's memory
  (one process serves the app), and forgets, once a window, every key whose failures have all left
  it: it holds the addresses and names of the last two windows at most, not every one ever tried.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("redline: no such user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; a user without a hash never matches (and costs the same time)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; a missing one never matches.

    Compared as UTF-8 bytes: ``compare_digest`` raises on a str with non-ASCII characters, and a forged
    token is whatever a client sends.
    """
    if not a or not b:
        return False
    return hmac.compare_digest(str(a).encode("utf-8", "surrogatepass"), str(b).encode("utf-8", "surrogatepass"))


def generate_password() -> str:
    return secrets.token_urlsafe(12)


class LoginLimiter:
    def __init__(self, per_name: int = 5, per_address: int = 20, window_s: float = 300.0):
        self.per_name, self.per_address, self.window_s = per_name, per_address, window_s
        self._failures: dict[tuple, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def keys_held(self) -> int:
        """How many keys it holds: (address, name) and (address,)."""
        return len(self._failures)

    def _recent(self, key: tuple, at: float) -> deque:
        q = self._failures.get(key, deque())  # a check stores no key
        while q and q[0] <= at - self.window_s:
            q.popleft()
        return q

    def _sweep(self, at: float) -> None:
        """Forget every key whose failures have all left the window; once a window, so a try costs O(1) on average."""
        if at < self._next_sweep:
            return
        self._next_sweep = at + self.window_s
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= at - self.window_s]:
            del self._failures[key]

    def _wait(self, address: str, name: str, at: float) -> float:
        waits = []
        for key, limit in (((address, name.lower()), self.per_name), ((address,), self.per_address)):
            q = self._recent(key, at)
            if len(q) >= limit:
                waits.append(q[0] + self.window_s - at)
        return max(waits, default=0.0)

    def wait_s(self, address: str, name: str) -> float:
        """0 if a login may be tried now, else the seconds until one may."""
        with self._lock:
            return self._wait(address, name, time.monotonic())

    def attempt(self, address: str, name: str) -> float:
        """Check and count a login try in one step: 0 and the try counts as a failure (until ``succeeded``),
        else the seconds until one may be tried (and nothing is counted)."""
        at = time.monotonic()
        with self._lock:
            self._sweep(at)
            wait = self._wait(address, name, at)
            if wait <= 0:
                self._failures[(address, name.lower())].append(at)
                self._failures[(address,)].append(at)
            return wait

    def failed(self, address: str, name: str) -> None:
        at = time.monotonic()
        with self._lock:
            self._sweep(at)
            self._failures[(address, name.lower())].append(at)
            self._failures[(address,)].append(at)

    def succeeded(self, address: str, name: str) -> None:
        """The name's failures are forgiven, and the ``attempt`` that succeeded no longer counts against the address."""
        with self._lock:
            self._failures.pop((address, name.lower()), None)
            q = self._failures.get((address,))
            if q:
                q.pop()
            if not q:
                self._failures.pop((address,), None)
