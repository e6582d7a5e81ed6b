"""Checking an ID token before it is cached or handed to kubectl.

kproxy verifies every token it is shown, so the client could pass tokens through
unchecked. It does not: a token that would be refused later should fail here, where
the person can still act, and a cache must never keep a token that a tampered
response put there. The checks follow OpenID Connect Core 1.0, section 3.1.3.7:

1. the signature, with a key from the provider's current JWKS chosen by ``kid``, and an
   algorithm the discovery document offers (never ``none``, never a symmetric one);
2. ``iss`` equal to the issuer;
3. ``aud`` containing the client id, and ``azp`` equal to it when present or when there
   are several audiences;
4. ``exp`` still ahead of the clock passed in;
5. ``nonce`` equal to the one sent, when one was sent.

Everything read before step 1 succeeds is named ``unverified``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from kproxy.login.discovery import ProviderMetadata
from kproxy.login.errors import LoginError, TokenVerificationError
from kproxy.login.transport import ProviderSession

CLOCK_SKEW: Final = 60.0
REQUIRED_CLAIMS: Final = ["iss", "sub", "aud", "exp", "iat"]


@dataclass(frozen=True, slots=True)
class VerifiedIdToken:
    """An ID token whose signature and claims were checked."""

    token: str
    subject: str
    expires_at: float
    claims: Mapping[str, Any]


def fetch_keys(session: ProviderSession, metadata: ProviderMetadata) -> jwt.PyJWKSet:
    """Fetch the provider's current JWKS; raises ``LoginError`` if none is usable."""
    document = session.get_json(metadata.jwks_uri)
    try:
        return jwt.PyJWKSet.from_dict(document)
    except jwt.PyJWTError as exc:
        raise LoginError(f"{metadata.jwks_uri} holds no usable key: {exc}") from exc


def verify_id_token(
    unverified_token: str,
    *,
    keys: jwt.PyJWKSet,
    metadata: ProviderMetadata,
    client_id: str,
    nonce: str | None,
    now: float,
) -> VerifiedIdToken:
    """Check ``unverified_token`` as described above.

    Raises ``TokenVerificationError`` with the reason when any check fails.
    """
    key, algorithm = _signing_key(unverified_token, keys, metadata)
    try:
        claims = jwt.decode(
            unverified_token,
            key.key,
            algorithms=[algorithm],
            audience=client_id,
            issuer=metadata.issuer,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": REQUIRED_CLAIMS,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenVerificationError(f"the ID token was rejected: {exc}") from exc

    _validate_exp(claims, now)
    _validate_azp(claims, client_id)
    _validate_nonce(claims, nonce)
    return VerifiedIdToken(
        token=unverified_token,
        subject=str(claims["sub"]),
        expires_at=float(claims["exp"]),
        claims=claims,
    )


def _signing_key(
    unverified_token: str, keys: jwt.PyJWKSet, metadata: ProviderMetadata
) -> tuple[jwt.PyJWK, str]:
    try:
        unverified_header = jwt.get_unverified_header(unverified_token)
    except jwt.PyJWTError as exc:
        raise TokenVerificationError(f"the ID token is malformed: {exc}") from exc
    algorithm = unverified_header.get("alg")
    if algorithm not in metadata.id_token_signing_algorithms:
        raise TokenVerificationError(
            f"the ID token is signed with {algorithm!r}, not one of "
            f"{list(metadata.id_token_signing_algorithms)!r}"
        )
    unverified_kid = unverified_header.get("kid")
    candidates = [key for key in keys.keys if unverified_kid in (None, key.key_id)]
    if len(candidates) != 1:
        raise TokenVerificationError(
            f"the ID token's key {unverified_kid!r} is not in the provider's key set"
        )
    return candidates[0], str(algorithm)


def _validate_exp(claims: Mapping[str, Any], now: float) -> None:
    if not isinstance(claims["exp"], int | float) or claims["exp"] <= now - CLOCK_SKEW:
        raise TokenVerificationError("the ID token has expired")


def _validate_azp(claims: Mapping[str, Any], client_id: str) -> None:
    audiences = claims["aud"]
    several = isinstance(audiences, list) and len(audiences) > 1
    if ("azp" in claims or several) and claims.get("azp") != client_id:
        raise TokenVerificationError(
            f"the ID token's azp {claims.get('azp')!r} is not {client_id!r}"
        )


def _validate_nonce(claims: Mapping[str, Any], nonce: str | None) -> None:
    if nonce is not None and claims.get("nonce") != nonce:
        raise TokenVerificationError("the ID token's nonce is not the one sent")
