"""Failed authentications are limited per client address (issue 14, defect 5).

700 forged-token requests in 1.7 s all got 401: nothing counted them. Past the limit an
address now gets `RateLimited` (429 with Retry-After), whatever token it sends, and its
tokens are not even checked; other addresses and requests without a token are unaffected.
The limiter is the in-process token bucket (our adapter) on a clock the test moves.
"""

from __future__ import annotations

import pytest

from recolab.adapters.runtime.security import TokenBucketLimiter
from recolab.application.access import (
    AuthError,
    FailedAuthentications,
    Principal,
    RateLimited,
    authenticate,
)

LIMIT = 5  # failures per minute per address


class Verifier:
    """Our TokenVerifier port: "good-<sub>" is valid, anything else is not; counts calls."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def __call__(self, token: str) -> Principal:
        self.checked.append(token)
        if not token.startswith("good-"):
            raise AuthError("invalid token: Signature verification failed")
        return Principal(token.removeprefix("good-"), "user")


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def failures(clock: list[float]) -> FailedAuthentications:
    limiter = TokenBucketLimiter(LIMIT, 60, clock=lambda: clock[0])
    return FailedAuthentications(limiter, clock=lambda: clock[0])


def _auth(
    token: str | None, verify: Verifier, failures: FailedAuthentications, client: str
) -> Principal:
    requests = TokenBucketLimiter(1000)  # the per-subject limit, out of the way here
    return authenticate(token, verify, requests, client=client, failures=failures)


def test_an_address_past_its_failures_is_refused_with_a_retry_time(
    failures: FailedAuthentications, clock: list[float]
) -> None:
    verify = Verifier()
    for _ in range(LIMIT):
        with pytest.raises(AuthError, match="invalid token"):
            _auth("forged", verify, failures, "203.0.113.1")
    with pytest.raises(RateLimited) as refused:
        _auth("forged", verify, failures, "203.0.113.1")
    assert refused.value.retry_after_s == 12  # one more failure allowed every 60/5 s
    assert "too many failed authentications from this address" in str(refused.value)
    assert "retry after 12 s" in str(refused.value)
    checked = len(verify.checked)

    # refused, valid token or not, and the token is not even checked (no oracle)
    clock[0] += 5
    for token in ("forged", "good-7"):
        with pytest.raises(RateLimited) as again:
            _auth(token, verify, failures, "203.0.113.1")
        assert again.value.retry_after_s == 7
    assert len(verify.checked) == checked

    # others are not affected, and a request without a token is not an attempt
    assert _auth("good-8", verify, failures, "198.51.100.2").subject == "8"
    with pytest.raises(AuthError, match="invalid token"):
        _auth("forged", verify, failures, "198.51.100.2")
    with pytest.raises(AuthError, match="missing bearer token"):
        _auth(None, verify, failures, "203.0.113.1")

    # after the retry time: one more attempt, then refused again at the next failure
    clock[0] += 7
    assert _auth("good-7", verify, failures, "203.0.113.1").subject == "7"
    with pytest.raises(AuthError):
        _auth("forged", verify, failures, "203.0.113.1")
    with pytest.raises(RateLimited):
        _auth("forged", verify, failures, "203.0.113.1")


def test_missing_tokens_are_never_counted(failures: FailedAuthentications) -> None:
    verify = Verifier()
    for _ in range(10 * LIMIT):
        with pytest.raises(AuthError, match="missing bearer token"):
            _auth(None, verify, failures, "203.0.113.3")
    assert _auth("good-1", verify, failures, "203.0.113.3").subject == "1"


def test_valid_tokens_are_not_failures(failures: FailedAuthentications) -> None:
    verify = Verifier()
    for _ in range(10 * LIMIT):
        _auth("good-1", verify, failures, "203.0.113.4")
    for _ in range(LIMIT):
        with pytest.raises(AuthError):
            _auth("forged", verify, failures, "203.0.113.4")


def test_refusals_remembered_are_bounded(clock: list[float]) -> None:
    limiter = TokenBucketLimiter(1, 60, clock=lambda: clock[0])
    failures = FailedAuthentications(limiter, max_clients=3, clock=lambda: clock[0])
    verify = Verifier()
    for n in range(5):
        with pytest.raises(AuthError):
            _auth("forged", verify, failures, f"10.0.0.{n}")
        with pytest.raises(RateLimited):
            _auth("forged", verify, failures, f"10.0.0.{n}")
    # the two oldest refusals were forgotten: their tokens are checked again (a failure
    # would be refused again by the limiter, whose bucket is still empty)
    checked = len(verify.checked)
    assert _auth("good-1", verify, failures, "10.0.0.0").subject == "1"
    assert len(verify.checked) == checked + 1
    with pytest.raises(RateLimited):
        _auth("forged", verify, failures, "10.0.0.1")
    assert len(verify.checked) == checked + 2
    with pytest.raises(RateLimited):  # remembered: refused unchecked
        _auth("good-1", verify, failures, "10.0.0.4")
    assert len(verify.checked) == checked + 2


def test_without_an_address_nothing_is_counted() -> None:
    verify = Verifier()
    for _ in range(3 * LIMIT):
        with pytest.raises(AuthError):
            authenticate("forged", verify, TokenBucketLimiter(1000))
