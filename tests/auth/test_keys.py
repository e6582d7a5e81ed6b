"""Issuer keys: discovery, rotation, outages, refresh limits, TLS and static key sets."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kproxy.auth.keys import KeyFetchError, build_key_set
from kproxy.errors import AuthenticationError, CouldNotCheckError
from kproxy.standins.issuer import IssuerStandin, SigningKey
from tests.auth.conftest import (
    AUDIENCE,
    Clock,
    MakeAuthenticator,
    RecordingEvents,
    jwt_entry,
    settings_for,
)

NO_CACHE = {"tokenCacheSize": 0}


def token_for(issuer: IssuerStandin, clock: Clock, **kwargs: Any) -> str:
    return issuer.mint_service_account(audience=AUDIENCE, now=clock(), **kwargs)


async def test_rotated_keys_are_fetched_when_a_token_names_a_new_kid(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    authenticator = await make_authenticator(
        settings_for(jwt_entry(issuer.url), **NO_CACHE)
    )
    old_token = token_for(issuer, clock)
    await authenticator.authenticate(old_token)

    issuer.rotate()
    clock.advance(10)
    new_identity = await authenticator.authenticate(token_for(issuer, clock))

    assert new_identity.subject == "system:serviceaccount:default:default"
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(old_token)


async def test_overlapping_rotation_accepts_old_and_new_tokens(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    authenticator = await make_authenticator(
        settings_for(jwt_entry(issuer.url), **NO_CACHE)
    )
    old_token = token_for(issuer, clock)

    issuer.rotate(keep_old=True)
    clock.advance(10)
    await authenticator.authenticate(token_for(issuer, clock))

    assert await authenticator.authenticate(old_token)


async def test_unknown_kids_refresh_at_most_once_per_interval(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    settings = settings_for(jwt_entry(issuer.url), unknownKeyRefreshSeconds=10)
    authenticator = await make_authenticator(settings)
    fetched_at_start = issuer.jwks_requests
    clock.advance(10)
    stranger = SigningKey.generate("RS256")

    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(
                issuer.sign(_claims(issuer, clock), key=stranger)
            )
    after_burst = issuer.jwks_requests
    clock.advance(10)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(
            issuer.sign(_claims(issuer, clock), key=stranger)
        )

    assert after_burst == fetched_at_start + 1
    assert issuer.jwks_requests == after_burst + 1
    assert events.failures == ["unknown_key"] * 6


def _claims(issuer: IssuerStandin, clock: Clock) -> dict[str, Any]:
    now = int(clock())
    return {"iss": issuer.url, "sub": "bob", "aud": AUDIENCE, "exp": now + 60}


async def test_last_good_keys_are_kept_while_the_issuer_is_down(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
) -> None:
    authenticator = await make_authenticator(
        settings_for(jwt_entry(issuer.url), **NO_CACHE)
    )
    issuer.fault = "down"
    clock.advance(10)

    stranger = issuer.sign(_claims(issuer, clock), key=SigningKey.generate("RS256"))

    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(stranger)
    identity = await authenticator.authenticate(token_for(issuer, clock))

    assert identity.issuer == issuer.url
    assert authenticator.ready()
    assert events.fetches == [(issuer.url, True), (issuer.url, False)]


@pytest.mark.parametrize("fault", ["down", "garbage"])
async def test_no_keys_yet_means_could_not_check(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    events: RecordingEvents,
    fault: Any,
) -> None:
    issuer.fault = fault
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))

    with pytest.raises(CouldNotCheckError) as caught:
        await authenticator.authenticate(token_for(issuer, clock))
    assert caught.value.status_code == 503
    assert not authenticator.ready()
    assert authenticator.key_ages() == {issuer.url: None}

    issuer.fault = None
    clock.advance(10)
    assert await authenticator.authenticate(token_for(issuer, clock))
    assert authenticator.ready()
    assert authenticator.key_ages() == {issuer.url: 0.0}
    assert events.failures == ["no_keys"]


async def test_slow_issuer_is_given_up_after_the_fetch_timeout(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    issuer.fault = "slow"
    settings = settings_for(jwt_entry(issuer.url), fetchTimeoutSeconds=0.2)
    authenticator = await make_authenticator(settings)

    assert not authenticator.ready()
    with pytest.raises(CouldNotCheckError):
        await authenticator.authenticate(token_for(issuer, clock))


async def test_discovery_naming_another_issuer_is_not_trusted(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator, clock: Clock
) -> None:
    issuer.issuer_override = "https://someone-else.example"
    authenticator = await make_authenticator(settings_for(jwt_entry(issuer.url)))

    assert not authenticator.ready()
    assert issuer.jwks_requests == 0


async def test_oversized_key_set_is_refused(
    issuer: IssuerStandin, make_authenticator: MakeAuthenticator
) -> None:
    settings = settings_for(jwt_entry(issuer.url), maxDocumentBytes=300)
    authenticator = await make_authenticator(settings)

    assert issuer.jwks_requests == 1
    assert not authenticator.ready()


async def test_static_key_set_is_used_without_fetching(
    issuer: IssuerStandin,
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    tmp_path: Path,
) -> None:
    issuer.fault = "down"
    (tmp_path / "cluster-a.jwks").write_text(json.dumps(issuer.jwks()))
    inline = jwt_entry(issuer.url, jwks={"keys": issuer.jwks()["keys"]})
    from_file = jwt_entry(issuer.url, jwks={"file": "cluster-a.jwks"})

    for entry in (inline, from_file):
        authenticator = await make_authenticator(settings_for(entry), base_dir=tmp_path)
        assert authenticator.ready()
        assert await authenticator.authenticate(token_for(issuer, clock))
    assert issuer.discovery_requests == 0


def test_key_set_skips_keys_it_must_not_use() -> None:
    rsa_key = SigningKey.generate("RS256").public_jwk()
    jwks = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**rsa_key, "kid": "enc", "use": "enc"},
            {**rsa_key, "kid": "hs", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "ed"},
            {**rsa_key, "kid": "good"},
        ]
    }

    key_set = build_key_set(jwks, allowed_algorithms=["RS256", "PS256"], obtained_at=0)

    assert {(k.kid, k.algorithm) for k in key_set.keys} == {("good", "RS256")}


def test_key_without_alg_serves_every_allowed_algorithm_of_its_type() -> None:
    jwk = SigningKey.generate("RS256").public_jwk()
    del jwk["alg"]

    key_set = build_key_set(
        {"keys": [jwk]}, allowed_algorithms=["RS256", "PS384", "ES256"], obtained_at=0
    )

    assert sorted(k.algorithm for k in key_set.keys) == ["PS384", "RS256"]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"keys": "x"}, id="keys-not-a-list"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, id="no-usable-key"),
    ],
)
def test_unusable_key_sets_are_errors(document: Any) -> None:
    with pytest.raises(KeyFetchError):
        build_key_set(document, allowed_algorithms=["RS256"], obtained_at=0)


def _certificate_authority() -> tuple[ssl.SSLContext, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(leaf_name)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*_write_chain(leaf, key))
    return context, ca.public_bytes(serialization.Encoding.PEM).decode()


def _write_chain(
    leaf: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[str, str]:
    import tempfile

    directory = Path(tempfile.mkdtemp())
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
async def tls_issuer() -> AsyncIterator[tuple[IssuerStandin, str]]:
    context, ca_pem = _certificate_authority()
    standin = IssuerStandin(ssl_context=context)
    await standin.start()
    yield standin, ca_pem
    await standin.stop()


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-given", "ca-missing"])
async def test_tls_issuer_is_trusted_only_through_its_certificate_authority(
    tls_issuer: tuple[IssuerStandin, str],
    make_authenticator: MakeAuthenticator,
    clock: Clock,
    trusted: bool,
) -> None:
    issuer, ca_pem = tls_issuer
    ca = {"certificateAuthority": ca_pem} if trusted else {}
    entry = jwt_entry(issuer.url, issuer=ca)
    authenticator = await make_authenticator(settings_for(entry))

    assert issuer.url.startswith("https://")
    assert authenticator.ready() is trusted
    if trusted:
        assert await authenticator.authenticate(token_for(issuer, clock))
    else:
        with pytest.raises(CouldNotCheckError):
            await authenticator.authenticate(token_for(issuer, clock))
