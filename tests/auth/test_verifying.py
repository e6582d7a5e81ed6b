"""What kube-apiserver's JWT authenticator checks, checked against kproxy's verifier."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from kproxy.auth.mapping import CREDENTIAL_ID_KEY
from kproxy.errors import AuthenticationError
from kproxy.standins.issuer import IssuerStandin, SigningKey
from tests.auth.conftest import (
    AUDIENCE,
    Clock,
    MakeAuthenticator,
    RecordingEvents,
    jwt_entry,
    settings_for,
)


def base_claims(issuer: IssuerStandin, clock: Clock) -> dict[str, Any]:
    now = int(clock())
    return {
        "iss": issuer.url,
        "sub": "alice",
        "aud": [AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "groups": ["physics"],
    }


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


REMOVE = object()

# (changes to the claims, relative to the clock where a number is given as "now+N")
CLAIM_CASES = [
    pytest.param(
        {"iss": "{url}/"}, "untrusted_issuer", id="issuer-with-trailing-slash"
    ),
    pytest.param({"iss": "{URL}"}, "untrusted_issuer", id="issuer-in-other-case"),
    pytest.param(
        {"iss": "https://other.example"}, "untrusted_issuer", id="other-issuer"
    ),
    pytest.param({"iss": REMOVE}, "untrusted_issuer", id="issuer-missing"),
    pytest.param({"iss": ["{url}"]}, "untrusted_issuer", id="issuer-not-a-string"),
    pytest.param({"aud": REMOVE}, "audience", id="audience-missing"),
    pytest.param({"aud": ["someone-else"]}, "audience", id="audience-other"),
    pytest.param({"aud": "someone-else"}, "audience", id="audience-other-string"),
    pytest.param({"aud": [7]}, "audience", id="audience-not-strings"),
    pytest.param({"exp": REMOVE}, "expired", id="exp-missing"),
    pytest.param({"exp": "now-1"}, "expired", id="exp-one-second-ago"),
    pytest.param({"exp": "tomorrow"}, "expired", id="exp-not-a-number"),
    pytest.param({"exp": True}, "expired", id="exp-boolean"),
    pytest.param({"nbf": "now+301"}, "not_yet_valid", id="nbf-beyond-leeway"),
    pytest.param({"nbf": "soon"}, "malformed", id="nbf-not-a-number"),
    pytest.param({"sub": REMOVE}, "mapping", id="username-claim-missing"),
    pytest.param({"sub": 42}, "malformed", id="sub-not-a-string"),
    pytest.param({"sub": ""}, "mapping", id="empty-username"),
    pytest.param({"groups": ["a", 1]}, "mapping", id="groups-not-strings"),
]

ACCEPTED_CASES = [
    pytest.param({"aud": AUDIENCE}, id="audience-as-string"),
    pytest.param({"aud": ["other", AUDIENCE]}, id="audience-list-with-ours"),
    pytest.param({"exp": "now+0"}, id="exp-exactly-now"),
    pytest.param({"nbf": "now+299"}, id="nbf-within-leeway"),
    pytest.param({"nbf": REMOVE}, id="nbf-absent"),
    pytest.param({"iat": "now+3600"}, id="iat-in-the-future-is-not-checked"),
    pytest.param({"iat": REMOVE}, id="iat-absent"),
    pytest.param({"groups": REMOVE}, id="groups-absent"),
    pytest.param({"jku": "https://attacker.example/jwks"}, id="jku-claim-ignored"),
]


def apply(claims: dict[str, Any], changes: dict[str, Any], clock: Clock, url: str):
    for name, value in changes.items():
        if value is REMOVE:
            claims.pop(name, None)
        elif isinstance(value, str) and value.startswith("now"):
            claims[name] = int(clock()) + int(value[3:])
        elif isinstance(value, str):
            claims[name] = value.replace("{url}", url).replace("{URL}", url.upper())
        elif isinstance(value, list):
            claims[name] = [
                v.replace("{url}", url) if isinstance(v, str) else v for v in value
            ]
        else:
            claims[name] = value
    return claims


@pytest.mark.parametrize(("changes", "reason"), CLAIM_CASES)
async def test_claims_the_api_server_rejects_are_rejected(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
    changes: dict[str, Any],
    reason: str,
) -> None:
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))
    claims = apply(base_claims(issuer, clock), changes, clock, issuer.url)

    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(issuer.sign(claims))

    assert caught.value.status_code == 401
    assert events.failures == [reason]


@pytest.mark.parametrize("changes", ACCEPTED_CASES)
async def test_claims_the_api_server_accepts_are_accepted(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    changes: dict[str, Any],
) -> None:
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))
    claims = apply(base_claims(issuer, clock), changes, clock, issuer.url)

    identity = await authenticator.authenticate(issuer.sign(claims))

    assert identity.user.username == "cluster-a:alice"
    assert identity.subject == "alice"
    assert identity.expires_at == claims["exp"]


def _none_token(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _hs256_with_public_key(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    key = issuer.key("RS256")
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    signing_input = f"{header}.{b64(claims)}".encode()
    import hashlib
    import hmac

    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return (
        f"{header}.{b64(claims)}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    )


def _es256_claiming_rsa_kid(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    rsa_kid = issuer.key("RS256").kid
    return issuer.sign(claims, algorithm="ES256", headers={"kid": rsa_kid})


def _rs512(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    return issuer.sign(claims, algorithm="RS512", key=issuer.key("RS256"))


def _tampered(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    header, _, signature = issuer.sign(claims).split(".")
    return f"{header}.{b64({**claims, 'sub': 'mallory'})}.{signature}"


def _unknown_kid(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    return issuer.sign(claims, key=SigningKey.generate("RS256"))


def _attacker_jku(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    attacker = SigningKey.generate("RS256")
    headers = {
        "jku": "https://attacker.example/jwks",
        "x5u": "https://attacker.example",
    }
    return issuer.sign(claims, key=attacker, headers=headers)


def _embedded_jwk(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    attacker = SigningKey.generate("RS256")
    return issuer.sign(claims, key=attacker, headers={"jwk": attacker.public_jwk()})


def _critical_extension(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    return issuer.sign(claims, headers={"crit": ["exp"], "exp": 1})


def _kid_not_a_string(issuer: IssuerStandin, claims: dict[str, Any]) -> str:
    _, payload, signature = issuer.sign(claims).split(".")
    return f"{b64({'alg': 'RS256', 'kid': 7})}.{payload}.{signature}"


TOKEN_CASES = [
    pytest.param(_none_token, "algorithm", id="alg-none"),
    pytest.param(_hs256_with_public_key, "algorithm", id="hs256-keyed-with-public-key"),
    pytest.param(_rs512, "algorithm", id="algorithm-outside-allow-list"),
    pytest.param(_es256_claiming_rsa_kid, "algorithm", id="key-type-mismatch"),
    pytest.param(_tampered, "bad_signature", id="payload-tampered"),
    pytest.param(_unknown_kid, "unknown_key", id="unknown-kid"),
    pytest.param(_attacker_jku, "unknown_key", id="jku-and-x5u-ignored"),
    pytest.param(_embedded_jwk, "unknown_key", id="embedded-jwk-ignored"),
    pytest.param(_critical_extension, "malformed", id="crit-header-refused"),
    pytest.param(_kid_not_a_string, "malformed", id="kid-not-a-string"),
]


@pytest.mark.parametrize(("make_token", "reason"), TOKEN_CASES)
async def test_signatures_the_api_server_rejects_are_rejected(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
    make_token: Any,
    reason: str,
) -> None:
    entry = jwt_entry(issuer.url, allowedAlgorithms=["RS256", "ES256"])
    authenticator = await make_authenticator(settings_for(entry))

    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(make_token(issuer, base_claims(issuer, clock)))

    assert events.failures == [reason]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="one-part"),
        pytest.param("a.b.c", id="not-base64-json"),
        pytest.param(f"{b64({'alg': 'RS256'})}.WyJhIl0.sig", id="claims-not-object"),
        pytest.param('{"iss": "x"}', id="json-serialization"),
    ],
)
async def test_malformed_tokens_are_rejected(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    events: RecordingEvents,
    token: str,
) -> None:
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))

    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(token)

    assert events.failures == ["malformed"]


async def test_oversized_token_is_refused_before_parsing(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    settings = settings_for(jwt_entry(issuer.url), maxTokenBytes=2048)
    authenticator = await make_authenticator(settings)
    claims = {**base_claims(issuer, clock), "padding": "x" * 2048}

    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(issuer.sign(claims))

    assert events.failures == ["too_large"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_service_account_token_from_another_cluster_is_accepted(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    algorithm: str,
) -> None:
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))
    token = issuer.mint_service_account(
        audience=AUDIENCE,
        namespace="ns1",
        name="admiralty",
        now=clock(),
        algorithm=algorithm,
    )

    identity = await authenticator.authenticate(token)

    assert identity.user.username == "cluster-a:system:serviceaccount:ns1:admiralty"
    assert identity.claims["kubernetes.io"]["namespace"] == "ns1"
    jti = identity.claims["jti"]
    assert identity.user.extra[CREDENTIAL_ID_KEY] == (f"JTI={jti}",)
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        pytest.param("admins", ("cluster-a:admins",), id="groups-as-string"),
        pytest.param(["a", "b"], ("cluster-a:a", "cluster-a:b"), id="groups-as-list"),
        pytest.param([], (), id="groups-empty-list"),
    ],
)
async def test_groups_claim_may_be_a_string_or_a_list(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    groups: Any,
    expected: tuple[str, ...],
) -> None:
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))
    claims = {**base_claims(issuer, clock), "groups": groups}

    identity = await authenticator.authenticate(issuer.sign(claims))

    assert identity.user.groups == expected


def person_entry(url: str, **changes: Any) -> dict[str, Any]:
    mappings = {
        "username": {"claim": "email", "prefix": ""},
        "groups": {"claim": "groups", "prefix": "cilogon:"},
    }
    return jwt_entry(url, claimMappings=mappings, **changes)


@pytest.mark.parametrize(
    ("email_verified", "accepted"),
    [
        pytest.param(None, True, id="email-verified-absent"),
        pytest.param(True, True, id="email-verified-true"),
        pytest.param(False, False, id="email-verified-false"),
    ],
)
async def test_email_username_requires_verified_email_when_stated(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    email_verified: bool | None,
    accepted: bool,
) -> None:
    authenticator = await make_authenticator(settings_for(person_entry(issuer.url)))
    token = issuer.mint_person(
        audience=AUDIENCE, email_verified=email_verified, now=clock()
    )

    if accepted:
        identity = await authenticator.authenticate(token)
        assert identity.user.username == "ada@example.edu"
        assert identity.user.groups == ("cilogon:researchers",)
    else:
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(token)


SYSTEM_CASES = [
    pytest.param(
        {"username": {"claim": "sub", "prefix": ""}},
        {"sub": "system:serviceaccount:kube-system:admin"},
        id="system-username",
    ),
    pytest.param(
        {
            "username": {"claim": "sub", "prefix": "cluster-a:"},
            "groups": {"claim": "groups", "prefix": ""},
        },
        {"groups": ["system:masters"]},
        id="system-group",
    ),
    pytest.param(
        {"username": {"expression": "'system:' + claims.sub"}},
        {},
        id="system-username-from-expression",
    ),
]


@pytest.mark.parametrize(("mappings", "changes"), SYSTEM_CASES)
@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "allowed"])
async def test_system_names_from_a_token_need_allow_system_names(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
    mappings: dict[str, Any],
    changes: dict[str, Any],
    allowed: bool,
) -> None:
    entry = jwt_entry(issuer.url, claimMappings=mappings)
    settings = settings_for(entry, allowSystemNames=allowed)
    authenticator = await make_authenticator(settings)
    token = issuer.sign({**base_claims(issuer, clock), **changes})

    if allowed:
        identity = await authenticator.authenticate(token)
        assert "system:" in identity.user.username + ",".join(identity.user.groups)
    else:
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(token)
        assert events.failures == ["system_name"]


CEL_MAPPINGS = {
    "username": {"expression": "'uni:' + claims.email.split('@')[0]"},
    "groups": {"expression": "claims.roles.split(',').map(r, 'role:' + r)"},
    "uid": {"expression": "claims.sub"},
    "extra": [
        {"key": "example.edu/idp", "valueExpression": "claims.idp"},
        {
            "key": "example.edu/admin",
            "valueExpression": "(has(claims.is_admin) && claims.is_admin) ? 'true' : ''",
        },
    ],
}


async def test_cel_mappings_compute_the_user(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    # The API server demands that an email-based username checks email_verified.
    rules = [{"expression": "claims.email_verified == true"}]
    entry = jwt_entry(
        issuer.url, claimMappings=CEL_MAPPINGS, claimValidationRules=rules
    )
    authenticator = await make_authenticator(settings_for(entry))
    claims = {
        **base_claims(issuer, clock),
        "email": "grace@example.edu",
        "email_verified": True,
        "roles": "dev,ops",
        "idp": "https://idp.example.edu",
        "jti": "abc",
    }

    identity = await authenticator.authenticate(issuer.sign(claims))

    assert identity.user.username == "uni:grace"
    assert identity.user.groups == ("role:dev", "role:ops")
    assert identity.user.uid == "alice"
    assert dict(identity.user.extra) == {
        CREDENTIAL_ID_KEY: ("JTI=abc",),
        "example.edu/idp": ("https://idp.example.edu",),
    }


RULE_CASES = [
    pytest.param(
        {"claimValidationRules": [{"claim": "hd", "requiredValue": "example.edu"}]},
        {"hd": "example.edu"},
        None,
        id="required-claim-present",
    ),
    pytest.param(
        {"claimValidationRules": [{"claim": "hd", "requiredValue": "example.edu"}]},
        {},
        "claim_rule",
        id="required-claim-missing",
    ),
    pytest.param(
        {"claimValidationRules": [{"claim": "hd", "requiredValue": "example.edu"}]},
        {"hd": "evil.example"},
        "claim_rule",
        id="required-claim-other-value",
    ),
    pytest.param(
        {
            "claimValidationRules": [
                {"expression": "claims.exp - claims.nbf <= 3600", "message": "too long"}
            ]
        },
        {},
        None,
        id="lifetime-rule-passes",
    ),
    pytest.param(
        {
            "claimValidationRules": [
                {"expression": "claims.exp - claims.nbf <= 60", "message": "too long"}
            ]
        },
        {},
        "claim_rule",
        id="lifetime-rule-fails",
    ),
    pytest.param(
        {"claimValidationRules": [{"expression": "claims.missing == 'x'"}]},
        {},
        "claim_rule",
        id="rule-on-missing-claim-fails",
    ),
    pytest.param(
        {"claimValidationRules": [{"expression": "claims.sub"}]},
        {},
        "claim_rule",
        id="rule-not-boolean",
    ),
    pytest.param(
        {
            "userValidationRules": [
                {"expression": "!user.username.startsWith('cluster-a:a')"}
            ]
        },
        {},
        "user_rule",
        id="user-rule-fails",
    ),
    pytest.param(
        {
            "userValidationRules": [
                {"expression": "user.groups.all(g, g.startsWith('cluster-a:'))"}
            ]
        },
        {},
        None,
        id="user-rule-passes",
    ),
]


@pytest.mark.parametrize(("rules", "changes", "reason"), RULE_CASES)
async def test_validation_rules_are_applied(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
    rules: dict[str, Any],
    changes: dict[str, Any],
    reason: str | None,
) -> None:
    authenticator = await make_authenticator(
        settings_for(jwt_entry(issuer.url, **rules))
    )
    token = issuer.sign({**base_claims(issuer, clock), **changes})

    if reason is None:
        await authenticator.authenticate(token)
    else:
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(token)
    assert events.failures == ([] if reason is None else [reason])


async def test_cel_mapping_returning_wrong_type_is_rejected(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    mappings = {"username": {"expression": "claims.iat"}}
    entry = jwt_entry(issuer.url, claimMappings=mappings)
    authenticator = await make_authenticator(settings_for(entry))

    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(issuer.sign(base_claims(issuer, clock)))

    assert events.failures == ["mapping"]


async def test_identity_is_cached_until_the_token_expires(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    settings = settings_for(jwt_entry(issuer.url), tokenCacheSeconds=3600)
    authenticator = await make_authenticator(settings)
    claims = {**base_claims(issuer, clock), "exp": int(clock()) + 30}
    token = issuer.sign(claims)

    first = await authenticator.authenticate(token)
    second = await authenticator.authenticate(token)
    clock.advance(31)

    assert second is first
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(token)
    assert events.cache == [False, True, False]
    assert events.failures == ["expired"]


async def test_cache_entries_last_no_longer_than_the_cache_period(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    settings = settings_for(jwt_entry(issuer.url), tokenCacheSeconds=10)
    authenticator = await make_authenticator(settings)
    token = issuer.sign(base_claims(issuer, clock))

    first = await authenticator.authenticate(token)
    clock.advance(11)
    again = await authenticator.authenticate(token)

    assert again is not first
    assert again == first
    assert events.cache == [False, False]


async def test_another_issuers_token_is_not_theirs_to_accept(
    make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    first, second = IssuerStandin(), IssuerStandin()
    await first.start()
    await second.start()
    try:
        entries = (jwt_entry(first.url), jwt_entry(second.url))
        authenticator = await make_authenticator(settings_for(*entries))
        # Signed by the second issuer's key but claiming the first issuer.
        claims = {**base_claims(first, clock)}
        forged = second.sign(claims)
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(forged)
        assert await authenticator.authenticate(second.sign(base_claims(second, clock)))
    finally:
        await first.stop()
        await second.stop()


async def test_tokens_are_not_logged(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="kproxy")
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))
    good = issuer.mint_person(audience=AUDIENCE, now=clock())
    bad = _tampered(issuer, base_claims(issuer, clock))

    await authenticator.authenticate(good)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bad)

    for token in (good, bad):
        for part in token.split("."):
            assert part not in caplog.text
    assert "ada@example.edu" not in caplog.text


def test_jwt_module_is_the_one_pinned() -> None:
    # The verifier relies on PyJWK binding one algorithm per key (pyjwt >= 2.10).
    assert tuple(int(p) for p in jwt.__version__.split(".")[:2]) >= (2, 10)
