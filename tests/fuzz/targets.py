"""What the fuzzers check: each parser of hostile input either refuses it cleanly or
produces something that keeps kproxy's promises.

Three entry points read bytes an attacker chooses before anything is verified: the
request-attribute parser (method, path, query), the header sanitizer (every client
header) and the token pre-parser and verifier (the bearer token). Each function here
takes such input, runs the real code, and raises ``AssertionError`` if a promise is
broken or any exception other than the documented refusal escapes. The hypothesis
properties in ``tests/security/test_properties.py`` and the atheris harness in
``python -m tests.fuzz`` drive the same functions.
"""

from __future__ import annotations

import asyncio
import base64
import json
from functools import cache
from pathlib import Path

from multidict import CIMultiDict

from kproxy.auth.config import AuthenticationSettings
from kproxy.auth.identity import UserInfo
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.errors import AuthenticationError, BadRequestError
from kproxy.policy.attributes import parse_request
from kproxy.proxy.headers import normalized_name, upstream_headers
from kproxy.standins.issuer import SigningKey

ISSUER = "https://issuer.fuzz.example"
AUDIENCE = "https://kproxy.fuzz.example"
KPROXY_CREDENTIAL = "Bearer kproxy-own-credential"
PEER = "192.0.2.7"
USER = UserInfo(
    username="alpha:scheduler",
    uid="uid-1",
    groups=("alpha:scheduler",),
    extra={"kproxy.io/issuer": (ISSUER,)},
)
_OWN_IMPERSONATION = 1 + 1 + 1 + 1  # user, uid, one group, one extra value


def check_request_attributes(method: str, raw_path: str, raw_query: str) -> None:
    """Parse or refuse; a parsed resource request names no segment that could move."""
    try:
        info = parse_request(method, raw_path, raw_query)
    except BadRequestError:
        return
    for value in (info.namespace, info.resource, info.subresource, info.name):
        assert "/" not in value
        assert value not in (".", "..")
    if info.is_resource_request:
        assert info.api_prefix in ("api", "apis")


def check_header_sanitizer(pairs: list[tuple[str, str]]) -> None:
    """Whatever the client sends, the API server hears kproxy's identity claims only."""
    client: CIMultiDict[str] = CIMultiDict(pairs)
    try:
        sent = upstream_headers(
            client, USER, authorization=KPROXY_CREDENTIAL, peer=PEER
        )
    except BadRequestError:
        return
    assert sent.getall("Authorization") == [KPROXY_CREDENTIAL]
    assert sent.getall("Impersonate-User") == [USER.username]
    assert sent.getall("Impersonate-Group") == list(USER.groups)
    assert sent.getall("X-Forwarded-For") == [PEER]
    claims = [
        name
        for name in sent
        if normalized_name(name).startswith(("impersonate-", "x-remote-"))
    ]
    assert len(claims) == _OWN_IMPERSONATION
    for name in sent:
        assert normalized_name(name) not in ("connection", "forwarded", "x-real-ip")


def check_token(token: str) -> None:
    """No token made without the issuer's key is accepted, and refusals are clean."""
    loop, authenticator = _authenticator()
    try:
        loop.run_until_complete(authenticator.authenticate(token))
    except AuthenticationError:
        return
    raise AssertionError("a token nobody signed was accepted")


@cache
def _authenticator() -> tuple[asyncio.AbstractEventLoop, TokenAuthenticator]:
    # One loop and one authenticator for a whole fuzzing run: static keys, so no I/O.
    loop = asyncio.new_event_loop()
    key = SigningKey.generate("ES256")
    settings = AuthenticationSettings.model_validate(
        {
            "jwt": [
                {
                    "issuer": {"url": ISSUER, "audiences": [AUDIENCE]},
                    "claimMappings": {"username": {"claim": "sub", "prefix": "f:"}},
                    "jwks": {"keys": [key.public_jwk()]},
                }
            ],
            "tokenCacheSize": 0,
        }
    )

    async def build() -> TokenAuthenticator:
        return TokenAuthenticator(settings, base_dir=Path())

    return loop, loop.run_until_complete(build())


def token_from_parts(header: object, claims: object, signature: str) -> str:
    """A compact token from any JSON values, as a fuzzer builds one."""

    def encode(value: object) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{encode(header)}.{encode(claims)}.{signature}"
