"""Forged, stretched and misdirected tokens, sent through the running proxy.

Each attack is a request for something the alpha scheduler may do (list pods in
``alpha``), carrying a token that must not be accepted. The assertion is made twice:
the client gets a ``Status`` naming the refusal, and the API server stand-in recorded
no request made on anyone's behalf.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from kproxy.standins.issuer import JWKS_PATH
from tests.security.conftest import MODULE_LOOP, StartFederation
from tests.security.federation import AUDIENCE, Federation
from tests.security.forging import (
    DROP,
    b64,
    hs256_with_public_key,
    ps256,
    rs256,
    scheduler_claims,
    segment,
    unsigned,
)

pytestmark = MODULE_LOOP

PODS = "/api/v1/namespaces/alpha/pods"


async def answer(
    federation: Federation, token: str, *, path: str = PODS
) -> tuple[int, dict[str, Any]]:
    async with (
        federation.session() as session,
        session.get(path, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, json.loads(await response.read())


async def assert_refused(
    federation: Federation, token: str, *, code: int = 401, path: str = PODS
) -> dict[str, Any]:
    status, body = await answer(federation, token, path=path)
    assert status == code
    assert body["kind"] == "Status"
    assert body["code"] == code
    assert federation.forwarded() == []
    return body


async def assert_accepted(federation: Federation, token: str) -> None:
    status, body = await answer(federation, token)
    assert status == 200, body
    assert federation.forwarded()[-1].user is not None


async def test_a_good_token_reaches_the_api_server_as_the_mapped_user(
    federation: Federation,
) -> None:
    await assert_accepted(federation, federation.token())

    (arrived,) = federation.forwarded()
    assert arrived.user is not None
    assert arrived.user.username == "alpha:scheduler"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_unsigned_token_is_rejected(federation: Federation, alg: str) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, unsigned(claims, alg))


async def test_hmac_keyed_with_the_issuers_public_key_is_rejected(
    federation: Federation,
) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(
        federation, hs256_with_public_key(claims, federation.keys.alpha)
    )


@pytest.mark.parametrize("alg", ["HS256", "HS512", "EdDSA", "RS1", "ES256K", "rs256"])
async def test_signature_under_a_foreign_algorithm_name_is_rejected(
    federation: Federation, alg: str
) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, rs256(claims, federation.keys.alpha, alg=alg))


async def test_key_used_with_an_algorithm_it_was_not_published_for_is_rejected(
    federation: Federation,
) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, ps256(claims, federation.keys.alpha))


async def test_algorithm_outside_the_issuers_allow_list_is_rejected(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(
        jwt_options={"alpha": {"allowedAlgorithms": ["ES256"]}}
    )

    await assert_refused(federation, federation.token())


@pytest.mark.parametrize(
    "kid", ["no-such-key", "../../../etc/passwd", "", 7, None], ids=repr
)
async def test_key_id_tricks_are_rejected(federation: Federation, kid: Any) -> None:
    # Signed by a key nobody published, claiming to be alpha's.
    claims = scheduler_claims(federation.alpha)
    token = rs256(claims, federation.keys.spare, kid=DROP if kid is None else kid)

    await assert_refused(federation, token)


async def test_key_of_another_issuer_named_by_its_kid_is_rejected(
    federation: Federation,
) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, rs256(claims, federation.keys.beta))


@pytest.mark.parametrize("pointer", ["jku", "x5u"])
async def test_key_urls_in_the_header_are_never_fetched(
    federation: Federation, pointer: str
) -> None:
    # The stray issuer publishes a key the attacker holds; kproxy must not go there.
    stray = federation.stray
    fetched = stray.jwks_requests
    claims = scheduler_claims(federation.alpha)
    token = rs256(claims, federation.keys.stray, **{pointer: stray.url + JWKS_PATH})

    await assert_refused(federation, token)
    assert stray.jwks_requests == fetched


async def test_embedded_jwk_is_not_trusted(federation: Federation) -> None:
    attacker = federation.keys.spare
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, rs256(claims, attacker, jwk=attacker.public_jwk()))


@pytest.mark.parametrize(
    "header",
    [{"crit": ["exp"], "exp": 1}, {"crit": []}, {"b64": False, "crit": ["b64"]}],
    ids=["crit-exp", "crit-empty", "b64-false"],
)
async def test_critical_header_extensions_are_refused(
    federation: Federation, header: dict[str, Any]
) -> None:
    claims = scheduler_claims(federation.alpha)

    await assert_refused(federation, rs256(claims, federation.keys.alpha, **header))


ISSUER_VARIANTS: dict[str, Callable[[str], str]] = {
    "trailing-slash": lambda url: url + "/",
    "upper-case": lambda url: url.upper(),
    "plain-http": lambda url: url.replace("https://", "http://"),
    "leading-space": lambda url: " " + url,
    "dot-segment": lambda url: url + "/.",
    "default-port-spelled": lambda url: url.replace("127.0.0.1", "127.000.000.001"),
    "fragment": lambda url: url + "#",
}


@pytest.mark.parametrize("variant", ISSUER_VARIANTS)
async def test_issuer_spelled_differently_is_not_trusted(
    federation: Federation, variant: str
) -> None:
    issuer = ISSUER_VARIANTS[variant](federation.alpha.url)
    claims = scheduler_claims(federation.alpha, iss=issuer)

    await assert_refused(federation, rs256(claims, federation.keys.alpha))


@pytest.mark.parametrize(
    "aud",
    [
        DROP,
        [],
        ["https://another-cluster.example"],
        "https://another-cluster.example",
        [AUDIENCE + "/"],
        [AUDIENCE.upper()],
        42,
        {"aud": AUDIENCE},
    ],
    ids=["missing", "empty", "other", "other-str", "slash", "case", "number", "object"],
)
async def test_token_not_meant_for_this_cluster_is_rejected(
    federation: Federation, aud: Any
) -> None:
    claims = scheduler_claims(federation.alpha, aud=aud)

    await assert_refused(federation, rs256(claims, federation.keys.alpha))


@pytest.mark.parametrize(
    "aud", [AUDIENCE, ["https://another.example", AUDIENCE]], ids=["string", "array"]
)
async def test_audience_as_string_or_array_with_ours_is_accepted(
    federation: Federation, aud: Any
) -> None:
    claims = scheduler_claims(federation.alpha, aud=aud)

    await assert_accepted(federation, rs256(claims, federation.keys.alpha))


def _lifetime_cases() -> dict[str, dict[str, Any]]:
    now = int(time.time())
    return {
        "exp-missing": {"exp": DROP},
        "exp-past": {"exp": now - 1},
        "exp-string": {"exp": str(now + 600)},
        "exp-true": {"exp": True},
        "exp-null": {"exp": None},
        "exp-infinity": {"exp": float("inf")},
        "exp-nan": {"exp": float("nan")},
        "exp-beyond-float": {"exp": 10**400},
        "nbf-future": {"nbf": now + 3600},
        "nbf-string": {"nbf": str(now)},
        "nbf-nan": {"nbf": float("nan")},
        "nbf-beyond-float": {"nbf": 10**400},
    }


@pytest.mark.parametrize("case", _lifetime_cases())
async def test_token_outside_its_lifetime_is_rejected(
    federation: Federation, case: str
) -> None:
    claims = scheduler_claims(federation.alpha, **_lifetime_cases()[case])

    await assert_refused(federation, rs256(claims, federation.keys.alpha))


@pytest.mark.parametrize(
    "change",
    [{"nbf": 60}, {"iat": 3600}, {"iat": DROP}, {"nbf": DROP}],
    ids=["nbf-within-leeway", "iat-future", "iat-missing", "nbf-missing"],
)
async def test_lifetime_edges_the_api_server_accepts_are_accepted(
    federation: Federation, change: dict[str, Any]
) -> None:
    now = int(time.time())
    shifted = {k: v if v is DROP else now + v for k, v in change.items()}
    claims = scheduler_claims(federation.alpha, **shifted)

    await assert_accepted(federation, rs256(claims, federation.keys.alpha))


async def test_valid_token_of_an_issuer_no_university_claims_is_forbidden(
    federation: Federation,
) -> None:
    body = await assert_refused(federation, federation.token("stray"), code=403)

    assert body["reason"] == "Forbidden"


async def test_one_universitys_token_cannot_reach_anothers_namespace(
    federation: Federation,
) -> None:
    await assert_refused(
        federation,
        federation.token("alpha"),
        code=403,
        path="/api/v1/namespaces/beta/pods",
    )


async def test_one_universitys_key_cannot_sign_for_anothers_issuer(
    federation: Federation,
) -> None:
    claims = scheduler_claims(federation.beta)

    await assert_refused(federation, rs256(claims, federation.keys.alpha))


async def test_token_over_the_header_limit_never_reaches_the_verifier(
    federation: Federation,
) -> None:
    claims = scheduler_claims(federation.alpha, padding="x" * 20_000)
    token = rs256(claims, federation.keys.alpha)

    async with (
        federation.session() as session,
        session.get(PODS, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status in (400, 413, 431)
    assert federation.forwarded() == []


async def test_token_over_the_token_limit_is_rejected(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(authentication={"maxTokenBytes": 1024})
    claims = scheduler_claims(federation.alpha, padding="x" * 2_000)

    body = await assert_refused(federation, rs256(claims, federation.keys.alpha))
    assert "larger" in body["message"]


MALFORMED = {
    "one-segment": "abc",
    "two-segments": "a.b",
    "four-segments": "a.b.c.d",
    "dots": "....",
    "not-base64": "%%%.%%%.%%%",
    "header-array": segment([1]) + "." + segment({}) + ".c2ln",
    "claims-array": segment({"alg": "RS256"}) + "." + segment([1]) + ".c2ln",
    "claims-not-json": segment({"alg": "RS256"}) + "." + b64(b"{not json") + ".c2ln",
    "header-huge-number": b64(b'{"alg":"RS256","kid":1e999}') + ".e30.c2ln",
    "padding-inside": "eyJ=.eyJ=.c2ln",
    "jwe-five-segments": ".".join(
        [segment({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a", "b", "c", "d"]
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_token_is_rejected(federation: Federation, name: str) -> None:
    await assert_refused(federation, MALFORMED[name])


async def test_nested_token_is_not_unwrapped(federation: Federation) -> None:
    inner = federation.token()
    outer = rs256(inner.encode(), federation.keys.alpha, cty="JWT")

    await assert_refused(federation, outer)


@pytest.mark.parametrize(
    "claims",
    [{"sub": "system:kube-controller-manager"}, {"groups": ["system:masters"]}],
    ids=["system-user", "system-group"],
)
async def test_token_mapping_to_a_system_name_is_rejected(
    start_federation: StartFederation, claims: dict[str, Any]
) -> None:
    # An operator who reuses the API server's own file may drop the prefixes.
    mappings = {
        "username": {"claim": "sub", "prefix": ""},
        "groups": {"claim": "groups", "prefix": ""},
    }
    federation = await start_federation(
        jwt_options={"alpha": {"claimMappings": mappings}}
    )
    token = rs256(scheduler_claims(federation.alpha, **claims), federation.keys.alpha)

    body = await assert_refused(federation, token)
    assert "system:" in body["message"]


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer  ", "Token abc", ""],
    ids=["basic", "bearer-empty", "bearer-blank", "other-scheme", "empty"],
)
async def test_anything_but_one_bearer_token_is_unauthorized(
    federation: Federation, authorization: str
) -> None:
    async with (
        federation.session() as session,
        session.get(PODS, headers={"Authorization": authorization}) as response,
    ):
        assert response.status == 401
        assert (await response.json())["kind"] == "Status"
    assert federation.forwarded() == []


async def test_unknown_key_ids_refresh_the_issuers_keys_at_most_once(
    federation: Federation,
) -> None:
    alpha = federation.alpha
    before = alpha.jwks_requests
    claims = scheduler_claims(alpha)

    for _ in range(20):
        token = rs256(claims, federation.keys.spare, kid=uuid.uuid4().hex)
        await assert_refused(federation, token)

    assert alpha.jwks_requests - before <= 1
