"""A person joins through kproxy: ``kproxy login``, ``kproxy kubeconfig``, kubectl.

The identity provider is a real one (``oidc-provider``), the person approves the
device login in a scripted browser, and everything after that is what a scientist
runs: the login by hand once, then kubectl with the kubeconfig ``kproxy kubeconfig``
wrote, whose exec entry runs the real ``kproxy login`` again and finds the cached
token. What kproxy made of the person is read where it matters, at the API server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest

from kproxy.standins.federation import LocalFederation
from tests.login.driving import (
    DEVICE_PROMPT,
    DeviceLoginInThread,
    LoginProcess,
    provider_flags,
    provider_settings,
)
from tests.oidc.browser import Person
from tests.oidc.harness import OidcProvider
from tests.onboarding.campus import (
    ALICE_EMAIL,
    NAMESPACE,
    UNIVERSITY,
    campus_federation_options,
    pods_requests,
)
from tests.onboarding.conftest import StartFederation
from tests.onboarding.running import kubectl, run


async def _device_login(
    kproxy_command: Path, provider: OidcProvider, *, login: str
) -> str:
    """Run ``kproxy login --flow device`` while ``login`` approves in a browser."""
    flags = provider_flags(provider, "--flow", "device")
    process = LoginProcess([str(kproxy_command), "login", *flags])
    prompt = await asyncio.to_thread(process.wait_for, DEVICE_PROMPT)
    with Person(ca_file=provider.ca_file, login=login) as person:
        await asyncio.to_thread(person.approve_device, prompt["uri"], prompt["code"])
    code, credential, stderr = await asyncio.to_thread(process.finish)
    assert code == 0, stderr
    assert credential is not None
    return str(credential["status"]["token"])


async def _people_kubeconfig(
    kproxy_command: Path,
    provider: OidcProvider,
    federation: LocalFederation,
    path: Path,
) -> Path:
    written = await run(
        kproxy_command,
        "kubeconfig",
        f"--server={federation.url}",
        f"--certificate-authority={federation.ca_file}",
        f"--namespace={NAMESPACE}",
        f"--login-command={kproxy_command}",
        f"--output={path}",
        *provider_flags(provider, "--flow", "device"),
    )
    assert written.returncode == 0, written.stderr
    return path


# The device login polls at the provider's interval (five seconds), and each kubectl
# call starts the exec plugin, a whole Python process, again.
@pytest.mark.timeout(120)
async def test_a_person_logs_in_and_kubectl_reaches_the_api_server_as_mapped(
    oidc_provider: OidcProvider,
    start_federation: StartFederation,
    kproxy_command: Path,
    cache_home: Path,
    tmp_path: Path,
) -> None:
    federation = await start_federation(
        **campus_federation_options(oidc_provider, tmp_path / "policies")
    )
    token = await _device_login(kproxy_command, oidc_provider, login="alice")
    kubeconfig = await _people_kubeconfig(
        kproxy_command, oidc_provider, federation, tmp_path / "alice.kubeconfig"
    )

    # kubectl's stdin is not a terminal, so the plugin may not ask anyone: the token
    # can only come from the cache the login above filled.
    listed = await kubectl(kubeconfig, "get", "pods", "-o", "name")

    assert listed.returncode == 0, listed.stderr
    (arrived, *_) = pods_requests(federation, NAMESPACE)
    assert arrived.header_values("Impersonate-User") == [f"{UNIVERSITY}:{ALICE_EMAIL}"]
    assert arrived.header_values("Impersonate-Group") == [f"{UNIVERSITY}:researchers"]
    assert arrived.header_values("Authorization") != [f"Bearer {token}"]
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "alice"

    # The same person, where the university's policy does not reach.
    elsewhere = await kubectl(kubeconfig, "get", "pods", "--namespace", "uni-b")
    secrets = await kubectl(kubeconfig, "get", "secrets")

    assert elsewhere.returncode == 1
    assert f'user "{UNIVERSITY}:{ALICE_EMAIL}" cannot list resource "pods"' in (
        elsewhere.stderr
    )
    assert secrets.returncode == 1
    assert 'cannot list resource "secrets"' in secrets.stderr
    assert not pods_requests(federation, "uni-b")


async def test_a_person_of_another_university_is_not_admitted(
    oidc_provider: OidcProvider,
    start_federation: StartFederation,
    kproxy_command: Path,
    cache_home: Path,
    tmp_path: Path,
) -> None:
    federation = await start_federation(
        **campus_federation_options(oidc_provider, tmp_path / "policies")
    )
    # Bob's email is at uni-b.example: the provider vouches for him, kproxy trusts the
    # provider, and still no university's policy admits him. His login runs in this
    # process, with the settings the kubeconfig's exec entry repeats.
    login = DeviceLoginInThread(provider_settings(oidc_provider, flow="device"))
    with Person(ca_file=oidc_provider.ca_file, login="bob") as bob:
        await asyncio.to_thread(login.run, bob)
    kubeconfig = await _people_kubeconfig(
        kproxy_command, oidc_provider, federation, tmp_path / "bob.kubeconfig"
    )

    listed = await kubectl(kubeconfig, "get", "pods")
    raw = await kubectl(
        kubeconfig, "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods"
    )

    # kubectl's discovery is refused first, and kubectl prints no reason for that;
    # a raw request shows kproxy's.
    assert listed.returncode == 1
    assert "Error from server (Forbidden)" in listed.stderr
    assert raw.returncode == 1
    assert "no university admits this identity" in raw.stderr
    assert not pods_requests(federation, NAMESPACE)
