"""Request records for the observability tests, built the way the handler builds them."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from kproxy.auth.identity import Identity, UserInfo
from kproxy.observe.records import RequestRecord
from kproxy.policy.attributes import RequestInfo
from kproxy.policy.decision import Decision

ALICE = UserInfo(
    username="alpha:alice",
    uid="u-1",
    groups=("alpha:students", "alpha:all"),
    extra=MappingProxyType({"kproxy.io/issuer": ("https://idp.alpha.edu",)}),
)

# A real-looking compact JWS: header {"alg":"RS256","kid":"k"}, payload, signature.
TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ"
    ".eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)

PODS = RequestInfo(
    verb="create",
    path="/api/v1/namespaces/alpha/pods",
    is_resource_request=True,
    api_prefix="api",
    api_version="v1",
    namespace="alpha",
    resource="pods",
)


def identity(user: UserInfo = ALICE) -> Identity:
    return Identity(
        user=user,
        issuer="https://idp.alpha.edu",
        subject="alice@alpha.edu",
        claims={"sub": "alice@alpha.edu"},
        expires_at=2_000_000_000.0,
    )


def allowed_record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "3f1c6a52-8d7e-4b7f-9c1e-2a4b6c8d0e1f",
        "started": 1_700_000_000.25,
        "latency": 0.0125,
        "client_address": "10.0.0.7",
        "method": "POST",
        "uri": "/api/v1/namespaces/alpha/pods?fieldManager=kubectl",
        "user_agent": "kubectl/v1.32.4 (linux/amd64)",
        "status": 201,
        "info": PODS,
        "identity": identity(),
        "decision": Decision(
            allowed=True,
            decided_by="policies/alpha.yaml: rules[0] (pods)",
            university="alpha",
            user=ALICE,
        ),
        "user": ALICE,
    }
    fields.update(overrides)
    return RequestRecord.build(**fields)


def unauthenticated_record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "9b2e0d4c-1a3f-4e5d-8c7b-6a5f4e3d2c1b",
        "started": 1_700_000_100.0,
        "latency": 0.001,
        "client_address": "192.0.2.9",
        "method": "GET",
        "uri": "/api/v1/secrets",
        "user_agent": "curl/8.5.0",
        "status": 401,
        "failure": "expired",
    }
    fields.update(overrides)
    return RequestRecord.build(**fields)
