"""Answers from the API server that must not widen what a client can reach.

A refused upgrade must not leave a tunnel behind (the class of CVE-2018-1002105: the
connection stayed open and later bytes travelled with the proxy's rights), and a
redirect must be handed to the client, never followed with kproxy's credential (the
class of CVE-2020-8559). The evidence is the stand-in's full record, unauthenticated
requests included: nothing aimed at ``kube-system`` may appear in it.
"""

from __future__ import annotations

import base64
import os

import aiohttp
import pytest

from tests.security.conftest import MODULE_LOOP
from tests.security.federation import Federation, raw_exchange, request_bytes

pytestmark = MODULE_LOOP

EXEC = "/api/v1/namespaces/alpha/pods/worker/exec"
EXEC_QUERY = "?command=echo&command=hello&stdout=true"
SECRETS = "/api/v1/namespaces/kube-system/secrets"


def websocket_headers() -> tuple[tuple[str, str], ...]:
    return (
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    )


def reached_kube_system(federation: Federation) -> list[str]:
    return [r.path for r in federation.apiserver.requests if "kube-system" in r.path]


async def test_exec_through_kproxy_runs_as_the_mapped_user(
    federation: Federation,
) -> None:
    headers = {"Authorization": f"Bearer {federation.token()}"}
    output = b""

    async with (
        federation.session() as session,
        session.ws_connect(
            EXEC + EXEC_QUERY, headers=headers, protocols=("v5.channel.k8s.io",)
        ) as ws,
    ):
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\1":
                output += message.data[1:]

    assert output == b"hello\n"
    (arrived,) = federation.forwarded()
    assert arrived.user is not None
    assert arrived.user.username == "alpha:scheduler"


@pytest.mark.parametrize("refusal", [400, 403, 500])
async def test_refused_upgrade_leaves_no_tunnel_behind(
    federation: Federation, refusal: int
) -> None:
    federation.apiserver.faults.refuse_upgrades = refusal
    token = federation.token()
    upgrade = request_bytes(
        "GET", EXEC + EXEC_QUERY, token=token, headers=websocket_headers(), close=False
    )
    # Sent at once, as an attacker would, hoping it travels down a kept tunnel.
    follow_up = request_bytes("GET", SECRETS, token=token)

    response = await raw_exchange(federation, upgrade + follow_up)

    assert response.statuses == (refusal,)
    assert response.json()["kind"] == "Status"
    assert reached_kube_system(federation) == []
    assert [r.path for r in federation.apiserver.requests] == [EXEC]


async def test_redirect_from_the_api_server_is_not_followed(
    federation: Federation,
) -> None:
    faults = federation.apiserver.faults
    faults.path_prefix = "/api/v1/namespaces/alpha"
    faults.redirect_to = federation.apiserver.url + SECRETS
    headers = {"Authorization": f"Bearer {federation.token()}"}

    async with (
        federation.session() as session,
        session.get(
            "/api/v1/namespaces/alpha/pods", headers=headers, allow_redirects=False
        ) as response,
    ):
        assert response.status == 302

    assert reached_kube_system(federation) == []


async def test_redirect_answering_an_upgrade_is_not_followed(
    federation: Federation,
) -> None:
    faults = federation.apiserver.faults
    faults.path_prefix = "/api/v1/namespaces/alpha"
    faults.redirect_to = federation.apiserver.url + SECRETS
    upgrade = request_bytes(
        "GET", EXEC + EXEC_QUERY, token=federation.token(), headers=websocket_headers()
    )

    response = await raw_exchange(federation, upgrade)

    assert response.statuses == (302,)
    assert reached_kube_system(federation) == []


async def test_upgrade_to_an_unsupported_protocol_is_refused(
    federation: Federation,
) -> None:
    headers = (("Connection", "Upgrade"), ("Upgrade", "h2c"))
    upgrade = request_bytes(
        "GET", EXEC + EXEC_QUERY, token=federation.token(), headers=headers
    )

    response = await raw_exchange(federation, upgrade)

    assert response.status == 400
    assert response.json()["kind"] == "Status"
    assert federation.forwarded() == []


async def test_exec_in_another_universitys_namespace_is_forbidden(
    federation: Federation,
) -> None:
    upgrade = request_bytes(
        "GET",
        "/api/v1/namespaces/beta/pods/worker/exec" + EXEC_QUERY,
        token=federation.token(),
        headers=websocket_headers(),
    )

    response = await raw_exchange(federation, upgrade)

    assert response.status == 403
    assert federation.forwarded() == []


@pytest.mark.parametrize(
    "framing",
    [
        (("Transfer-Encoding", "chunked"), b"5\r\nhello\r\n0\r\n\r\n"),
        (("Content-Length", "5"), b"hello"),
    ],
    ids=["chunked", "content-length"],
)
async def test_upgrade_carrying_a_body_is_refused_before_the_api_server(
    framing: tuple[tuple[str, str], bytes], federation: Federation
) -> None:
    header, body = framing
    upgrade = request_bytes(
        "GET",
        EXEC + EXEC_QUERY,
        token=federation.token(),
        headers=(*websocket_headers(), header),
        body=body,
    )

    response = await raw_exchange(federation, upgrade)

    assert response.statuses == (400,)
    assert response.json()["message"] == "an upgrade request must not have a body"
    assert federation.forwarded() == []
