"""``kproxy login`` against a real OpenID provider, with the test as the person."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import jwt
import pytest

from kproxy.login.cache import TokenCache, cache_key
from kproxy.login.credential import EXPIRY_MARGIN
from kproxy.login.errors import PersonNeededError
from kproxy.login.plugin import obtain_credential
from tests.login.driving import (
    DEVICE_PROMPT,
    LOGIN_URL,
    DeviceLoginInThread,
    LoginProcess,
    provider_flags,
    provider_settings,
    run_login,
)
from tests.oidc.browser import Person
from tests.oidc.harness import (
    ACCOUNTS,
    AUDIENCE,
    PUBLIC_CLIENT_ID,
    RESOURCE,
    RESOURCE_SCOPE,
    OidcProvider,
)


def _claims(token: str, provider: OidcProvider) -> dict[str, object]:
    """Verify ``token`` independently of kproxy, with the provider's public keys."""
    keys = jwt.PyJWKSet.from_dict(provider.public_keys)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(key for key in keys.keys if key.key_id == kid)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=PUBLIC_CLIENT_ID,
        issuer=provider.issuer,
    )


def _expiration(credential: dict[str, object]) -> float:
    status = credential["status"]
    assert isinstance(status, dict)
    stamp = datetime.datetime.strptime(
        status["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def test_device_flow_prints_an_exec_credential_with_the_id_token(
    oidc_provider: OidcProvider, kproxy_command: Path, cache_home: Path
) -> None:
    login = LoginProcess(
        [
            str(kproxy_command),
            "login",
            *provider_flags(oidc_provider, "--flow", "device"),
        ]
    )
    prompt = login.wait_for(DEVICE_PROMPT)
    with Person(ca_file=oidc_provider.ca_file, login="bob") as person:
        person.approve_device(prompt["uri"], prompt["code"])
    code, credential, stderr = login.finish()

    assert code == 0, stderr
    assert credential is not None
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["kind"] == "ExecCredential"
    claims = _claims(credential["status"]["token"], oidc_provider)
    assert claims["sub"] == "bob"
    assert claims["email"] == ACCOUNTS["bob"]["email"]
    assert claims["groups"] == ACCOUNTS["bob"]["groups"]
    assert _expiration(credential) == claims["exp"] - EXPIRY_MARGIN
    assert prompt["code"] not in str(credential), "the user code went to stdout"


def test_authorization_code_flow_with_pkce_through_the_loopback_redirect(
    oidc_provider: OidcProvider, kproxy_command: Path, cache_home: Path, person: Person
) -> None:
    login = LoginProcess([str(kproxy_command), "login", *provider_flags(oidc_provider)])
    url = login.wait_for(LOGIN_URL)["url"]
    final_page = person.browse(url)
    code, credential, stderr = login.finish()

    assert code == 0, stderr
    assert "code_challenge_method=S256" in url
    assert "nonce=" in url
    assert "state=" in url
    assert final_page.status_code == 200
    assert final_page.url.startswith("http://127.0.0.1:")
    assert "logged in" in final_page.text
    assert credential is not None
    assert _claims(credential["status"]["token"], oidc_provider)["sub"] == "alice"


def test_second_login_uses_the_cache_without_any_network_call(
    oidc_provider: OidcProvider, kproxy_command: Path, cache_home: Path, person: Person
) -> None:
    first = DeviceLoginInThread(provider_settings(oidc_provider, flow="device"))
    credential = first.run(person)
    oidc_provider.stop()

    code, cached, stderr = run_login(
        kproxy_command, provider_flags(oidc_provider, "--flow", "device")
    )

    assert code == 0, stderr
    assert cached is not None
    assert cached["status"]["token"] == credential.token


def test_cache_files_are_private_to_the_user(
    oidc_provider: OidcProvider, cache_home: Path, person: Person
) -> None:
    settings = provider_settings(oidc_provider, flow="device")
    DeviceLoginInThread(settings).run(person)

    directory = cache_home / "kproxy"
    entries = list(directory.iterdir())
    token_file = TokenCache(directory).path(cache_key(settings))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(entry.stat().st_mode) == 0o600 for entry in entries)
    assert not [entry for entry in entries if entry.name.endswith(".tmp")]


def test_an_expired_id_token_is_refreshed_with_the_refresh_token(
    oidc_provider: OidcProvider, cache_home: Path, person: Person
) -> None:
    settings = provider_settings(oidc_provider, flow="device")
    first = DeviceLoginInThread(settings).run(person)
    cache = TokenCache(cache_home / "kproxy")
    before = cache.load(cache_key(settings))
    assert before is not None
    assert before.refresh_token

    # Nearly at the token's expiry: the cache may not be used, and no person is here.
    near_expiry = first.expires_at - 10
    refreshed = obtain_credential(
        settings, interactive=False, clock=lambda: near_expiry
    )

    after = cache.load(cache_key(settings))
    assert after is not None
    # The provider rotates refresh tokens: a new one proves the refresh grant ran.
    assert after.refresh_token != before.refresh_token
    assert after.id_token == refreshed.token
    assert _claims(refreshed.token, oidc_provider)["sub"] == "alice"
    assert refreshed.expires_at > near_expiry


def test_without_a_terminal_a_needed_login_fails_at_once(
    oidc_provider: OidcProvider, kproxy_command: Path, cache_home: Path
) -> None:
    exec_info = (
        '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
        ' "spec": {"interactive": false}}'
    )
    code, credential, stderr = run_login(
        kproxy_command,
        provider_flags(oidc_provider, "--flow", "device"),
        env={"KUBERNETES_EXEC_INFO": exec_info},
    )

    assert code == 1
    assert credential is None
    assert "run 'kproxy login'" in stderr
    assert "enter the code" not in stderr


def test_a_refresh_the_provider_refuses_asks_the_person_again(
    oidc_provider: OidcProvider, cache_home: Path, person: Person
) -> None:
    settings = provider_settings(oidc_provider, flow="device")
    first = DeviceLoginInThread(settings).run(person)
    # A restart forgets every grant, so the cached refresh token is now unknown.
    oidc_provider.restart()

    with pytest.raises(PersonNeededError):
        obtain_credential(
            settings, interactive=False, clock=lambda: first.expires_at - 10
        )


def test_an_access_token_for_kproxy_is_given_when_configured(
    oidc_provider: OidcProvider, cache_home: Path, person: Person
) -> None:
    settings = provider_settings(
        oidc_provider,
        flow="device",
        bearer="access-token",
        resource=RESOURCE,
        scopes=("openid", RESOURCE_SCOPE),
    )

    credential = DeviceLoginInThread(settings).run(person)

    keys = jwt.PyJWKSet.from_dict(oidc_provider.public_keys)
    claims = jwt.decode(
        credential.token,
        keys["key-1"].key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=oidc_provider.issuer,
    )
    assert claims["sub"] == "alice"
    assert claims["scope"] == RESOURCE_SCOPE
    assert credential.expires_at == pytest.approx(claims["exp"], abs=5)
