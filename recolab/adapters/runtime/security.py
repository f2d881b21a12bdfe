"""Security for the HTTP service: JWT bearer tokens (HS256) and per-client rate limiting.

Tokens carry `sub` (a user id, or a name for operators), `role` (`user` or `admin`), `iat`,
`exp` and `iss`; who may do what with them is `recolab.application.access`. Rate limiting
is a token bucket per client in one process, or a fixed window shared through Redis (one
Lua script: INCR + EXPIRE) when Redis is set.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jwt

from recolab.application.access import (
    ROLES,
    AuthError,
    Principal,
    RateDecision,
    RateLimited,
    RateLimiter,
    Role,
    enforce,
)
from recolab.config import DEFAULT_JWT_SECRET, ConfigError, Settings

__all__ = [
    "AuthError",
    "Principal",
    "RateDecision",
    "RateLimited",
    "RateLimiter",
    "RedisRateLimiter",
    "TokenBucketLimiter",
    "TokenVerifier",
    "enforce",
    "issue_token",
    "local_token",
    "rate_limiter",
    "serving_secret",
    "verify",
]

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "recolab"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
MAX_TTL_S = 366 * 24 * 3600
LEEWAY_S = 5.0  # clock skew allowed on a token's expiry and issue time
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: no later instant is a date
MAX_SUBJECT_CHARS = 256


def issue_token(
    sub: str | int, role: str, secret: str, ttl: float, *, now: float | None = None
) -> str:
    """A signed HS256 token for `sub` with `role`, valid for `ttl` seconds."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"ttl must be in (0, {MAX_TTL_S}] seconds, got {ttl!r}")
    subject = str(sub).strip()
    if not subject:
        raise ValueError("sub cannot be empty")
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "role": role, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode({**claims, "iss": ISSUER}, secret, algorithm=ALGORITHM)


def verify(token: str, secret: str, *, leeway_s: float = LEEWAY_S) -> Principal:
    """Check the signature, expiry, issuer and claims of `token`; raise `AuthError` if bad."""
    return _decode(token, secret, leeway_s)[0]


def _decode(token: str, secret: str, leeway_s: float) -> tuple[Principal, float]:
    """`verify`, also returning the token's expiry (Unix seconds)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=leeway_s,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    # PyJWT reads exp, iat and nbf with int(): it lets "123", true and 10**400 through.
    issued = _timestamp(claims, "iat")
    expires = _timestamp(claims, "exp")
    if "nbf" in claims:
        _timestamp(claims, "nbf")
    if not 0 <= expires - issued <= MAX_TTL_S:
        raise AuthError(
            f"invalid token: exp must not be before iat nor more than {MAX_TTL_S} s after it "
            "(the longest lifetime this service issues)"
        )
    return Principal(subject=_subject(claims), role=_role(claims)), expires


def _timestamp(claims: dict[str, Any], name: str) -> float:
    """Claim `name` as Unix seconds: a finite JSON number in [0, MAX_TIMESTAMP]."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"invalid token: {name} must be a number (Unix seconds)")
    if not 0 <= value <= MAX_TIMESTAMP:  # NaN fails this too
        raise AuthError(f"invalid token: {name} must be in [0, {MAX_TIMESTAMP}] (Unix seconds)")
    return float(value)


def _subject(claims: dict[str, Any]) -> str:
    subject = claims["sub"]
    if not isinstance(subject, str):
        raise AuthError("invalid token: sub must be a string")
    if not subject.strip() or subject != subject.strip():
        raise AuthError("invalid token: sub must be a non-empty name without surrounding spaces")
    if len(subject) > MAX_SUBJECT_CHARS or not subject.isprintable():
        raise AuthError(
            f"invalid token: sub must be at most {MAX_SUBJECT_CHARS} printable characters"
        )
    return subject


def _role(claims: dict[str, Any]) -> Role:
    role = claims.get("role")
    for known in ROLES:
        if isinstance(role, str) and role == known:
            return known
    raise AuthError(f"invalid token: role must be one of {', '.join(ROLES)}")


