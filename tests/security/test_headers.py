"""Client headers that try to choose an identity, strip kproxy's, or split a request.

Requests are written byte for byte on a raw TLS connection, since HTTP libraries
normalize exactly the spellings these attacks depend on. What the API server stand-in
recorded is the evidence: who the request arrived as and which headers came with it.
"""

from __future__ import annotations

import pytest

from kproxy.standins.apiserver import RecordedRequest
from tests.security.conftest import MODULE_LOOP
from tests.security.federation import Federation, raw_exchange, request_bytes

pytestmark = MODULE_LOOP

PODS = "/api/v1/namespaces/alpha/pods"
SECRETS = "/api/v1/namespaces/kube-system/secrets"


async def send(
    federation: Federation, *headers: tuple[str, str], path: str = PODS
) -> RecordedRequest:
    """Send an allowed request with extra headers; return what the API server saw."""
    data = request_bytes("GET", path, token=federation.token(), headers=headers)
    response = await raw_exchange(federation, data)
    assert response.status == 200, response.body
    (arrived,) = federation.forwarded()
    return arrived


def assert_acts_as_the_scheduler(arrived: RecordedRequest) -> None:
    assert arrived.user is not None
    assert arrived.user.username == "alpha:scheduler"
    assert set(arrived.user.groups) == {"alpha:scheduler", "system:authenticated"}
    assert arrived.header_values("Impersonate-User") == ["alpha:scheduler"]
    assert arrived.header_values("Impersonate-Group") == ["alpha:scheduler"]
    assert not any("_" in name for name, _ in arrived.headers)


@pytest.mark.parametrize(
    "header",
    [
        ("Impersonate-User", "system:admin"),
        ("impersonate-user", "system:admin"),
        ("IMPERSONATE-USER", "system:admin"),
        ("Impersonate_User", "system:admin"),
        ("impersonate_group", "system:masters"),
        ("Impersonate-Group", "system:masters"),
        ("Impersonate-Uid", "0"),
        ("Impersonate-Extra-Scopes", "cluster-admin"),
        ("Impersonate-Extra-kproxy.io%2Fissuer", "https://forged.example"),
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
    ],
    ids=lambda header: header[0] if isinstance(header, tuple) else header,
)
async def test_client_impersonation_headers_are_stripped_in_any_spelling(
    federation: Federation, header: tuple[str, str]
) -> None:
    arrived = await send(federation, header)

    assert_acts_as_the_scheduler(arrived)
    assert arrived.user is not None
    assert arrived.user.extra["kproxy.io/issuer"] == (federation.alpha.url,)
    assert "scopes" not in arrived.user.extra


async def test_duplicated_impersonation_headers_are_all_stripped(
    federation: Federation,
) -> None:
    arrived = await send(
        federation,
        ("Impersonate-User", "system:admin"),
        ("Impersonate-User", "alpha:scheduler"),
        ("Impersonate-Group", "system:masters"),
        ("impersonate-group", "system:nodes"),
    )

    assert_acts_as_the_scheduler(arrived)


async def test_connection_naming_impersonate_user_cannot_drop_kproxys_impersonation(
    federation: Federation,
) -> None:
    # CVE-2021-31999 class: a hop-by-hop declaration that would strip the header kproxy
    # adds, so that the API server acts as kproxy itself.
    arrived = await send(federation, ("Connection", "Impersonate-User"))

    assert_acts_as_the_scheduler(arrived)
    assert arrived.header_values("Connection") in ([], ["close"], ["keep-alive"])


async def test_connection_naming_authorization_cannot_strip_kproxys_credential(
    federation: Federation,
) -> None:
    # CVE-2022-23652 class: "Connection: x, Authorization" aimed at kproxy's own token.
    arrived = await send(federation, ("Connection", "x, Authorization"))

    assert arrived.caller is not None
    assert arrived.caller.username == "kproxy"
    assert_acts_as_the_scheduler(arrived)


async def test_client_token_never_reaches_the_api_server(
    federation: Federation,
) -> None:
    token = federation.token()
    data = request_bytes("GET", PODS, token=token)

    await raw_exchange(federation, data)

    (arrived,) = federation.forwarded()
    assert token not in str(arrived.headers)
    credential = federation.apiserver.proxy_credentials.token
    assert arrived.header_values("Authorization") == [f"Bearer {credential}"]


async def test_spoofed_forwarding_headers_are_replaced_by_the_real_peer(
    federation: Federation,
) -> None:
    arrived = await send(
        federation,
        ("X-Forwarded-For", "10.0.0.1"),
        ("X_Forwarded_For", "10.0.0.2"),
        ("X-Real-Ip", "10.0.0.3"),
        ("Forwarded", "for=10.0.0.4"),
        ("X-Forwarded-Host", "apiserver.internal"),
    )

    assert arrived.header_values("X-Forwarded-For") == ["127.0.0.1"]
    for name in ("X-Real-Ip", "Forwarded", "X-Forwarded-Host"):
        assert arrived.header_values(name) == []


SMUGGLING = {
    "content-length-and-chunked": (
        b"POST /api/v1/namespaces/alpha/configmaps HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
        b"GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: kproxy\r\n"
        b"Authorization: Bearer {token}\r\n\r\n"
    ),
    "two-content-lengths": (
        b"POST /api/v1/namespaces/alpha/configmaps HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"Content-Length: 0\r\nContent-Length: 90\r\n\r\n"
        b"GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: kproxy\r\n\r\n"
    ),
    "obfuscated-chunked": (
        b"POST /api/v1/namespaces/alpha/configmaps HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n"
        b"0\r\n\r\n"
        b"GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: kproxy\r\n\r\n"
    ),
    "chunked-not-last": (
        b"POST /api/v1/namespaces/alpha/configmaps HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"Transfer-Encoding: chunked, identity\r\n\r\n"
        b"0\r\n\r\n"
        b"GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: kproxy\r\n\r\n"
    ),
    "obsolete-line-folding": (
        b"GET /api/v1/namespaces/alpha/pods HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"X-Note: harmless\r\n Impersonate-User: system:admin\r\n\r\n"
    ),
    "folded-authorization": (
        b"GET /api/v1/namespaces/alpha/pods HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer\r\n {token}\r\n\r\n"
    ),
    "bare-line-feed": (
        b"GET /api/v1/namespaces/alpha/pods HTTP/1.1\n"
        b"Host: kproxy\nAuthorization: Bearer {token}\n"
        b"X-Note: a\rImpersonate-User: system:admin\n\n"
    ),
    "space-before-colon": (
        b"GET /api/v1/namespaces/alpha/pods HTTP/1.1\r\n"
        b"Host: kproxy\r\nAuthorization: Bearer {token}\r\n"
        b"Impersonate-User : system:admin\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", SMUGGLING)
async def test_request_smuggling_attempts_are_refused_whole(
    federation: Federation, name: str
) -> None:
    data = SMUGGLING[name].replace(b"{token}", federation.token().encode())

    response = await raw_exchange(federation, data)

    assert response.statuses
    assert all(status >= 400 for status in response.statuses)
    assert federation.forwarded() == []


async def test_pipelined_requests_are_each_authorized(federation: Federation) -> None:
    token = federation.token()
    first = request_bytes("GET", PODS, token=token, close=False)
    second = request_bytes("GET", SECRETS, token=token)

    response = await raw_exchange(federation, first + second)

    assert response.statuses == (200, 403)
    assert [r.path for r in federation.forwarded()] == [PODS]
