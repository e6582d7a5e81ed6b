"""The provider rotates its signing keys; kproxy follows without a restart.

kproxy fetched the provider's key set when it started. A token signed with a key it
has never seen makes it fetch the set again at once (``unknownKeyRefreshSeconds: 0``
here, so the test need not wait out the default ten seconds), and a token keeps
working exactly as long as its key is in the set kproxy last fetched. kproxy's token
cache is off (``tokenCacheSeconds: 0``) so that every request is verified again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt

from kproxy.standins.federation import LocalFederation
from tests.login.driving import DeviceLoginInThread, provider_settings
from tests.oidc.browser import Person
from tests.oidc.harness import OidcProvider, signing_key
from tests.onboarding.campus import NAMESPACE, campus_federation_options
from tests.onboarding.conftest import StartFederation
from tests.onboarding.running import kubectl

PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


async def _login(provider: OidcProvider, cache_dir: Path) -> str:
    """A fresh ID token for Alice, from a device login approved in a browser."""
    settings = provider_settings(provider, flow="device", cache_dir=cache_dir)
    with Person(ca_file=provider.ca_file) as alice:
        credential = await asyncio.to_thread(DeviceLoginInThread(settings).run, alice)
    return credential.token


async def _lists_pods(federation: LocalFederation, token: str, name: str) -> str:
    """kubectl's complaint when listing pods with ``token``, or "" if it worked."""
    listed = await kubectl(
        federation.kubeconfig(token, name=name), "get", "--raw", PODS
    )
    if listed.returncode == 0:
        return ""
    assert "You must be logged in to the server" in listed.stderr, listed.stderr
    return listed.stderr


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_new_keys_work_at_once_and_old_tokens_until_their_key_is_gone(
    oidc_provider: OidcProvider,
    start_federation: StartFederation,
    tmp_path: Path,
) -> None:
    federation = await start_federation(
        **campus_federation_options(
            oidc_provider,
            tmp_path / "policies",
            tokenCacheSeconds=0,
            unknownKeyRefreshSeconds=0,
        )
    )
    first_key = oidc_provider.keys[0]
    old = await _login(oidc_provider, tmp_path / "login-1")
    assert await _lists_pods(federation, old, "old") == ""

    # The provider signs with a new key and still publishes the old one.
    oidc_provider.restart(keys=[signing_key("key-2"), first_key])
    new = await _login(oidc_provider, tmp_path / "login-2")

    assert (_kid(old), _kid(new)) == ("key-1", "key-2")
    assert await _lists_pods(federation, new, "new") == ""
    assert await _lists_pods(federation, old, "old") == ""

    # The first key is withdrawn. kproxy learns of it with the next fetch, which the
    # next unknown key id sets off.
    oidc_provider.restart(keys=[signing_key("key-3"), oidc_provider.keys[0]])
    newest = await _login(oidc_provider, tmp_path / "login-3")

    assert await _lists_pods(federation, newest, "newest") == ""
    assert await _lists_pods(federation, new, "new") == ""
    assert "token signing key is not known" in await _lists_pods(federation, old, "old")
