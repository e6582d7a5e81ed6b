"""The ``authentication:`` section: which issuers kproxy trusts, and how.

The ``jwt:`` list is kube-apiserver's structured authentication configuration
(``apiserver.config.k8s.io/v1``, ``AuthenticationConfiguration``) field for field, with
the API server's validation rules, so an operator can give kproxy the very file they
give the API server (``configurationFile``) or write the same entries inline.

Three extensions serve federation, and kube-apiserver does not know them:

- ``jwks`` on an entry: a static key set (``{file: PATH}`` or ``{keys: [...]}``) for a
  cluster whose discovery document is not reachable from here. Such an issuer is never
  fetched.
- ``allowedAlgorithms`` on an entry: the signing algorithms accepted from that issuer,
  by default the RS, PS and ES families. ``none`` and the HMAC family are refused here,
  whatever the operator writes: an HMAC "key" taken from a public key set is public.
- ``allowSystemNames`` on the section: whether a token may produce a ``system:`` user
  or group. Off by default, because another cluster's issuer must not be able to speak
  as this cluster's own components.

Issuer URLs must use https, as the API server requires, except that plain http is
accepted for a loopback address (the local demo and the tests), where no one else can
be on the path.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kproxy.auth.expressions import Expression, selects_claim
from kproxy.configfile import Model, load_document, validate
from kproxy.errors import ConfigError

ASYMMETRIC_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
AUTHENTICATION_API_VERSIONS: Final = (
    "apiserver.config.k8s.io/v1",
    "apiserver.config.k8s.io/v1beta1",
    "apiserver.config.k8s.io/v1alpha1",
)
MAX_JWT_AUTHENTICATORS: Final = 64

SigningAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"
]


def _problem(message: str) -> PydanticCustomError:
    # A custom error keeps the message as written; a plain ValueError would be
    # shown to the operator as "value error, ...".
    return PydanticCustomError("kproxy", message)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secure_url(value: str) -> bool:
    """Tell whether ``value`` is https, or plain http to this very machine."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))


