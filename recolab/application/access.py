"""Who may do what: the caller of a request, the access rules and the rate limits.

Tokens carry `sub` (a user id, or a name for operators) and `role` (`user` or `admin`).
A `user` may read and write only the data of the user named by `sub`; an `admin` may act
on anyone's. Requests are counted per subject; failed authentications per client address,
which is refused outright for a while once past its limit. How tokens are signed and how
requests are counted is the adapters' business (`recolab.adapters.runtime.security`); the
rules and the errors they raise live here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")


class AuthError(Exception):
    """The request carries no valid credentials (HTTP 401)."""


class Forbidden(Exception):
    """Valid credentials, but not for this resource (HTTP 403)."""


class RateLimited(Exception):
    """Too many requests from one client (HTTP 429); retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int, limit: int, message: str | None = None) -> None:
        super().__init__(message or f"rate limit of {limit} requests per minute exceeded")
        self.retry_after_s = retry_after_s
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, from a verified token."""

    subject: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_access(self, user_id: int) -> bool:
        return self.is_admin or self.subject == str(user_id)

    def require_access(self, user_id: int) -> None:
        """Raise `Forbidden` unless this principal may read and write `user_id`'s data."""
        if not self.may_access(user_id):
            raise Forbidden(f"token for {self.subject!r} may not access user {user_id}")

    def require_admin(self) -> None:
        """Raise `Forbidden` unless this principal is an operator."""
        if not self.is_admin:
            raise Forbidden("this operation needs a token with the admin role")


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # 0 when allowed


class RateLimiter(Protocol):
    def hit(self, client: str) -> RateDecision:
        """Count one request from `client` and say whether it may proceed."""
        ...


TokenVerifier = Callable[[str], Principal]  # raises AuthError for a bad token


def enforce(limiter: RateLimiter, client: str) -> RateDecision:
    """Count a request from `client`; raise `RateLimited` when over the limit."""
    decision = limiter.hit(client)
    if not decision.allowed:
        raise RateLimited(decision.retry_after_s, decision.limit)
    return decision


class FailedAuthentications:
    """Failed authentications counted per client address on `limiter` (its own bucket).

    Past the limit the address is refused (`RateLimited`) until the limiter's retry time,
    valid token or not, and without checking the token: otherwise a guesser would still
    learn which guess was right, from the one answer that is not a 429. Each worker
    remembers the addresses it refused (at most `max_clients`); with a shared limiter
    (Redis) the others learn at the address's next failure.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._max = max_clients
        self._clock = clock
        self._refused: OrderedDict[str, tuple[float, int]] = OrderedDict()  # until, limit
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise `RateLimited` while `client` is refused for failing too often."""
        refused = self._refused.get(client)
        if refused is None:
            return
        until, limit = refused
        left = until - self._clock()
        if left > 0:
            raise _too_many_failures(math.ceil(left), limit)
        with self._lock:
            self._refused.pop(client, None)

    def failed(self, client: str) -> None:
        """Count one failed authentication; raise `RateLimited` past the limit."""
        decision = self._limiter.hit(f"authfail:{client}")
        if decision.allowed:
            return
        retry = max(1, decision.retry_after_s)
        with self._lock:
            self._refused.pop(client, None)
            self._refused[client] = (self._clock() + retry, decision.limit)
            while len(self._refused) > self._max:
                self._refused.popitem(last=False)  # the oldest refusal
        raise _too_many_failures(retry, decision.limit)


def _too_many_failures(retry_after_s: int, limit: int) -> RateLimited:
    return RateLimited(
        retry_after_s,
        limit,
        f"too many failed authentications from this address (limit {limit} per minute): "
        f"retry after {retry_after_s} s",
    )


def authenticate(
    token: str | None,
    verify: TokenVerifier,
    limiter: RateLimiter,
    *,
    client: str | None = None,
    failures: FailedAuthentications | None = None,
) -> Principal:
    """The caller of a request from its bearer token; one request counted against its limit.

    With `failures` and the request's `client` address, a token that fails verification
    counts against that address, and an address past its limit gets `RateLimited`. A
    request without a token is not an attempt at anything and is not counted."""
    if token is None:
        raise AuthError("missing bearer token: send Authorization: Bearer <token>")
    if failures is None or client is None:
        principal = verify(token)
    else:
        failures.check(client)
        try:
            principal = verify(token)
        except AuthError:
            failures.failed(client)
            raise
    enforce(limiter, f"sub:{principal.subject}")
    return principal