class TokenVerifier:
    """`verify` that remembers the tokens it accepted (at most `size`) until they expire.

    A client sends the same token with every request, and checking its signature and claims
    again each time was about 6% of the server's CPU per rating. A remembered token is
    refused as soon as it is past its expiry (plus the leeway), as `verify` would.
    """

    def __init__(self, secret: str, *, leeway_s: float = LEEWAY_S, size: int = 4096) -> None:
        self._secret = secret
        self._leeway_s = leeway_s
        self._size = size
        self._accepted: dict[str, tuple[Principal, float]] = {}  # oldest first
        self._lock = threading.Lock()

    def __call__(self, token: str) -> Principal:
        known = self._accepted.get(token)
        if known is not None:
            if time.time() > known[1] + self._leeway_s:
                raise AuthError("token expired")
            return known[0]
        principal, expires = _decode(token, self._secret, self._leeway_s)
        with self._lock:
            while len(self._accepted) >= self._size:
                del self._accepted[next(iter(self._accepted))]
            self._accepted[token] = (principal, expires)
        return principal

    def __len__(self) -> int:
        return len(self._accepted)


def serving_secret(settings: Settings) -> str:
    """The JWT secret the service may use; refuse weak or default secrets outside dev."""
    secret = settings.jwt_secret.get_secret_value()
    if settings.env == "dev":
        if secret == DEFAULT_JWT_SECRET:
            log.warning("using the default JWT secret: acceptable in dev mode only")
        return secret
    if secret == DEFAULT_JWT_SECRET:
        raise ConfigError(
            f"RECOLAB_JWT_SECRET is the built-in default and RECOLAB_ENV={settings.env}: "
            "set a secret of your own (refusing to start)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"RECOLAB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes outside dev mode"
        )
    return secret


# ---- rate limiting


class TokenBucketLimiter:
    """`limit` requests per `window_s` per client, refilled continuously; one process only."""

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self._rate = limit / window_s  # tokens per second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients
        self._clock = clock
        self._lock = threading.Lock()

    def hit(self, client: str) -> RateDecision:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - last) * self._rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)  # forget the longest-idle client
        retry = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self._rate))
        return RateDecision(allowed, self.limit, int(tokens), retry)


# KEYS[1]: the client's window; ARGV[1]: window length in seconds.
_FIXED_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


class RedisRateLimiter:
    """A fixed window per client shared by every worker through Redis.

    When Redis fails, the in-process `fallback` limits instead (per worker) for
    `retry_after_s`, so an outage neither opens the gates nor turns requests into errors.
    """

    def __init__(
        self,
        client: Any,
        limit: int,
        window_s: int = 60,
        *,
        namespace: str = "recolab:",
        fallback: RateLimiter | None = None,
        retry_after_s: float = 5.0,
    ) -> None:
        self.limit = limit
        self._window = window_s
        self._ns = namespace
        self._script = client.register_script(_FIXED_WINDOW)
        self._fallback = fallback or TokenBucketLimiter(limit, window_s)
        self._retry_after = retry_after_s
        self._down_until = 0.0

    @classmethod
    def from_url(
        cls, url: str, limit: int, window_s: int = 60, namespace: str = "recolab:"
    ) -> RedisRateLimiter:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, limit, window_s, namespace=namespace)

    def hit(self, client: str) -> RateDecision:
        if time.monotonic() < self._down_until:
            return self._fallback.hit(client)
        try:
            count, ttl = self._script(keys=[f"{self._ns}ratelimit:{client}"], args=[self._window])
        except Exception as exc:  # any Redis failure: limit in-process for a while
            log.warning("rate limiter falls back to in-process buckets: %s", exc)
            self._down_until = time.monotonic() + self._retry_after
            return self._fallback.hit(client)
        count, ttl = int(count), max(1, int(ttl))
        allowed = count <= self.limit
        return RateDecision(allowed, self.limit, max(0, self.limit - count), 0 if allowed else ttl)


def rate_limiter(settings: Settings, per_minute: int) -> RateLimiter:
    """Redis-backed when `settings.redis_url` is set, in-process otherwise."""
    if settings.redis_url:
        return RedisRateLimiter.from_url(
            settings.redis_url, per_minute, namespace=settings.redis_namespace
        )
    return TokenBucketLimiter(per_minute)


def local_token(sub: str, role: str, ttl_s: float, settings: Settings) -> str:
    """A token for local use signed with the configured secret (`recolab token`)."""
    return issue_token(sub, role, serving_secret(settings), ttl_s)
