"""Every claim of a validly signed token that is not what RecoLab issues is an `AuthError`
(HTTP 401) with a message naming the claim; never another exception (a 500).

A token signed with the right secret and `"exp": 10**400` used to overflow `float()`."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recolab.adapters.runtime.security import (
    ISSUER,
    MAX_TIMESTAMP,
    MAX_TTL_S,
    AuthError,
    TokenVerifier,
    verify,
)
from recolab.application.access import ROLES

SECRET = "unit-secret-0123456789-abcdefghijklmnop"
NOW = int(time.time())
# Claims are built when the module is collected; a whole suite can run for many minutes after
# that, so the good token lives for a day (well inside MAX_TTL_S), not for minutes.
LIFE_S = 24 * 3600
GOOD: dict[str, Any] = {"sub": "7", "role": "user", "iat": NOW, "exp": NOW + LIFE_S, "iss": ISSUER}
MISSING = object()


def signed(**claims: Any) -> str:
    """A token signed with SECRET: GOOD's claims with `claims` replaced (MISSING drops one)."""
    payload = {k: v for k, v in {**GOOD, **claims}.items() if v is not MISSING}
    # signed as JWS: jwt.encode refuses some claims a hostile client can still send
    return jwt.PyJWS().encode(json.dumps(payload).encode(), SECRET, algorithm="HS256")


def test_the_good_token_is_accepted() -> None:
    principal = verify(signed(), SECRET)
    assert (principal.subject, principal.role) == ("7", "user")
    assert verify(signed(sub="ops", role="admin", nbf=NOW), SECRET).is_admin


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        # exp, iat, nbf: finite JSON numbers of Unix seconds, in range
        ({"exp": 10**400}, "exp must be in [0, 253402300799]"),
        ({"exp": 1e300}, "exp must be in [0, 253402300799]"),
        ({"exp": MAX_TIMESTAMP + 1}, "exp must be in"),
        ({"exp": str(NOW + LIFE_S)}, "exp must be a number"),
        ({"exp": float("nan")}, "invalid token"),
        ({"exp": float("inf")}, "invalid token"),
        ({"exp": [NOW + LIFE_S]}, "invalid token"),
        ({"exp": {"at": NOW}}, "invalid token"),
        ({"exp": None}, "invalid token"),
        ({"exp": MISSING}, 'missing the "exp" claim'),
        ({"exp": True}, "token expired"),
        ({"exp": -(10**400)}, "token expired"),
        ({"iat": str(NOW)}, "iat must be a number"),
        ({"iat": -1, "exp": 600}, "token expired"),
        ({"iat": -1}, "iat must be in"),
        ({"iat": False}, "iat must be a number"),
        ({"iat": 10**400}, "not yet valid"),
        ({"iat": float("nan")}, "invalid token"),
        ({"iat": MISSING}, 'missing the "iat" claim'),
        ({"nbf": str(NOW)}, "nbf must be a number"),
        ({"nbf": -(10**400)}, "nbf must be in"),
        ({"nbf": 10**400}, "not yet valid"),
        ({"nbf": [0]}, "invalid token"),
        ({"exp": NOW + MAX_TTL_S + 60}, f"more than {MAX_TTL_S} s after"),
        # sub: a non-empty printable string
        ({"sub": 7}, "Subject must be a string"),
        ({"sub": ["7"]}, "Subject must be a string"),
        ({"sub": ""}, "sub must be a non-empty"),
        ({"sub": "   "}, "sub must be a non-empty"),
        ({"sub": " 7"}, "without surrounding spaces"),
        ({"sub": "7\x00"}, "printable"),
        ({"sub": "ops\nadmin"}, "printable"),
        ({"sub": "x" * 257}, "at most 256"),
        ({"sub": None}, 'missing the "sub" claim'),
        # role: one of ours, spelt as we spell it
        ({"role": "root"}, "role must be one of user, admin"),
        ({"role": "ADMIN"}, "role must be one of"),
        ({"role": ["admin"]}, "role must be one of"),
        ({"role": 1}, "role must be one of"),
        ({"role": MISSING}, "role must be one of"),
        # iss: ours
        ({"iss": "someone-else"}, "Invalid issuer"),
        ({"iss": 1}, "Issuer (iss) must be a string"),
        ({"iss": MISSING}, 'missing the "iss" claim'),
    ],
    ids=repr,
)
def test_unexpected_claims_are_auth_errors(claims: dict[str, Any], message: str | None) -> None:
    token = signed(**claims)
    if message is None:
        assert verify(token, SECRET).subject == "7"
        return
    with pytest.raises(AuthError, match=_literal(message)):
        verify(token, SECRET)
    with pytest.raises(AuthError, match=_literal(message)):
        TokenVerifier(SECRET)(token)  # the caching verifier the service uses


def test_lifetimes_run_from_iat_to_exp() -> None:
    now = int(time.time())
    assert verify(signed(iat=now, exp=now, nbf=now), SECRET).subject == "7"  # within leeway
    with pytest.raises(AuthError, match="exp must not be before iat"):
        verify(signed(iat=now + 2, exp=now + 1), SECRET)
    with pytest.raises(AuthError, match=f"nor more than {MAX_TTL_S} s after it"):
        verify(signed(iat=now, exp=now + MAX_TTL_S + 1), SECRET)
    assert verify(signed(iat=now, exp=now + MAX_TTL_S), SECRET).subject == "7"


def _literal(text: str) -> str:
    return re.escape(text)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
NUMBERS = st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
ANY = st.one_of(
    st.just(MISSING), NUMBERS, JSON, st.sampled_from([*ROLES, ISSUER, NOW, NOW + LIFE_S])
)
NAMES = [*GOOD, "nbf"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), ANY), min_size=1, max_size=3).map(dict))
def test_any_claims_give_a_principal_or_an_auth_error(claims: dict[str, Any]) -> None:
    token = signed(**claims)
    try:
        principal = verify(token, SECRET)
    except AuthError as exc:
        assert str(exc)
        return
    # accepted: then every claim is one RecoLab could have issued
    payload = json.loads(jwt.PyJWS().decode(token, SECRET, algorithms=["HS256"]))
    assert principal.role in ROLES and principal.subject == payload["sub"]
    assert principal.subject.strip() and principal.subject.isprintable()
    for name in ("iat", "exp"):
        value = payload[name]
        assert not isinstance(value, bool) and isinstance(value, int | float)
        assert math.isfinite(value) and 0 <= value <= MAX_TIMESTAMP
    assert 0 <= payload["exp"] - payload["iat"] <= MAX_TTL_S
