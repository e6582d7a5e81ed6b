"""Each trusted issuer's signing keys: discovered, fetched, kept fresh.

A key set is an immutable snapshot. A refresher per issuer builds a new one (discovery
document, then its ``jwks_uri``) and swaps one reference; the request path only reads
the current snapshot, so verifying a token takes no lock and does no I/O unless the
token names a key the snapshot does not have.

What this module will not do, unlike a naive JWKS client:

- block the event loop: fetching uses aiohttp, bounded by a timeout and a size limit;
- drop the last good keys when the issuer is unreachable: a failed refresh only logs;
- refetch for every token with a made-up ``kid``: refreshes on an unknown key are
  limited per issuer (``unknownKeyRefreshSeconds``), and concurrent requests share one;
- trust anything the token says about keys (``jku``, ``x5u``, an embedded ``jwk``): keys
  come from the configured issuer only;
- accept a symmetric (``oct``) key or a key for encryption from a published set.

Keys are turned into pyjwt ``PyJWK`` objects once per refresh, one per algorithm the
key may verify, so a token costs a dictionary lookup rather than a key parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypedDict

import aiohttp
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from kproxy.auth.config import JWTAuthenticator, is_secure_url
from kproxy.auth.events import AuthenticationEvents, NoEvents
from kproxy.errors import ConfigError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_EC_CURVE_ALGORITHMS: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class DiscoveryDocument(TypedDict, total=False):
    """The part of an OpenID Provider's metadata kproxy reads."""

    issuer: str
    jwks_uri: str


class JWKSDocument(TypedDict):
    keys: list[dict[str, Any]]


class KeyFetchError(Exception):
    """The issuer's discovery document or key set could not be obtained."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One published key, bound to one algorithm it may verify."""

    kid: str | None
    algorithm: str
    jwk: PyJWK


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's usable keys at one moment."""

    keys: tuple[VerificationKey, ...]
    obtained_at: float

    def candidates(self, *, kid: str | None, algorithm: str) -> list[PyJWK]:
        """Keys that may have signed a token with this header.

        A token with a ``kid`` is checked only against that key; one without is tried
        against every key of its algorithm, as OIDC clients do.
        """
        return [
            key.jwk
            for key in self.keys
            if key.algorithm == algorithm and (kid is None or key.kid == kid)
        ]

    def knows(self, kid: str | None) -> bool:
        return kid is None or any(key.kid == kid for key in self.keys)


def build_key_set(
    jwks: Any, *, allowed_algorithms: Iterable[str], obtained_at: float
) -> KeySet:
    """Turn a JWKS document into a ``KeySet``; raise ``KeyFetchError`` if unusable.

    Keys kproxy cannot use (encryption keys, symmetric keys, unknown types, an
    algorithm outside the allow-list) are skipped; a set left with no key is an error,
    so that a broken publication never replaces working keys.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise KeyFetchError("key set is not a JSON object with a 'keys' list")
    allowed = tuple(allowed_algorithms)
    keys = [
        key
        for jwk in jwks["keys"]
        if isinstance(jwk, dict)
        for key in _verification_keys(jwk, allowed)
    ]
    if not keys:
        raise KeyFetchError("key set has no usable signing key")
    return KeySet(keys=tuple(keys), obtained_at=obtained_at)


def _verification_keys(
    jwk: dict[str, Any], allowed: tuple[str, ...]
) -> list[VerificationKey]:
    if jwk.get("use", "sig") != "sig":
        return []
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return []
    keys = []
    for algorithm in _algorithms_for(jwk, allowed):
        try:
            keys.append(VerificationKey(kid, algorithm, PyJWK(jwk, algorithm)))
        except PyJWKError as exc:
            logger.warning("skipping published key %r: %s", kid, exc)
    return keys


def _algorithms_for(jwk: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        possible: tuple[str, ...] = _RSA_ALGORITHMS
    elif kty == "EC" and jwk.get("crv") in _EC_CURVE_ALGORITHMS:
        possible = (_EC_CURVE_ALGORITHMS[jwk["crv"]],)
    else:
        return []
    declared = jwk.get("alg")
    if declared is not None:
        possible = tuple(a for a in possible if a == declared)
    return [a for a in possible if a in allowed]


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """How long and how much an issuer may make kproxy wait for and read."""

    timeout_seconds: float
    max_document_bytes: int


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    limits: FetchLimits,
) -> Any:
    """GET ``url`` and parse JSON; raise ``KeyFetchError`` for any failure.

    Redirects are not followed: a discovery document or key set that moved is a
    configuration matter, not something to chase to an address nobody configured.
    """
    timeout = aiohttp.ClientTimeout(total=limits.timeout_seconds)
    try:
        async with session.get(
            url,
            ssl=ssl_context if ssl_context is not None else True,
            timeout=timeout,
            allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status != 200:
                raise KeyFetchError(f"GET {url} answered {response.status}")
            body = await _read_limited(response, limits.max_document_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KeyFetchError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFetchError(f"GET {url} did not return JSON") from exc


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise KeyFetchError(f"document is larger than {limit} bytes")
    body = await response.content.read(limit + 1)
    while len(body) <= limit:
        more = await response.content.read(limit + 1 - len(body))
        if not more:
            return body
        body += more
    raise KeyFetchError(f"document is larger than {limit} bytes")


def load_static_key_set(authenticator: JWTAuthenticator, *, now: float) -> KeySet:
    """Build the operator-given key set of an issuer; raise ``ConfigError`` if bad."""
    static = authenticator.jwks
    assert static is not None  # noqa: S101 - callers check
    if static.file is None:
        document: Any = {"keys": [dict(key) for key in static.keys or ()]}
        source = f"jwks of issuer {authenticator.issuer.url!r}"
    else:
        source = static.file
        document = _read_json_file(Path(static.file))
    try:
        return build_key_set(
            document,
            allowed_algorithms=authenticator.allowed_algorithms,
            obtained_at=now,
        )
    except KeyFetchError as exc:
        raise ConfigError.single(source, str(exc), field="jwks") from exc


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError.single(str(path), f"cannot read key set: {exc}") from exc


def ssl_context_for(authenticator: JWTAuthenticator) -> ssl.SSLContext | None:
    """Trust the issuer's ``certificateAuthority`` alone when it is set."""
    pem = authenticator.issuer.certificate_authority
    if not pem:
        return None
    return ssl.create_default_context(cadata=pem)


