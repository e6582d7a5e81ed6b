"""Verifying a bearer token against the issuer it claims, and caching the answer.

A token is compact JWS. Before its signature is checked nothing in it is trusted: the
header and the claims read to pick the issuer and the key are ``unverified_`` values,
used only to choose which configured issuer and which of that issuer's keys to try.
The issuer is then held to exactly what was configured: its own keys, its allowed
algorithms (never ``none`` or HMAC), its audiences. Header fields that point at other
keys (``jku``, ``x5u``, an embedded ``jwk``) are ignored, and a ``crit`` header is
refused since kproxy implements no JWS extension.

Two outcomes are distinguished as the API server distinguishes them: a token that was
examined and is not acceptable is rejected (``AuthenticationError``, 401); a token
that could not be examined because its issuer's keys were never obtained is
``CouldNotCheckError`` (503), so that a client retries rather than concludes its
credentials are bad.

Lifetimes follow kube-apiserver: ``exp`` is required and a token is expired strictly
after it; ``nbf`` is honoured with five minutes of leeway; ``iat`` is not checked. The
clock is passed in, so tests move time rather than sleep.

Verified identities are cached by the SHA-256 of the token, never beyond the token's
``exp``. Neither a token nor its claims are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import aiohttp
import cachetools
import jwt
from jwt import PyJWK

from kproxy.auth.config import (
    AuthenticationSettings,
    JWTAuthenticator,
    resolve_authentication_settings,
)
from kproxy.auth.events import AuthenticationEvents, FailureReason, NoEvents
from kproxy.auth.identity import Identity
from kproxy.auth.keys import Clock, FetchLimits, IssuerKeys
from kproxy.auth.mapping import ClaimMapper, ClaimsRejectedError
from kproxy.errors import AuthenticationError, CouldNotCheckError

logger = logging.getLogger(__name__)

# go-oidc, which kube-apiserver uses, allows this much clock skew for "nbf" only.
NOT_BEFORE_LEEWAY_SECONDS: Final = 300.0

_JWS: Final = jwt.PyJWS(options={"enforce_minimum_key_length": True})


class _Issuer:
    """What verifying needs about one configured issuer."""

    __slots__ = ("authenticator", "keys", "mapper")

    def __init__(
        self, authenticator: JWTAuthenticator, keys: IssuerKeys, mapper: ClaimMapper
    ) -> None:
        self.authenticator = authenticator
        self.keys = keys
        self.mapper = mapper


class TokenAuthenticator:
    """Turns bearer tokens from the configured issuers into identities.

    ``start`` obtains every issuer's keys once and starts their refreshers; ``close``
    stops them. ``authenticate`` may be called before keys arrive and answers
    ``CouldNotCheckError`` for that issuer until they do.
    """

    def __init__(
        self,
        settings: AuthenticationSettings,
        *,
        base_dir: Path = Path(),
        clock: Clock = time.time,
        events: AuthenticationEvents | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        settings = resolve_authentication_settings(settings, base_dir=base_dir)
        self.settings = settings
        self._clock = clock
        self._events: AuthenticationEvents = events or NoEvents()
        self._session = session
        self._owns_session = session is None
        self._issuers = {
            a.issuer.url: self._issuer_for(a, settings) for a in settings.jwt
        }
        self._cache: cachetools.TLRUCache[bytes, Identity] | None = None
        if settings.token_cache_size > 0 and settings.token_cache_seconds > 0:
            self._cache = cachetools.TLRUCache(
                maxsize=settings.token_cache_size, ttu=self._cache_until, timer=clock
            )

    def _issuer_for(
        self, authenticator: JWTAuthenticator, settings: AuthenticationSettings
    ) -> _Issuer:
        limits = FetchLimits(
            timeout_seconds=settings.fetch_timeout_seconds,
            max_document_bytes=settings.max_document_bytes,
        )
        keys = IssuerKeys(
            authenticator,
            limits=limits,
            refresh_seconds=settings.key_refresh_seconds,
            retry_seconds=settings.key_retry_seconds,
            unknown_key_refresh_seconds=settings.unknown_key_refresh_seconds,
            clock=self._clock,
            events=self._events,
        )
        mapper = ClaimMapper(authenticator, settings.allow_system_names)
        return _Issuer(authenticator, keys, mapper)

    def _cache_until(self, _key: bytes, identity: Identity, now: float) -> float:
        return min(identity.expires_at, now + self.settings.token_cache_seconds)

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    async def start(self) -> None:
        """Obtain every issuer's keys once, then keep them fresh in the background.

        An unreachable issuer does not stop the start: its tokens get 503 until its
        refresher succeeds, as kube-apiserver's authenticator behaves.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        for issuer in self._issuers.values():
            await issuer.keys.start(self._session)

    async def close(self) -> None:
        for issuer in self._issuers.values():
            await issuer.keys.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def ready(self) -> bool:
        """Tell whether every issuer has keys, for a readiness probe."""
        return all(issuer.keys.current is not None for issuer in self._issuers.values())

    def key_ages(self) -> dict[str, float | None]:
        """Seconds since each issuer's keys were obtained (``None``: never)."""
        return {url: issuer.keys.age() for url, issuer in self._issuers.items()}

    async def authenticate(self, token: str) -> Identity:
        """Verify ``token`` and return the identity its issuer's mappings give.

        Raises ``AuthenticationError`` when the token is rejected and
        ``CouldNotCheckError`` when its issuer's keys were never obtained.
        """
        if len(token) > self.settings.max_token_bytes:
            raise self._rejected("too_large", "token is larger than allowed")
        cache_key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cached(cache_key)
        if cached is not None:
            return cached
        identity = await self._verify(token)
        if self._cache is not None:
            self._cache[cache_key] = identity
        return identity

    def _cached(self, cache_key: bytes) -> Identity | None:
        if self._cache is None:
            return None
        identity = self._cache.get(cache_key)
        self._events.token_cache(hit=identity is not None)
        return identity

    async def _verify(self, token: str) -> Identity:
        unverified_header, unverified_claims = _parse_unverified(token)
        if unverified_header is None or unverified_claims is None:
            raise self._rejected("malformed", "token is not a well-formed JWT")
        unverified_issuer = unverified_claims.get("iss")
        issuer = None
        if isinstance(unverified_issuer, str):
            issuer = self._issuers.get(unverified_issuer)
        if issuer is None:
            raise self._rejected("untrusted_issuer", "token issuer is not trusted")
        algorithm = self._check_header(issuer, unverified_header)
        candidates = await self._candidate_keys(issuer, unverified_header, algorithm)
        claims = self._verify_signature(token, candidates, algorithm)
        return self._identity(issuer, claims)

    def _check_header(
        self, issuer: _Issuer, unverified_header: Mapping[str, Any]
    ) -> str:
        # kproxy implements no JWS extension, so any critical one must be refused
        # (RFC 7515, section 4.1.11); "b64": false would also change what is signed.
        if "crit" in unverified_header or "b64" in unverified_header:
            raise self._rejected("malformed", "token uses an unsupported JWS extension")
        algorithm = unverified_header.get("alg")
        if algorithm not in issuer.authenticator.allowed_algorithms:
            raise self._rejected("algorithm", "token signing algorithm is not allowed")
        kid = unverified_header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._rejected("malformed", "token key id is not a string")
        return str(algorithm)

    async def _candidate_keys(
        self, issuer: _Issuer, unverified_header: Mapping[str, Any], algorithm: str
    ) -> list[PyJWK]:
        unverified_kid: str | None = unverified_header.get("kid")
        key_set = issuer.keys.current
        if key_set is not None:
            candidates = key_set.candidates(kid=unverified_kid, algorithm=algorithm)
            if candidates or key_set.knows(unverified_kid):
                return self._some(candidates)
        # A rotated issuer publishes a new key before signing with it: look again,
        # within the per-issuer limit on such refreshes.
        await issuer.keys.refresh_for_unknown_key(unverified_kid)
        key_set = issuer.keys.current
        if key_set is None:
            self._events.authentication_failed("no_keys")
            raise CouldNotCheckError(
                f"keys of issuer {issuer.authenticator.issuer.url!r} are not available yet",
                retry_after=int(self.settings.key_retry_seconds),
                cause="no_keys",
            )
        candidates = key_set.candidates(kid=unverified_kid, algorithm=algorithm)
        if not key_set.knows(unverified_kid):
            raise self._rejected("unknown_key", "token signing key is not known")
        return self._some(candidates)

    def _some(self, candidates: list[PyJWK]) -> list[PyJWK]:
        if not candidates:
            # The key exists but not for this algorithm: a key-type mismatch.
            raise self._rejected("algorithm", "token algorithm does not match its key")
        return candidates

    def _verify_signature(
        self, token: str, candidates: list[PyJWK], algorithm: str
    ) -> dict[str, Any]:
        for key in candidates:
            try:
                verified = _JWS.decode_complete(token, key=key, algorithms=[algorithm])
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise self._rejected("malformed", "token cannot be verified") from exc
            return self._claims_from(verified["payload"])
        raise self._rejected("bad_signature", "token signature is not valid")

    def _claims_from(self, payload: bytes) -> dict[str, Any]:
        try:
            claims = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            claims = None
        if not isinstance(claims, dict):
            raise self._rejected("malformed", "token claims are not a JSON object")
        return claims

    def _identity(self, issuer: _Issuer, claims: dict[str, Any]) -> Identity:
        configured = issuer.authenticator.issuer
        self._validate_issuer(claims, configured.url)
        expires_at = self._validate_exp(claims)
        self._validate_nbf(claims)
        self._validate_aud(claims, configured.audiences)
        subject = self._validate_sub(claims)
        try:
            user = issuer.mapper.user_for(claims)
        except ClaimsRejectedError as rejected_claims:
            raise self._rejected(
                rejected_claims.reason, rejected_claims.message
            ) from None
        return Identity(
            user=user,
            issuer=configured.url,
            subject=subject,
            claims=_frozen(claims),
            expires_at=expires_at,
        )

    def _validate_issuer(self, claims: Mapping[str, Any], url: str) -> None:
        if claims.get("iss") != url:
            raise self._rejected("untrusted_issuer", "token issuer is not trusted")

    def _validate_exp(self, claims: Mapping[str, Any]) -> float:
        exp: Any = claims.get("exp")
        if not _is_number(exp):
            raise self._rejected("expired", "token has no valid expiry")
        if self._clock() > exp:
            raise self._rejected("expired", "token has expired")
        return float(exp)

    def _validate_nbf(self, claims: Mapping[str, Any]) -> None:
        if "nbf" not in claims:
            return
        nbf = claims["nbf"]
        if not _is_number(nbf):
            raise self._rejected("malformed", "token 'nbf' is not a number")
        if self._clock() + NOT_BEFORE_LEEWAY_SECONDS < nbf:
            raise self._rejected("not_yet_valid", "token is not valid yet")

    def _validate_aud(
        self, claims: Mapping[str, Any], audiences: tuple[str, ...]
    ) -> None:
        aud = claims.get("aud")
        token_audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(token_audiences, list):
            raise self._rejected("audience", "token has no audience")
        # MatchAny, the only policy the API server has: one shared audience is enough.
        if not any(a in audiences for a in token_audiences if isinstance(a, str)):
            raise self._rejected("audience", "token is not meant for this audience")

    def _validate_sub(self, claims: Mapping[str, Any]) -> str:
        sub = claims.get("sub", "")
        if not isinstance(sub, str):
            raise self._rejected("malformed", "token 'sub' is not a string")
        return sub

    def _rejected(self, reason: FailureReason, message: str) -> AuthenticationError:
        self._events.authentication_failed(reason)
        logger.debug("token rejected: %s", reason)
        return AuthenticationError(message, cause=reason)


def _parse_unverified(
    token: str,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    return _decode_segment(parts[0]), _decode_segment(parts[1])


def _decode_segment(segment: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_number(value: Any) -> bool:
    # NaN, infinities and integers no float holds are not times (nor JSON, to Go).
    return type(value) in (int, float) and -(2**63) < value < 2**63


def _frozen(value: Any) -> Any:
    """A read-only deep copy, so no consumer can alter what was verified."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value
