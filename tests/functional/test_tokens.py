"""Tokens kproxy must refuse, and an issuer outage it must ride out.

A refused token gets a Kubernetes ``Status`` (401, ``Unauthorized``) that kubectl
prints as a one-line error, and nothing reaches the API server on anyone's behalf.
Keys already fetched keep verifying tokens when their issuer goes away, so a source
cluster's API server restart does not lock its scheduler out of every target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import jwt
import pytest

from kproxy.standins.federation import AUDIENCE, LocalFederation
from kproxy.standins.issuer import IssuerStandin, SigningKey

from .clients import http_session, kubectl_for, status_of

PODS: Final = "/api/v1/namespaces/alpha/pods"
SCHEDULER_NAMESPACE: Final = "admiralty"


def forged(issuer: IssuerStandin) -> str:
    """Good claims signed by another key that claims the issuer's key id."""
    genuine = issuer.key("RS256")
    impostor = SigningKey.generate("RS256")
    key = SigningKey(genuine.kid, "RS256", impostor.private_key)
    claims = jwt.decode(good(issuer), options={"verify_signature": False})
    return issuer.sign(claims, key=key)


def expired(issuer: IssuerStandin) -> str:
    return issuer.mint_service_account(
        audience=AUDIENCE,
        namespace=SCHEDULER_NAMESPACE,
        name="multicluster-scheduler",
        now=time.time() - 7200,
        lifetime=3600,
    )


def wrong_audience(issuer: IssuerStandin) -> str:
    return issuer.mint_service_account(
        audience="https://another-target.example",
        namespace=SCHEDULER_NAMESPACE,
        name="multicluster-scheduler",
    )


def good(issuer: IssuerStandin) -> str:
    return issuer.mint_service_account(
        audience=AUDIENCE, namespace=SCHEDULER_NAMESPACE, name="multicluster-scheduler"
    )


BAD_TOKENS: Final[dict[str, Callable[[IssuerStandin], str]]] = {
    "forged": forged,
    "expired": expired,
    "wrong-audience": wrong_audience,
}


def on_behalf_of_someone(federation: LocalFederation) -> list[str]:
    return [
        r.path
        for r in federation.apiserver.requests
        if r.header_values("Impersonate-User")
    ]


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_gets_a_401_status(
    federation: LocalFederation, make: Callable[[IssuerStandin], str]
) -> None:
    token = make(federation.issuer("alpha"))

    async with (
        http_session(federation, token) as session,
        session.get(PODS) as response,
    ):
        body = await response.read()

    assert response.status == 401
    assert response.content_type == "application/json"
    status = status_of(body)
    assert status["code"] == 401
    assert status["reason"] == "Unauthorized"
    assert token not in body.decode()
    assert on_behalf_of_someone(federation) == []


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_kubectl_prints_a_clean_error_for_a_bad_token(
    federation: LocalFederation, make: Callable[[IssuerStandin], str]
) -> None:
    token = make(federation.issuer("alpha"))
    kubectl = kubectl_for(federation, token, name="bad", namespace="alpha")

    result = await kubectl("get", "pods")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "error: You must be logged in to the server"
        " (the server has asked for the client to provide credentials)"
    )
    assert "Traceback" not in result.stderr
    assert token not in result.stderr
    assert on_behalf_of_someone(federation) == []


async def test_a_good_token_still_works_after_its_issuer_goes_down(
    federation: LocalFederation,
) -> None:
    issuer = federation.issuer("alpha")
    before = kubectl_for(federation, good(issuer), name="before", namespace="alpha")
    assert (await before("get", "pods")).returncode == 0

    await issuer.stop()
    # A token under a key id kproxy has never seen makes it try the issuer again;
    # the failed refresh must leave the keys it already has in place.
    unknown = SigningKey.generate("RS256")
    claims = jwt.decode(good(issuer), options={"verify_signature": False})
    async with (
        http_session(federation, issuer.sign(claims, key=unknown)) as session,
        session.get(PODS) as refused,
    ):
        assert refused.status in (401, 503)
        status_of(await refused.read())
    after = kubectl_for(federation, good(issuer), name="after", namespace="alpha")
    result = await after("get", "pods", "-o", "json")

    assert result.returncode == 0, result.stderr
    assert result.json()["items"] == []
    assert PODS in on_behalf_of_someone(federation)
