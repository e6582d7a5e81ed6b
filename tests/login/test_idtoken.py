"""ID token checks, one reason per case, with keys made by the test."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from kproxy.login.discovery import ProviderMetadata
from kproxy.login.errors import TokenVerificationError
from kproxy.login.idtoken import verify_id_token
from tests.oidc.harness import public_key_set, signing_key

ISSUER = "https://idp.example"
CLIENT = "kubectl"
NOW = 1_800_000_000
METADATA = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/auth",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
)
KEY = signing_key("current")
OTHER_KEY = signing_key("other")
KEYS = jwt.PyJWKSet.from_dict(public_key_set([KEY]))


def _sign(claims: dict[str, Any], *, key: dict[str, Any] = KEY, **header: Any) -> str:
    base = {"iss": ISSUER, "sub": "alice", "aud": CLIENT, "iat": NOW, "exp": NOW + 600}
    private = jwt.PyJWK.from_dict(key)
    return jwt.encode(
        {**base, **claims},
        private.key,
        algorithm="RS256",
        headers={"kid": key["kid"], **header},
    )


def _verify(token: str, *, nonce: str | None = None, now: float = NOW) -> Any:
    return verify_id_token(
        token, keys=KEYS, metadata=METADATA, client_id=CLIENT, nonce=nonce, now=now
    )


def test_a_good_token_is_returned_with_its_subject_and_expiry() -> None:
    verified = _verify(_sign({"nonce": "n-1"}), nonce="n-1")

    assert verified.subject == "alice"
    assert verified.expires_at == NOW + 600


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(
            _sign({"iss": "https://evil.example"}), "Invalid issuer", id="issuer"
        ),
        pytest.param(
            _sign({"aud": "someone-else"}), "Audience doesn't match", id="audience"
        ),
        pytest.param(
            _sign({"aud": [CLIENT, "other"]}),
            "azp None is not",
            id="several-audiences-no-azp",
        ),
        pytest.param(_sign({"azp": "other"}), "azp 'other'", id="wrong-azp"),
        pytest.param(_sign({"exp": NOW - 3600}), "has expired", id="expired"),
        pytest.param(_sign({}, key=OTHER_KEY), "'other' is not in", id="unknown-key"),
        pytest.param(
            _sign({}, key={**OTHER_KEY, "kid": "current"}),
            "Signature verification failed",
            id="forged-with-known-kid",
        ),
        pytest.param(
            jwt.encode(
                {"iss": ISSUER, "sub": "a", "aud": CLIENT},
                "a-shared-secret-long-enough-for-hmac-sha256",
                algorithm="HS256",
            ),
            "'HS256', not one of",
            id="symmetric",
        ),
        pytest.param(
            jwt.encode(
                {"iss": ISSUER, "sub": "a", "aud": CLIENT}, None, algorithm="none"
            ),
            "'none', not one of",
            id="unsigned",
        ),
        pytest.param("not.a.jwt", "malformed", id="garbage"),
    ],
)
def test_a_bad_token_is_rejected_with_the_reason(token: str, reason: str) -> None:
    with pytest.raises(TokenVerificationError, match=reason):
        _verify(token)


def test_a_token_for_another_request_is_rejected_by_its_nonce() -> None:
    with pytest.raises(TokenVerificationError, match="nonce"):
        _verify(_sign({"nonce": "someone-elses"}), nonce="mine")


def test_a_token_without_the_nonce_sent_is_rejected() -> None:
    with pytest.raises(TokenVerificationError, match="nonce"):
        _verify(_sign({}), nonce="mine")


def test_expiry_follows_the_clock_passed_in() -> None:
    token = _sign({})

    assert _verify(token, now=NOW + 590).subject == "alice"
    with pytest.raises(TokenVerificationError, match="expired"):
        _verify(token, now=NOW + 600 + 61)
