"""OpenID Provider metadata, from the issuer's discovery document.

Only the fields the login uses are kept. The document's ``issuer`` must equal the
issuer asked for, character for character (OpenID Connect Discovery 1.0, section 4.3):
otherwise one provider could hand out metadata, and so keys, for another. Every
endpoint must be ``https`` for the same reason as the issuer itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from kproxy.login.errors import LoginError
from kproxy.login.transport import ProviderSession

WELL_KNOWN: Final = "/.well-known/openid-configuration"

# Asymmetric algorithms only: a symmetric one would make the client secret, which a
# public client does not keep secret, a signing key.
ACCEPTED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The endpoints and signing algorithms of one OpenID provider."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str = ""
    id_token_signing_algorithms: tuple[str, ...] = ("RS256",)


def discover(session: ProviderSession, issuer: str) -> ProviderMetadata:
    """Fetch and check ``issuer``'s discovery document.

    Raises ``LoginError`` when it cannot be fetched, names another issuer, lacks a
    required endpoint or offers no signing algorithm kproxy accepts.
    """
    untrusted = session.get_json(issuer.rstrip("/") + WELL_KNOWN)
    if untrusted.get("issuer") != issuer:
        raise LoginError(
            f"the discovery document of {issuer!r} names the issuer "
            f"{untrusted.get('issuer')!r}"
        )
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_endpoint(untrusted, "authorization_endpoint"),
        token_endpoint=_endpoint(untrusted, "token_endpoint"),
        jwks_uri=_endpoint(untrusted, "jwks_uri"),
        device_authorization_endpoint=_endpoint(
            untrusted, "device_authorization_endpoint", required=False
        ),
        id_token_signing_algorithms=_algorithms(untrusted, issuer),
    )


def _endpoint(untrusted: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = untrusted.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or urlsplit(value).scheme != "https":
        raise LoginError(f"the discovery document's {name} {value!r} is not https")
    return value


def _algorithms(untrusted: dict[str, Any], issuer: str) -> tuple[str, ...]:
    offered = untrusted.get("id_token_signing_alg_values_supported", ["RS256"])
    if not isinstance(offered, list):
        raise LoginError(
            f"{issuer!r}: id_token_signing_alg_values_supported is no list"
        )
    accepted = tuple(alg for alg in offered if alg in ACCEPTED_ALGORITHMS)
    if not accepted:
        raise LoginError(f"{issuer!r} signs ID tokens with none of {offered!r}")
    return accepted
