"""Who may do what: the caller of a request, the access rules and the rate limit.

Tokens carry `sub` (a user id, or a name for operators) and `role` (`user` or `admin`).
A `user` may read and write only the data of the user named by `sub`; an `admin` may act
on anyone's. How tokens are signed and how requests are counted is the adapters' business
(`recolab.adapters.runtime.security`); the rules and the errors they raise live here.
"""

from __future__ import annotations

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

    def __init__(self, retry_after_s: int, limit: int) -> None:
        super().__init__(f"rate limit of {limit} requests per minute exceeded")
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


def authenticate(token: str | None, verify: TokenVerifier, limiter: RateLimiter) -> Principal:
    """The caller of a request from its bearer token; one request counted against its limit."""
    if token is None:
        raise AuthError("missing bearer token: send Authorization: Bearer <token>")
    principal = verify(token)
    enforce(limiter, f"sub:{principal.subject}")
    return principal
