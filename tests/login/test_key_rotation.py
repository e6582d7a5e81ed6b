"""Tokens verify against the provider's current key set across a key rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from kproxy.login.discovery import ProviderMetadata, discover
from kproxy.login.errors import TokenVerificationError
from kproxy.login.idtoken import fetch_keys, verify_id_token
from kproxy.login.transport import ProviderSession
from tests.login.driving import DeviceLoginInThread, provider_settings
from tests.oidc.browser import Person
from tests.oidc.harness import PUBLIC_CLIENT_ID, OidcProvider, signing_key


@pytest.fixture
def session(oidc_provider: OidcProvider) -> Iterator[ProviderSession]:
    with ProviderSession(provider_settings(oidc_provider)) as provider_session:
        yield provider_session


def _device_login(provider: OidcProvider, *scopes: str) -> str:
    # Each scope set is its own cache entry, so every call is a fresh login.
    settings = provider_settings(provider, flow="device", scopes=("openid", *scopes))
    with Person(ca_file=provider.ca_file) as person:
        return DeviceLoginInThread(settings).run(person).token


def _subject(token: str, keys: jwt.PyJWKSet, metadata: ProviderMetadata) -> str:
    verified = verify_id_token(
        token,
        keys=keys,
        metadata=metadata,
        client_id=PUBLIC_CLIENT_ID,
        nonce=None,
        now=time.time(),
    )
    return verified.subject


def test_new_tokens_verify_at_once_and_old_ones_until_their_key_is_gone(
    oidc_provider: OidcProvider, session: ProviderSession, cache_home: Path
) -> None:
    old_token = _device_login(oidc_provider, "email")
    old_key = oidc_provider.keys[0]

    # The new key signs; the old one stays published for the tokens already out.
    oidc_provider.restart(keys=[signing_key("key-2"), old_key])
    new_token = _device_login(oidc_provider, "groups")
    metadata = discover(session, oidc_provider.issuer)
    both = fetch_keys(session, metadata)

    assert jwt.get_unverified_header(new_token)["kid"] == "key-2"
    assert _subject(new_token, both, metadata) == "alice"
    assert _subject(old_token, both, metadata) == "alice"

    oidc_provider.restart(keys=[oidc_provider.keys[0]])
    only_new = fetch_keys(session, metadata)

    assert _subject(new_token, only_new, metadata) == "alice"
    with pytest.raises(TokenVerificationError, match="'key-1' is not in"):
        _subject(old_token, only_new, metadata)
