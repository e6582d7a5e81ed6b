"""Paths that one parser reads as the alpha namespace and another as somewhere else.

kube-apiserver decodes ``%2F`` into a separator, keeps empty segments and never
resolves dot segments, while proxies and libraries in between may do any of these
differently. kproxy refuses every path whose meaning could change on the way, so each
attack below must end in a 400 ``Status`` with nothing forwarded, whatever it aimed at.
"""

from __future__ import annotations

import pytest

from tests.security.conftest import MODULE_LOOP
from tests.security.federation import Federation, raw_exchange, request_bytes

pytestmark = MODULE_LOOP

ESCAPES = {
    "dot-dot": "/api/v1/namespaces/alpha/../kube-system/secrets",
    "dot-dot-encoded": "/api/v1/namespaces/alpha/%2e%2e/kube-system/secrets",
    "dot-dot-upper": "/api/v1/namespaces/alpha/%2E%2E/kube-system/secrets",
    "dot-dot-mixed": "/api/v1/namespaces/alpha/.%2e/kube-system/secrets",
    "dot": "/api/v1/namespaces/alpha/./pods",
    "encoded-slash": "/api/v1/namespaces/alpha%2F..%2Fkube-system/secrets",
    "encoded-slash-lower": "/api/v1/namespaces/alpha%2f..%2fkube-system/secrets",
    "double-encoded": "/api/v1/namespaces/alpha/%252e%252e/kube-system/secrets",
    "double-slash-front": "//api/v1/namespaces/kube-system/secrets",
    "double-slash-middle": "/api/v1/namespaces//kube-system/secrets",
    "trailing-slash": "/api/v1/namespaces/alpha/pods/",
    "semicolon": "/api/v1/namespaces/alpha/pods;/../../kube-system/secrets",
    "semicolon-encoded": "/api/v1/namespaces/alpha/pods%3B/secrets",
    "backslash": "/api/v1/namespaces/alpha\\..\\kube-system/secrets",
    "nul": "/api/v1/namespaces/alpha%00/pods",
    "bad-escape": "/api/v1/namespaces/alpha/pods%zz",
    "lone-percent": "/api/v1/namespaces/alpha/pods%",
    "overlong": "/api/v1/namespaces/alpha/pods/" + "a" * 5000,
    "non-ascii-raw": "/api/v1/namespaces/alph\u0430/pods",
    "non-ascii-encoded": "/api/v1/namespaces/alph%D0%B0/pods",
    "query-semicolon": "/api/v1/namespaces/alpha/pods?watch=0;watch=1",
    "query-bad-escape": "/api/v1/namespaces/alpha/pods?watch=%zz",
    "absolute-form": "https://127.0.0.1/api/v1/namespaces/kube-system/secrets",
    "asterisk": "*",
}


@pytest.mark.parametrize("name", ESCAPES)
async def test_path_that_could_be_read_two_ways_is_refused(
    federation: Federation, name: str
) -> None:
    data = request_bytes("GET", ESCAPES[name], token=federation.token())

    response = await raw_exchange(federation, data)

    assert response.status in (400, 403, 414), response.body
    assert federation.forwarded() == []
    # aiohttp's HTTP parser answers what it cannot parse itself, in HTTP/1.0 and
    # plain text; everything that reached kproxy's handler gets a Status.
    if response.head.startswith("HTTP/1.1"):
        assert response.json()["kind"] == "Status"


async def test_the_plain_path_is_allowed(federation: Federation) -> None:
    data = request_bytes(
        "GET", "/api/v1/namespaces/alpha/pods?limit=5", token=federation.token()
    )

    response = await raw_exchange(federation, data)

    assert response.status == 200
    assert [r.path for r in federation.forwarded()] == ["/api/v1/namespaces/alpha/pods"]
