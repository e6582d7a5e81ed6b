"""Forged tokens: compact JWS built by hand, so no library refuses to make them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kproxy.standins.issuer import IssuerStandin, SigningKey
from tests.security.federation import AUDIENCE, SCHEDULER_NAMESPACE

DROP = object()
"""A claim or header value meaning: leave this field out."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def scheduler_claims(issuer: IssuerStandin, **changes: Any) -> dict[str, Any]:
    """A scheduler's service-account claims from ``issuer``, with changes applied."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer.url,
        "sub": f"system:serviceaccount:{SCHEDULER_NAMESPACE}:scheduler",
        "aud": [AUDIENCE],
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": SCHEDULER_NAMESPACE,
            "serviceaccount": {"name": "scheduler", "uid": str(uuid.uuid4())},
        },
    }
    return _changed(claims, changes)


def _changed(values: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    result = {**values, **changes}
    return {k: v for k, v in result.items() if v is not DROP}


def rs256(
    claims: Mapping[str, Any] | bytes,
    key: SigningKey,
    **header: Any,
) -> str:
    """Sign with RSA PKCS#1 v1.5 SHA-256 under any header, ``kid`` and ``alg`` default."""
    full = _changed({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, header)
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{segment(full)}.{b64(payload)}".encode()
    private = key.private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


def ps256(claims: Mapping[str, Any], key: SigningKey) -> str:
    """Sign with RSA-PSS, a family the key was not published for."""
    header = {"alg": "PS256", "kid": key.kid, "typ": "JWT"}
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    private = key.private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(
        signing_input,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    return f"{signing_input.decode()}.{b64(signature)}"


def hs256_with_public_key(claims: Mapping[str, Any], key: SigningKey) -> str:
    """The key-confusion forgery: HMAC keyed with the issuer's published public key."""
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64(mac)}"


def unsigned(claims: Mapping[str, Any], alg: str = "none") -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims)}."
