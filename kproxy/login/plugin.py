"""Getting kubectl a token: from the cache, by refreshing, or from a person.

The order matters for the people using it. kubectl runs the plugin often, so a cached
token that is valid for at least ``MIN_VALIDITY`` more seconds is returned without any
network call. Next comes the refresh token, silently. Only then is a person asked, and
only if kubectl says one is at the terminal; otherwise the plugin fails at once with a
message telling them to run ``kproxy login`` by hand, rather than waiting for an
approval nobody will give.

Every ID token is verified against the provider's key set, fetched fresh for each
login, before it is cached. A refreshed ID token must name the same subject as the one
it replaces (OpenID Connect Core 12.2).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import jwt
from authlib.integrations.base_client import OAuthError

from kproxy.login.cache import CachedTokens, TokenCache, cache_key, default_cache_dir
from kproxy.login.credential import Credential
from kproxy.login.discovery import ProviderMetadata, discover
from kproxy.login.errors import LoginError, PersonNeededError, TokenVerificationError
from kproxy.login.flows import (
    FlowResult,
    Notify,
    Sleep,
    authorization_code_flow,
    device_flow,
)
from kproxy.login.idtoken import fetch_keys, verify_id_token
from kproxy.login.settings import LoginSettings
from kproxy.login.transport import ProviderSession, wrapped

MIN_VALIDITY: Final = 60.0
DEFAULT_ACCESS_TOKEN_LIFETIME: Final = 300.0

Clock = Callable[[], float]


def notify_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def obtain_credential(
    settings: LoginSettings,
    *,
    interactive: bool,
    clock: Clock = time.time,
    notify: Notify = notify_stderr,
    sleep: Sleep = time.sleep,
) -> Credential:
    """Return a token for kubectl, logging in only when nothing else works.

    Raises ``PersonNeededError`` when a person must log in and ``interactive`` is
    false, ``TokenVerificationError`` when the provider's ID token fails its checks,
    and ``LoginError`` for everything else that stops the login.
    """
    cache = TokenCache(settings.cache_dir or default_cache_dir())
    key = cache_key(settings)
    with cache.locked(key):
        cached = cache.load(key)
        if cached is not None and _belongs(cached, settings):
            credential = _usable_credential(cached, settings, now=clock())
            if credential is not None:
                return credential

        with _Login(settings, clock=clock) as login:
            tokens = (
                login.refreshed(cached) if cached and cached.refresh_token else None
            )
            if tokens is None:
                if not interactive:
                    raise PersonNeededError(_person_needed_message(settings))
                tokens = login.by_person(notify=notify, sleep=sleep)
        cache.store(key, tokens)
    credential = _usable_credential(tokens, settings, now=clock(), margin=0.0)
    if credential is None:
        raise LoginError("the provider issued a token that expires at once")
    return credential


def _belongs(cached: CachedTokens, settings: LoginSettings) -> bool:
    return cached.issuer == settings.issuer and cached.client_id == settings.client_id


def _usable_credential(
    tokens: CachedTokens,
    settings: LoginSettings,
    *,
    now: float,
    margin: float = MIN_VALIDITY,
) -> Credential | None:
    if settings.bearer == "id-token":
        token, expires_at = tokens.id_token, tokens.id_token_expires_at
    else:
        token, expires_at = tokens.access_token, tokens.access_token_expires_at
    if not token or expires_at - now <= margin:
        return None
    return Credential(token=token, expires_at=expires_at)


def _person_needed_message(settings: LoginSettings) -> str:
    return (
        f"no valid token for {settings.client_id!r} at {settings.issuer!r} and no "
        "terminal to log in from; run 'kproxy login' with the same flags in a "
        "terminal first"
    )


class _Login:
    """One login attempt against the provider: discovery, keys, then tokens."""

    def __init__(self, settings: LoginSettings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.session = ProviderSession(settings)

    def __enter__(self) -> _Login:
        self.metadata: ProviderMetadata = discover(self.session, self.settings.issuer)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def refreshed(self, cached: CachedTokens) -> CachedTokens | None:
        """New tokens from the refresh token, or ``None`` if the provider says no."""
        extra = {"resource": self.settings.resource} if self.settings.resource else {}
        with wrapped(f"refreshing at {self.metadata.token_endpoint}"):
            try:
                response = self.session.refresh_token(
                    self.metadata.token_endpoint,
                    refresh_token=cached.refresh_token,
                    **extra,
                )
            except OAuthError:
                return None
        if self.settings.bearer == "id-token" and "id_token" not in response:
            return None
        return self._tokens(FlowResult(response, nonce=None), previous=cached)

    def by_person(self, *, notify: Notify, sleep: Sleep) -> CachedTokens:
        if self.settings.flow == "device":
            result = device_flow(
                self.session, self.metadata, self.settings, notify=notify, sleep=sleep
            )
        else:
            result = authorization_code_flow(
                self.session, self.metadata, self.settings, notify=notify
            )
        return self._tokens(result, previous=None)

    def _tokens(
        self, result: FlowResult, *, previous: CachedTokens | None
    ) -> CachedTokens:
        response = result.token_response
        now = self.clock()
        id_token, id_expires_at, subject = self._verified_id_token(
            response, nonce=result.nonce, previous=previous, now=now
        )
        access_token = str(response.get("access_token", ""))
        if not access_token and self.settings.bearer == "access-token":
            raise LoginError("the provider returned no access token")
        return CachedTokens(
            issuer=self.settings.issuer,
            client_id=self.settings.client_id,
            subject=subject,
            id_token=id_token,
            id_token_expires_at=id_expires_at,
            access_token=access_token,
            access_token_expires_at=now + _lifetime(response),
            refresh_token=str(
                response.get("refresh_token")
                or (previous and previous.refresh_token)
                or ""
            ),
        )

    def _verified_id_token(
        self,
        response: Mapping[str, Any],
        *,
        nonce: str | None,
        previous: CachedTokens | None,
        now: float,
    ) -> tuple[str, float, str]:
        unverified_token = response.get("id_token")
        if not unverified_token:
            if self.settings.bearer == "id-token":
                raise LoginError(
                    "the provider returned no ID token; is 'openid' a scope?"
                )
            return "", 0.0, previous.subject if previous else ""
        verified = verify_id_token(
            str(unverified_token),
            keys=self._keys(),
            metadata=self.metadata,
            client_id=self.settings.client_id,
            nonce=nonce,
            now=now,
        )
        if previous is not None and previous.subject != verified.subject:
            raise TokenVerificationError("the refreshed ID token names another subject")
        return verified.token, verified.expires_at, verified.subject

    def _keys(self) -> jwt.PyJWKSet:
        return fetch_keys(self.session, self.metadata)


def _lifetime(response: Mapping[str, Any]) -> float:
    try:
        return float(response.get("expires_in", DEFAULT_ACCESS_TOKEN_LIFETIME))
    except (TypeError, ValueError):
        return DEFAULT_ACCESS_TOKEN_LIFETIME