def check_issuer_style_url(value: str) -> str:
    """Apply the API server's rules for issuer and discovery URLs."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise _problem(f"invalid URL: {exc}") from exc
    if not is_secure_url(value):
        raise _problem("URL scheme must be https")
    if not host:
        raise _problem("URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise _problem("URL must not contain a username or password")
    if parts.query:
        raise _problem("URL must not contain a query")
    if parts.fragment:
        raise _problem("URL must not contain a fragment")
    return value


class StaticJWKS(Model):
    """A key set given by the operator instead of fetched: a file, or the keys."""

    file: str | None = None
    keys: tuple[dict[str, Any], ...] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StaticJWKS:
        if (self.file is None) == (self.keys is None):
            raise _problem("exactly one of file or keys is required")
        if self.keys is not None and not self.keys:
            raise _problem("keys must not be empty")
        return self


class Issuer(Model):
    url: str
    discovery_url: str | None = Field(default=None, alias="discoveryURL")
    certificate_authority: str = ""
    audiences: tuple[str, ...]
    audience_match_policy: Literal["", "MatchAny"] = ""
    egress_selector_type: Literal["controlplane", "cluster"] | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_issuer_style_url(value)

    @field_validator("discovery_url")
    @classmethod
    def _check_discovery_url(cls, value: str | None) -> str | None:
        return None if value is None else check_issuer_style_url(value)

    @field_validator("certificate_authority")
    @classmethod
    def _check_certificate_authority(cls, value: str) -> str:
        if value:
            try:
                ssl.create_default_context(cadata=value)
            except (ssl.SSLError, ValueError) as exc:
                raise _problem(f"not PEM certificates: {exc}") from exc
        return value

    @field_validator("audiences")
    @classmethod
    def _check_audiences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _problem("at least one audience is required")
        if any(not audience for audience in value):
            raise _problem("an audience must not be empty")
        if len(set(value)) != len(value):
            raise _problem("audiences must not repeat")
        return value

    @model_validator(mode="after")
    def _check_policy(self) -> Issuer:
        if len(self.audiences) > 1 and self.audience_match_policy != "MatchAny":
            raise _problem(
                "audienceMatchPolicy must be MatchAny for multiple audiences"
            )
        if self.discovery_url is not None and (
            self.discovery_url.rstrip("/") == self.url.rstrip("/")
        ):
            raise _problem("discoveryURL must be different from url")
        return self

    @property
    def discovery_document_url(self) -> str:
        """Where discovery is read: ``discoveryURL``, or the well-known path."""
        if self.discovery_url is not None:
            return self.discovery_url
        return self.url.rstrip("/") + "/.well-known/openid-configuration"


class ClaimValidationRule(Model):
    claim: str = ""
    required_value: str = ""
    expression: Expression | None = None
    message: str = ""

    @model_validator(mode="after")
    def _claim_or_expression(self) -> ClaimValidationRule:
        if self.claim and self.expression is not None:
            raise _problem("claim and expression can't both be set")
        if not self.claim and self.expression is None:
            raise _problem("claim or expression is required")
        if self.claim and self.message:
            raise _problem("message may not be specified when claim is set")
        if self.expression is not None and self.required_value:
            raise _problem("requiredValue may not be specified when expression is set")
        return self


class PrefixedClaimOrExpression(Model):
    claim: str = ""
    prefix: str | None = None
    expression: Expression | None = None

    @model_validator(mode="after")
    def _claim_or_expression(self) -> PrefixedClaimOrExpression:
        if self.claim and self.expression is not None:
            raise _problem("claim and expression can't both be set")
        if self.expression is not None and self.prefix is not None:
            raise _problem("prefix may not be specified when expression is set")
        if self.claim and self.prefix is None:
            raise _problem(
                "prefix is required when claim is set; "
                "it can be set to an empty string to disable prefixing"
            )
        return self

    @property
    def is_set(self) -> bool:
        return bool(self.claim) or self.expression is not None


class ClaimOrExpression(Model):
    claim: str = ""
    expression: Expression | None = None

    @model_validator(mode="after")
    def _not_both(self) -> ClaimOrExpression:
        if self.claim and self.expression is not None:
            raise _problem("claim and expression can't both be set")
        return self


_DNS_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_HTTP_PATH: Final = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:@]+$")


class ExtraMapping(Model):
    key: str
    value_expression: Expression

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        domain, slash, path = value.partition("/")
        if not slash or not path or not domain:
            raise _problem("must be a domain-prefixed path (such as 'example.org/foo')")
        if len(domain) > 253 or not _DNS_SUBDOMAIN.match(domain):
            raise _problem("the part before '/' must be a lowercase DNS subdomain")
        if not _HTTP_PATH.match(path):
            raise _problem("the part after '/' must be valid HTTP path characters")
        if value != value.lower():
            raise _problem("must be lowercase")
        if domain in ("kubernetes.io", "k8s.io") or domain.endswith(
            (".kubernetes.io", ".k8s.io")
        ):
            raise _problem(
                "k8s.io, kubernetes.io and their subdomains are reserved for Kubernetes"
            )
        return value


class ClaimMappings(Model):
    username: PrefixedClaimOrExpression
    groups: PrefixedClaimOrExpression = PrefixedClaimOrExpression()
    uid: ClaimOrExpression = ClaimOrExpression()
    extra: tuple[ExtraMapping, ...] = ()

    @field_validator("username")
    @classmethod
    def _username_required(
        cls, value: PrefixedClaimOrExpression
    ) -> PrefixedClaimOrExpression:
        if not value.is_set:
            raise _problem("claim or expression is required")
        return value

    @field_validator("extra")
    @classmethod
    def _unique_keys(cls, value: tuple[ExtraMapping, ...]) -> tuple[ExtraMapping, ...]:
        keys = [mapping.key for mapping in value]
        for key in keys:
            if keys.count(key) > 1:
                raise _problem(f"extra key {key!r} appears more than once")
        return value


class UserValidationRule(Model):
    expression: Expression
    message: str = ""


class JWTAuthenticator(Model):
    """One trusted issuer: how to check its tokens and map them to a user."""

    issuer: Issuer
    claim_validation_rules: tuple[ClaimValidationRule, ...] = ()
    claim_mappings: ClaimMappings
    user_validation_rules: tuple[UserValidationRule, ...] = ()
    # kproxy's extensions, unknown to kube-apiserver.
    jwks: StaticJWKS | None = None
    allowed_algorithms: tuple[SigningAlgorithm, ...] = ASYMMETRIC_ALGORITHMS

    @field_validator("allowed_algorithms", mode="before")
    @classmethod
    def _refuse_symmetric(cls, value: Any) -> Any:
        for algorithm in value if isinstance(value, list | tuple) else ():
            if isinstance(algorithm, str) and (
                algorithm.lower() == "none" or algorithm.upper().startswith("HS")
            ):
                raise _problem(
                    f"algorithm {algorithm!r} is never accepted: "
                    "only RS, PS and ES signatures are"
                )
        return value

    @field_validator("allowed_algorithms")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _problem("at least one algorithm is required")
        return value

    @model_validator(mode="after")
    def _email_verified_used_with_email(self) -> JWTAuthenticator:
        username = self.claim_mappings.username.expression
        if username is None or not selects_claim(username, "email"):
            return self
        others = [rule.expression for rule in self.claim_validation_rules]
        others += [extra.value_expression for extra in self.claim_mappings.extra]
        checked = [username, *(e for e in others if e is not None)]
        if not any(selects_claim(e, "email_verified") for e in checked):
            raise _problem(
                "claims.email_verified must be used in claimMappings.username.expression "
                "or claimMappings.extra[*].valueExpression or "
                "claimValidationRules[*].expression when claims.email is used in "
                "claimMappings.username.expression"
            )
        return self

    @model_validator(mode="after")
    def _unique_rules(self) -> JWTAuthenticator:
        claims = [r.claim for r in self.claim_validation_rules if r.claim]
        sources = [
            r.expression.source for r in self.claim_validation_rules if r.expression
        ]
        users = [r.expression.source for r in self.user_validation_rules]
        for seen in (claims, sources, users):
            if len(set(seen)) != len(seen):
                raise _problem("validation rules must not repeat")
        return self


class AnonymousCondition(Model):
    path: str


class AnonymousAuthConfig(Model):
    """Accepted so that the API server's file loads; kproxy never admits anonymous."""

    enabled: bool = False
    conditions: tuple[AnonymousCondition, ...] = ()


