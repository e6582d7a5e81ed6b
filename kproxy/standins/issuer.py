"""An OpenID Connect issuer in-process, for the tests and the local demo.

It serves what kproxy reads from a real issuer, the discovery document at
``/.well-known/openid-configuration`` and the key set at ``/openid/v1/jwks`` (the paths
of a Kubernetes service-account issuer), over plain HTTP or TLS. It signs tokens shaped
as real issuers shape them: projected service-account tokens as kube-apiserver mints
them, and a person's ID token as CILogon sends one.

Faults can be switched on to test what kproxy does when an issuer misbehaves:
``down`` answers 503, ``slow`` answers after a delay, ``garbage`` answers a body that is
not JSON. ``rotate`` replaces the signing keys, keeping the old ones published if asked,
as a real rotation overlaps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Fault = Literal["down", "slow", "garbage"]
JWKS_PATH: Final = "/openid/v1/jwks"
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key the issuer signs with, and what it publishes for it."""

    kid: str
    algorithm: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, algorithm: str) -> SigningKey:
        kid = uuid.uuid4().hex[:16]
        if algorithm.startswith("ES"):
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[algorithm]
            return cls(kid, algorithm, ec.generate_private_key(curve))
        return cls(kid, algorithm, rsa.generate_private_key(65537, 2048))

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


@dataclass
class IssuerStandin:
    """A running issuer: ``await start()`` returns its URL, ``await stop()`` ends it.

    ``url`` is what tokens carry as ``iss`` and what discovery names. Counters tell
    tests how often kproxy fetched each document.
    """

    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    algorithms: Sequence[str] = ("RS256", "ES256")
    slow_seconds: float = 5.0
    fault: Fault | None = None
    keys: list[SigningKey] = field(default_factory=list)
    published: list[SigningKey] = field(default_factory=list)
    discovery_requests: int = 0
    jwks_requests: int = 0
    url: str = ""
    issuer_override: str | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Generate keys and listen (port 0 picks a free one); return the URL."""
        if not self.keys:
            self.keys = [SigningKey.generate(a) for a in self.algorithms]
            self.published = list(self.keys)
        # A short shutdown so that stopping a "slow" issuer does not wait for it.
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.ssl_context
        )
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://{self.host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def rotate(self, *, keep_old: bool = False) -> None:
        """Sign with new keys from now on; unpublish the old ones unless ``keep_old``."""
        old = self.published
        self.keys = [SigningKey.generate(a) for a in self.algorithms]
        self.published = [*self.keys, *(old if keep_old else [])]

    def key(self, algorithm: str = "RS256") -> SigningKey:
        return next(k for k in self.keys if k.algorithm == algorithm)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.published]}

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)
        return app

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        self.discovery_requests += 1
        document = {
            "issuer": self.issuer_override or self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(self.algorithms),
        }
        return await self._answer(document)

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.jwks_requests += 1
        return await self._answer(self.jwks())

    async def _answer(self, document: Mapping[str, Any]) -> web.StreamResponse:
        if self.fault == "down":
            return web.Response(status=503, text="issuer is down")
        if self.fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.fault == "garbage":
            return web.Response(body=b"\x00not json{", content_type="application/json")
        return web.json_response(document)

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        algorithm: str = "RS256",
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign any claims, for tests that need a token no issuer would make."""
        signing_key = key or self.key(algorithm)
        header = {"kid": signing_key.kid, **(headers or {})}
        # PyJWS rather than jwt.encode: tests need claims pyjwt would refuse to make.
        payload = json.dumps(dict(claims), separators=(",", ":")).encode()
        return jwt.PyJWS().encode(
            payload, signing_key.private_key, algorithm=algorithm, headers=header
        )

    def mint_service_account(
        self,
        *,
        audience: str | Sequence[str],
        namespace: str = "default",
        name: str = "default",
        pod: str | None = "workload-0",
        node: str | None = "node-1",
        lifetime: float = 3600,
        now: float | None = None,
        algorithm: str = "RS256",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A projected service-account token exactly as kube-apiserver mints it."""
        issued = int(time.time() if now is None else now)
        kubernetes: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
        }
        if pod is not None:
            kubernetes["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
        if node is not None:
            kubernetes["node"] = {"name": node, "uid": str(uuid.uuid4())}
        claims = {
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "exp": issued + int(lifetime),
            "iat": issued,
            "iss": self.url,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": kubernetes,
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            **(extra_claims or {}),
        }
        return self.sign(claims, algorithm=algorithm)

    def mint_person(
        self,
        *,
        audience: str | Sequence[str],
        email: str = "ada@example.edu",
        groups: Sequence[str] | str = ("researchers",),
        idp: str = "https://idp.example.edu/idp/shibboleth",
        email_verified: bool | None = None,
        lifetime: float = 900,
        now: float | None = None,
        algorithm: str = "RS256",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A person's ID token as CILogon sends one (``idp`` names the campus IdP)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "http://cilogon.org/serverA/users/"
            + hashlib.sha256(email.encode()).hexdigest()[:8],
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime),
            "jti": f"https://cilogon.org/oauth2/idToken/{uuid.uuid4().hex}",
            "email": email,
            "given_name": email.split("@")[0].capitalize(),
            "idp": idp,
            "idp_name": "Example University",
            "eppn": email,
            "groups": groups if isinstance(groups, str) else list(groups),
            **({} if email_verified is None else {"email_verified": email_verified}),
            **(extra_claims or {}),
        }
        return self.sign(claims, algorithm=algorithm)