class IssuerKeys:
    """The current keys of one issuer, and the task that keeps them fresh.

    ``current`` is ``None`` until keys were obtained once; after that it only ever
    changes to a newer good set.
    """

    def __init__(
        self,
        authenticator: JWTAuthenticator,
        *,
        limits: FetchLimits,
        refresh_seconds: float,
        retry_seconds: float,
        unknown_key_refresh_seconds: float,
        clock: Clock = time.time,
        events: AuthenticationEvents | None = None,
    ) -> None:
        self.issuer = authenticator.issuer.url
        self.current: KeySet | None = None
        self._authenticator = authenticator
        self._limits = limits
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._unknown_key_refresh_seconds = unknown_key_refresh_seconds
        self._clock = clock
        self._events: AuthenticationEvents = events or NoEvents()
        self._ssl_context = ssl_context_for(authenticator)
        self._session: aiohttp.ClientSession | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_attempt: float | None = None
        if authenticator.jwks is not None:
            self.current = load_static_key_set(authenticator, now=clock())

    @property
    def is_static(self) -> bool:
        return self._authenticator.jwks is not None

    def age(self) -> float | None:
        """Seconds since the current keys were obtained, or ``None`` if never."""
        if self.current is None:
            return None
        return max(0.0, self._clock() - self.current.obtained_at)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Fetch once, then keep refreshing in a named background task."""
        if self.is_static:
            return
        self._session = session
        await self.refresh()
        self._task = asyncio.create_task(
            self._keep_fresh(), name=f"kproxy-keys {self.issuer}"
        )

    async def close(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None

    async def refresh(self) -> bool:
        """Fetch now, sharing a fetch already under way; tell whether it worked."""
        if self.is_static or self._session is None:
            return False
        if self._refreshing is None or self._refreshing.done():
            self._last_attempt = self._clock()
            self._refreshing = asyncio.create_task(
                self._fetch(), name=f"kproxy-keys-fetch {self.issuer}"
            )
        # Shielded so that one caller giving up does not cancel the others' fetch.
        return await asyncio.shield(self._refreshing)

    async def refresh_for_unknown_key(self, kid: str | None) -> bool:
        """Refresh because a token named a key we lack, at most once per interval.

        Returns whether the key is known afterwards. The interval keeps a stream of
        tokens with invented key ids from turning kproxy into a load generator aimed
        at the issuer.
        """
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        elif self._may_refresh_now():
            await self.refresh()
        return self.current is not None and self.current.knows(kid)

    def _may_refresh_now(self) -> bool:
        if self._last_attempt is None:
            return True
        elapsed = self._clock() - self._last_attempt
        return elapsed >= self._unknown_key_refresh_seconds

    async def _keep_fresh(self) -> None:
        while True:
            wait = self._refresh_seconds if self.current else self._retry_seconds
            await asyncio.sleep(wait)
            await self.refresh()

    async def _fetch(self) -> bool:
        assert self._session is not None  # noqa: S101 - refresh checks
        try:
            key_set = await self._download(self._session)
        except KeyFetchError as exc:
            self._events.key_fetch(self.issuer, ok=False)
            kept = "last good keys kept" if self.current else "no keys yet"
            logger.warning(
                "issuer %r: key refresh failed (%s): %s", self.issuer, kept, exc
            )
            return False
        self.current = key_set
        self._events.key_fetch(self.issuer, ok=True)
        logger.debug("issuer %r: %d keys obtained", self.issuer, len(key_set.keys))
        return True

    async def _download(self, session: aiohttp.ClientSession) -> KeySet:
        issuer = self._authenticator.issuer
        discovery = await fetch_json(
            session,
            issuer.discovery_document_url,
            ssl_context=self._ssl_context,
            limits=self._limits,
        )
        jwks_uri = self._jwks_uri(discovery)
        jwks = await fetch_json(
            session, jwks_uri, ssl_context=self._ssl_context, limits=self._limits
        )
        return build_key_set(
            jwks,
            allowed_algorithms=self._authenticator.allowed_algorithms,
            obtained_at=self._clock(),
        )

    def _jwks_uri(self, discovery: Any) -> str:
        if not isinstance(discovery, Mapping):
            raise KeyFetchError("discovery document is not a JSON object")
        # OpenID Connect Discovery 1.0, section 4.3: the issuer in the document must
        # be exactly the one configured, or the keys are some other issuer's.
        if discovery.get("issuer") != self.issuer:
            raise KeyFetchError(
                f"discovery document names issuer {discovery.get('issuer')!r}"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeyFetchError("discovery document has no jwks_uri")
        if not is_secure_url(jwks_uri):
            raise KeyFetchError(f"jwks_uri {jwks_uri!r} is not https")
        return jwks_uri
