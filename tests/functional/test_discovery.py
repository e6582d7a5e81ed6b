"""Discovery through kproxy: every Accept a client sends gets the API server's answer.

kubectl and client libraries negotiate discovery by ``Accept``: aggregated discovery
(``g=apidiscovery.k8s.io;v=v2``), plain JSON, protobuf for OpenAPI v2, or anything.
kproxy decides on the path alone and must pass the negotiation through untouched, so
for each path and ``Accept`` the answer through kproxy (for an identity whose policy
allows the non-resource URLs) is byte for byte what the API server itself returns.
"""

from __future__ import annotations

import ssl
from typing import Final

import aiohttp
import pytest

from kproxy.auth.identity import UserInfo
from kproxy.standins.federation import LocalFederation

from .clients import http_session, kubectl_for

PATHS: Final = (
    "/version",
    "/api",
    "/api/v1",
    "/apis",
    "/apis/multicluster.admiralty.io/v1alpha1",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/api/v1",
    "/openapi/v3/apis/multicluster.admiralty.io/v1alpha1",
)
ACCEPTS: Final = {
    "none": None,
    "any": "*/*",
    "json": "application/json",
    "aggregated": (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
        "application/json"
    ),
    "kubectl": "application/json, */*",
    "protobuf": "application/vnd.kubernetes.protobuf, */*",
    "openapi-protobuf": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
}

Answer = tuple[int, str, bytes]


async def fetch(
    session: aiohttp.ClientSession, path: str, accept: str | None
) -> Answer:
    headers = {} if accept is None else {"Accept": accept}
    async with session.get(path, headers=headers) as response:
        return response.status, response.content_type, await response.read()


async def direct(federation: LocalFederation, path: str, accept: str | None) -> Answer:
    """What the API server answers kproxy's users when asked without kproxy."""
    admin = federation.apiserver.add_user(
        UserInfo(username="admin", groups=("system:masters",))
    )
    context = ssl.create_default_context(cadata=federation.apiserver.ca_pem.decode())
    async with aiohttp.ClientSession(
        federation.apiserver.url,
        connector=aiohttp.TCPConnector(ssl=context),
        headers={"Authorization": f"Bearer {admin.token}"},
    ) as session:
        return await fetch(session, path, accept)


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
async def test_discovery_through_kproxy_is_the_api_servers_answer(
    federation: LocalFederation, accept: str | None
) -> None:
    token = federation.scheduler_token("alpha")

    async with http_session(federation, token) as session:
        through = {path: await fetch(session, path, accept) for path in PATHS}
    expected = {path: await direct(federation, path, accept) for path in PATHS}

    assert through == expected
    assert through["/version"][0] == 200


async def test_kubectl_discovers_versions_resources_and_schemas_through_kproxy(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("gamma")
    kubectl = kubectl_for(federation, token, name="gamma", namespace="gamma")

    version = await kubectl("version", "-o", "json")
    resources = await kubectl("api-resources", "-o", "name")
    versions = await kubectl("api-versions")
    explained = await kubectl("explain", "pods")
    openapi = await kubectl("get", "--raw", "/openapi/v2")

    assert version.json()["serverVersion"]["gitVersion"].startswith("v1.")
    assert "podchaperons.multicluster.admiralty.io" in resources.stdout.split()
    assert "namespacegrants.kproxy.io" in resources.stdout.split()
    assert "multicluster.admiralty.io/v1alpha1" in versions.stdout.split()
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith("KIND:       Pod\nVERSION:    v1\n")
    assert "spec\t<Object>" in explained.stdout
    assert openapi.json()["swagger"] == "2.0"
