"""What reaches the API server: kproxy's own credential and the mapped identity only.

The client's bearer token is for kproxy; the API server must never see it. A client's
own ``Impersonate-*`` headers (kubectl ``--as``, ``--as-group``, ``--as-uid``) would
choose an identity with kproxy's right to impersonate; the API server must see exactly
the identity kproxy mapped, plus the provenance extras naming the token's issuer and
subject. Each test reads the requests the API server stand-in recorded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest
import yaml
from kubernetes import client

from kproxy.auth.identity import UserInfo
from kproxy.standins.apiserver import RecordedRequest
from kproxy.standins.federation import LocalFederation

from .clients import http_session, kubectl_for, python_client
from .conftest import EXAMPLE_POLICIES, WORKSHOP, pod

SCHEDULER: Final = "alpha:admiralty:multicluster-scheduler"
WORKSHOP_USER: Final = "delta:multicluster-scheduler"
CHAPERONS: Final = (
    "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons"
)
SUBJECT: Final = "system:serviceaccount:admiralty:multicluster-scheduler"
ISSUER_EXTRA: Final = "Impersonate-Extra-kproxy.io%2Fissuer"
SUBJECT_EXTRA: Final = "Impersonate-Extra-kproxy.io%2Fsubject"
CLIENT_IMPERSONATION: Final = (
    ("Impersonate-User", "system:admin"),
    ("Impersonate-Group", "system:masters"),
    ("Impersonate-Uid", "0"),
    ("Impersonate-Extra-scopes", "everything"),
    ("Impersonate_User", "system:admin"),
    ("X-Remote-User", "system:admin"),
)


class TokenUpstreamFederation(LocalFederation):
    """A federation whose kproxy authenticates upstream with a bearer token."""

    def _write_configuration(self) -> Path:
        path = super()._write_configuration()
        credentials = self.apiserver.proxy_credentials
        upstream = yaml.safe_dump(self.apiserver.kubeconfig(credentials))
        (self.workdir / "upstream.kubeconfig").write_text(upstream)
        return path


def forwarded(federation: LocalFederation) -> list[RecordedRequest]:
    """Requests kproxy made on a client's behalf (not its own grant watch)."""
    return [
        r for r in federation.apiserver.requests if r.header_values("Impersonate-User")
    ]


def impersonation_headers(request: RecordedRequest) -> dict[str, list[str]]:
    names = {k for k, _ in request.headers if k.lower().startswith("impersonate")}
    return {name: request.header_values(name) for name in sorted(names)}


def assert_mapped_identity_only(
    federation: LocalFederation,
    request: RecordedRequest,
    *,
    token: str,
    university: str = "alpha",
    username: str = SCHEDULER,
) -> None:
    issuer = federation.issuer(university).url
    group = f"{university}:scheduler"
    assert impersonation_headers(request) == {
        "Impersonate-Extra-kproxy.io%2Fissuer": [issuer],
        "Impersonate-Extra-kproxy.io%2Fsubject": [SUBJECT],
        "Impersonate-Group": [group],
        "Impersonate-User": [username],
    }
    assert request.header_values("X-Remote-User") == []
    assert all(token not in value for _, value in request.headers)
    assert request.user is not None
    assert request.user.username == username
    assert request.user.groups == (group, "system:authenticated")
    assert dict(request.user.extra) == {
        "kproxy.io/issuer": (issuer,),
        "kproxy.io/subject": (SUBJECT,),
    }


async def test_kubectl_token_and_as_flags_never_reach_the_api_server(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    kubectl = kubectl_for(federation, token, name="alpha", namespace="alpha")
    federation.apiserver.clear_requests()

    result = await kubectl(
        "get",
        "podchaperons",
        "--as=system:admin",
        "--as-group=system:masters",
        "--as-uid=0",
    )

    assert result.returncode == 0, result.stderr
    requests = forwarded(federation)
    assert CHAPERONS in [r.path for r in requests]
    for request in requests:
        assert request.header_values("Authorization") == []
        assert request.caller is not None
        assert (
            request.caller.username == federation.apiserver.proxy_credentials.username
        )
        assert_mapped_identity_only(federation, request, token=token)


async def test_every_request_of_a_kubectl_session_carries_the_mapped_identity(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    kubectl = kubectl_for(federation, token, name="alpha", namespace="alpha")
    federation.apiserver.clear_requests()

    result = await kubectl("api-resources", "--as=system:admin")

    assert result.returncode == 0, result.stderr
    requests = forwarded(federation)
    assert len(requests) > 3
    for request in requests:
        assert_mapped_identity_only(federation, request, token=token)


async def test_raw_impersonation_headers_of_the_client_are_replaced(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    federation.apiserver.clear_requests()

    async with (
        http_session(federation, token) as session,
        session.get(
            "/api/v1/namespaces/alpha/pods", headers=dict(CLIENT_IMPERSONATION)
        ) as response,
    ):
        assert response.status == 200, await response.text()

    (request,) = forwarded(federation)
    assert_mapped_identity_only(federation, request, token=token)


async def test_the_python_client_reaches_the_api_server_as_the_mapped_user(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    federation.apiserver.clear_requests()

    with python_client(federation, token, name="alpha") as api_client:
        api_client.default_headers.update(dict(CLIENT_IMPERSONATION[:3]))
        core = client.CoreV1Api(api_client)
        pods = await asyncio.to_thread(core.list_namespaced_pod, "alpha")

    assert pods.items == []
    (request,) = forwarded(federation)
    assert_mapped_identity_only(federation, request, token=token)


@pytest.mark.parametrize(
    ("command", "output"),
    [(["echo", "hi"], "hi\n"), (["whoami"], f"{WORKSHOP_USER}\n")],
    ids=["echo", "whoami"],
)
async def test_an_exec_tunnel_is_opened_as_the_mapped_user(
    workshop: LocalFederation, command: list[str], output: str
) -> None:
    workshop.apiserver.create(pod("shell", WORKSHOP))
    token = workshop.scheduler_token(WORKSHOP)
    kubectl = kubectl_for(workshop, token, name="delta", namespace=WORKSHOP)
    workshop.apiserver.clear_requests()

    result = await kubectl("exec", "--as=system:admin", "shell", "--", *command)

    assert result.returncode == 0, result.stderr
    assert result.stdout == output
    request = forwarded(workshop)[-1]
    assert request.path == "/api/v1/namespaces/delta/pods/shell/exec"
    assert_mapped_identity_only(
        workshop, request, token=token, university=WORKSHOP, username=WORKSHOP_USER
    )


async def test_a_token_upstream_credential_is_kproxys_own(tmp_path: Path) -> None:
    federation = TokenUpstreamFederation(
        tmp_path / "token", policy_dir=EXAMPLE_POLICIES
    )
    await federation.start()
    try:
        token = federation.scheduler_token("alpha")
        kubectl = kubectl_for(federation, token, name="alpha", namespace="alpha")
        federation.apiserver.clear_requests()

        result = await kubectl("get", "podchaperons", "--token=" + token)
    finally:
        await federation.stop()

    assert result.returncode == 0, result.stderr
    request = forwarded(federation)[-1]
    assert request.path == CHAPERONS
    kproxy_token = federation.apiserver.proxy_credentials.token
    assert request.header_values("Authorization") == [f"Bearer {kproxy_token}"]
    assert request.caller == UserInfo(
        username=federation.apiserver.proxy_credentials.username,
        groups=("system:authenticated",),
    )
    assert_mapped_identity_only(federation, request, token=token)
