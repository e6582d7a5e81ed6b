"""The test provider itself: what other tests rely on it to do."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
import requests

from kproxy.login.discovery import discover
from kproxy.login.idtoken import fetch_keys
from kproxy.login.settings import LoginSettings
from kproxy.login.transport import ProviderSession
from tests.oidc.harness import (
    AUDIENCE,
    PUBLIC_CLIENT_ID,
    RESOURCE,
    RESOURCE_SCOPE,
    SERVICE_CLIENT_ID,
    SERVICE_CLIENT_SECRET,
    OidcProvider,
)


@pytest.fixture
def session(oidc_provider: OidcProvider) -> Iterator[ProviderSession]:
    settings = LoginSettings(
        issuer=oidc_provider.issuer,
        client_id=PUBLIC_CLIENT_ID,
        issuer_ca_file=oidc_provider.ca_file,
    )
    with ProviderSession(settings) as provider_session:
        yield provider_session


def test_discovery_and_keys_are_the_ones_the_test_passed_in(
    oidc_provider: OidcProvider, session: ProviderSession
) -> None:
    metadata = discover(session, oidc_provider.issuer)
    keys = fetch_keys(session, metadata)

    assert metadata.issuer == oidc_provider.issuer
    assert metadata.device_authorization_endpoint.startswith(oidc_provider.issuer)
    assert [key.key_id for key in keys.keys] == ["key-1"]
    published = session.get_json(metadata.jwks_uri)["keys"]
    assert [(key["kid"], key["n"], key["e"]) for key in published] == [
        (key["kid"], key["n"], key["e"]) for key in oidc_provider.public_keys["keys"]
    ]
    assert all("d" not in key for key in published), "a private key was published"


def test_client_credentials_yield_a_jwt_access_token_for_the_resource(
    oidc_provider: OidcProvider, session: ProviderSession
) -> None:
    metadata = discover(session, oidc_provider.issuer)
    response = requests.post(
        metadata.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "resource": RESOURCE,
            "scope": RESOURCE_SCOPE,
        },
        auth=(SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET),
        verify=str(oidc_provider.ca_file),
        timeout=30,
    )
    response.raise_for_status()
    token = response.json()["access_token"]
    key = fetch_keys(session, metadata)["key-1"]

    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=metadata.issuer
    )
    assert claims["client_id"] == SERVICE_CLIENT_ID
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