class AuthenticationConfiguration(Model):
    """kube-apiserver's ``AuthenticationConfiguration`` file, as it is written."""

    api_version: Literal[
        "apiserver.config.k8s.io/v1",
        "apiserver.config.k8s.io/v1beta1",
        "apiserver.config.k8s.io/v1alpha1",
    ]
    kind: Literal["AuthenticationConfiguration"]
    jwt: tuple[JWTAuthenticator, ...] = ()
    anonymous: AnonymousAuthConfig | None = None

    @field_validator("jwt")
    @classmethod
    def _unique_issuers(
        cls, value: tuple[JWTAuthenticator, ...]
    ) -> tuple[JWTAuthenticator, ...]:
        return _check_jwt_list(value)


def _check_jwt_list(
    authenticators: tuple[JWTAuthenticator, ...],
) -> tuple[JWTAuthenticator, ...]:
    if len(authenticators) > MAX_JWT_AUTHENTICATORS:
        raise _problem(f"at most {MAX_JWT_AUTHENTICATORS} authenticators are allowed")
    urls = [a.issuer.url for a in authenticators]
    discovery = [
        a.issuer.discovery_url for a in authenticators if a.issuer.discovery_url
    ]
    for seen, what in ((urls, "issuer.url"), (discovery, "issuer.discoveryURL")):
        for value in seen:
            if seen.count(value) > 1:
                raise _problem(f"{what} {value!r} appears more than once")
    return authenticators


PositiveSeconds = Annotated[float, Field(gt=0)]


class AuthenticationSettings(Model):
    """The ``authentication:`` section of kproxy's configuration file.

    Either ``configurationFile`` names a kube-apiserver ``AuthenticationConfiguration``
    file, or ``jwt`` lists the issuers inline; not both.
    """

    configuration_file: str | None = None
    jwt: tuple[JWTAuthenticator, ...] = ()
    allow_system_names: bool = False
    max_token_bytes: Annotated[int, Field(gt=0)] = 16 * 1024
    token_cache_size: Annotated[int, Field(ge=0)] = 4096
    token_cache_seconds: Annotated[float, Field(ge=0)] = 60.0
    key_refresh_seconds: PositiveSeconds = 3600.0
    key_retry_seconds: PositiveSeconds = 10.0
    unknown_key_refresh_seconds: Annotated[float, Field(ge=0)] = 10.0
    fetch_timeout_seconds: PositiveSeconds = 10.0
    max_document_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024

    @field_validator("jwt")
    @classmethod
    def _unique_issuers(
        cls, value: tuple[JWTAuthenticator, ...]
    ) -> tuple[JWTAuthenticator, ...]:
        return _check_jwt_list(value)

    @model_validator(mode="after")
    def _one_source(self) -> AuthenticationSettings:
        if self.configuration_file is not None and self.jwt:
            raise _problem("configurationFile and jwt are mutually exclusive")
        return self


def load_authentication_configuration(path: str | Path) -> AuthenticationSettings:
    """Read a kube-apiserver ``AuthenticationConfiguration`` file.

    The result has that file's issuers and kproxy's defaults for everything else. A
    static key set file named in it is resolved against the file's directory. Raises
    ``ConfigError`` naming the file, line and field of every problem.
    """
    document = load_document(path)
    configuration = validate(document, AuthenticationConfiguration)
    base_dir = Path(path).parent
    jwt = tuple(_resolve_jwks_file(a, base_dir) for a in configuration.jwt)
    return AuthenticationSettings(jwt=jwt)


def resolve_authentication_settings(
    settings: AuthenticationSettings, *, base_dir: Path
) -> AuthenticationSettings:
    """Read ``configurationFile`` if set and make every file path absolute.

    ``base_dir`` is the directory of the file that holds ``settings``. Raises
    ``ConfigError`` when the named file is unreadable or invalid.
    """
    if settings.configuration_file is None:
        jwt = tuple(_resolve_jwks_file(a, base_dir) for a in settings.jwt)
        return settings.model_copy(update={"jwt": jwt})
    path = base_dir / settings.configuration_file
    loaded = load_authentication_configuration(path)
    return settings.model_copy(update={"configuration_file": None, "jwt": loaded.jwt})


def _resolve_jwks_file(
    authenticator: JWTAuthenticator, base_dir: Path
) -> JWTAuthenticator:
    jwks = authenticator.jwks
    if jwks is None or jwks.file is None:
        return authenticator
    resolved = jwks.model_copy(update={"file": str(base_dir / jwks.file)})
    return authenticator.model_copy(update={"jwks": resolved})


__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AUTHENTICATION_API_VERSIONS",
    "AuthenticationConfiguration",
    "AuthenticationSettings",
    "ClaimMappings",
    "ClaimOrExpression",
    "ClaimValidationRule",
    "ConfigError",
    "ExtraMapping",
    "Issuer",
    "JWTAuthenticator",
    "PrefixedClaimOrExpression",
    "StaticJWKS",
    "UserValidationRule",
    "load_authentication_configuration",
    "resolve_authentication_settings",
]
