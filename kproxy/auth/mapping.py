"""From verified claims to a Kubernetes user, as kube-apiserver's JWT authenticator does.

Everything here runs after the signature, issuer, audience and lifetime were checked,
and is pure: the same claims and configuration always give the same user or the same
refusal. The order follows the API server: claim validation rules, then the username
(with the ``email_verified`` check when the username claim is ``email``), groups, uid
and extra values, then the user validation rules.

Two refusals are kproxy's own, because a proxy that impersonates must be stricter than
an API server that only authenticates: an empty username (the API server would accept
one from a claim), and a ``system:`` username or group, which would let a remote issuer
speak as this cluster's own components, unless the operator allows it.

A string ``jti`` becomes the ``authentication.kubernetes.io/credential-id`` extra value
``JTI=<jti>``, as the API server records it, so audit logs on both sides agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from kproxy.auth.config import (
    ClaimValidationRule,
    JWTAuthenticator,
    PrefixedClaimOrExpression,
)
from kproxy.auth.events import FailureReason
from kproxy.auth.expressions import (
    EvaluationError,
    activation_for,
    as_bool,
    as_string,
    as_string_list,
)
from kproxy.auth.identity import UserInfo

CREDENTIAL_ID_KEY: Final = "authentication.kubernetes.io/credential-id"
SYSTEM_PREFIX: Final = "system:"


class ClaimsRejectedError(Exception):
    """The claims are not acceptable; ``reason`` is for metrics, the message for
    the client."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ClaimMapper:
    """The claim rules and mappings of one issuer."""

    authenticator: JWTAuthenticator
    allow_system_names: bool = False

    def user_for(self, claims: Mapping[str, Any]) -> UserInfo:
        """Validate ``claims`` and map them to a user; raise ``ClaimsRejectedError`` if not."""
        activation = activation_for("claims", claims)
        self._validate_claims(claims, activation)
        user = self._map(claims, activation)
        self._refuse_empty_or_system_names(user)
        self._validate_user(user)
        return user

    def _validate_claims(self, claims: Mapping[str, Any], activation: Any) -> None:
        for rule in self.authenticator.claim_validation_rules:
            if rule.expression is None:
                _check_required_claim(claims, rule)
                continue
            try:
                passed = as_bool(
                    rule.expression.evaluate(activation), what="validation"
                )
            except EvaluationError as exc:
                raise ClaimsRejectedError(
                    "claim_rule", f"claim validation failed: {exc}"
                ) from exc
            if not passed:
                raise ClaimsRejectedError("claim_rule", _failed_rule(rule.message))

    def _map(self, claims: Mapping[str, Any], activation: Any) -> UserInfo:
        mappings = self.authenticator.claim_mappings
        try:
            return UserInfo(
                username=self._username(claims, activation),
                uid=self._uid(claims, activation),
                groups=_groups(mappings.groups, claims, activation),
                extra=MappingProxyType(self._extra(claims, activation)),
            )
        except EvaluationError as exc:
            raise ClaimsRejectedError(
                "mapping", f"claim mapping failed: {exc}"
            ) from exc

    def _username(self, claims: Mapping[str, Any], activation: Any) -> str:
        mapping = self.authenticator.claim_mappings.username
        if mapping.expression is not None:
            value = mapping.expression.evaluate(activation)
            return as_string(value, what="username")
        username = _string_claim(claims, mapping.claim)
        if not username:
            # A prefix alone names nobody: refuse it as an empty username.
            raise ClaimsRejectedError("mapping", "the token maps to an empty username")
        if mapping.claim == "email":
            _check_email_verified(claims)
        return (mapping.prefix or "") + username

    def _uid(self, claims: Mapping[str, Any], activation: Any) -> str:
        mapping = self.authenticator.claim_mappings.uid
        if mapping.expression is not None:
            return as_string(mapping.expression.evaluate(activation), what="uid")
        if not mapping.claim:
            return ""
        return _string_claim(claims, mapping.claim)

    def _extra(
        self, claims: Mapping[str, Any], activation: Any
    ) -> dict[str, tuple[str, ...]]:
        extra: dict[str, tuple[str, ...]] = {}
        jti = claims.get("jti")
        if isinstance(jti, str) and jti:
            extra[CREDENTIAL_ID_KEY] = (f"JTI={jti}",)
        for mapping in self.authenticator.claim_mappings.extra:
            value = mapping.value_expression.evaluate(activation)
            values = as_string_list(value, what="extra")
            if values:
                extra[mapping.key] = values
        return extra

    def _refuse_empty_or_system_names(self, user: UserInfo) -> None:
        if not user.username:
            raise ClaimsRejectedError("mapping", "the token maps to an empty username")
        if self.allow_system_names:
            return
        if user.username.startswith(SYSTEM_PREFIX):
            raise ClaimsRejectedError(
                "system_name", "the token maps to a username with the 'system:' prefix"
            )
        if any(group.startswith(SYSTEM_PREFIX) for group in user.groups):
            raise ClaimsRejectedError(
                "system_name", "the token maps to a group with the 'system:' prefix"
            )

    def _validate_user(self, user: UserInfo) -> None:
        rules = self.authenticator.user_validation_rules
        if not rules:
            return
        activation = activation_for("user", _user_object(user))
        for rule in rules:
            try:
                passed = as_bool(
                    rule.expression.evaluate(activation), what="validation"
                )
            except EvaluationError as exc:
                raise ClaimsRejectedError(
                    "user_rule", f"user validation failed: {exc}"
                ) from exc
            if not passed:
                raise ClaimsRejectedError("user_rule", _failed_rule(rule.message))


def _failed_rule(message: str) -> str:
    return f"validation rule failed: {message}" if message else "validation rule failed"


def _check_required_claim(claims: Mapping[str, Any], rule: ClaimValidationRule) -> None:
    if rule.claim not in claims:
        raise ClaimsRejectedError(
            "claim_rule", f"required claim {rule.claim!r} is missing"
        )
    # Only string values are compared, as in the API server.
    if claims[rule.claim] != rule.required_value:
        raise ClaimsRejectedError(
            "claim_rule",
            f"required claim {rule.claim!r} does not have the required value",
        )


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None and name not in claims:
        raise EvaluationError(f"claim {name!r} is missing")
    if not isinstance(value, str):
        raise EvaluationError(f"claim {name!r} is not a string")
    return value


def _check_email_verified(claims: Mapping[str, Any]) -> None:
    # OpenID Connect Core 1.0, section 5.1: an email address the provider did not
    # verify may belong to someone else. Absent means the provider does not say.
    if "email_verified" not in claims:
        return
    verified = claims["email_verified"]
    if not isinstance(verified, bool):
        raise EvaluationError("claim 'email_verified' is not a boolean")
    if not verified:
        raise ClaimsRejectedError(
            "claim_rule", "the token's email address is not verified"
        )


def _groups(
    mapping: PrefixedClaimOrExpression, claims: Mapping[str, Any], activation: Any
) -> tuple[str, ...]:
    if mapping.expression is not None:
        return as_string_list(mapping.expression.evaluate(activation), what="groups")
    if not mapping.claim or mapping.claim not in claims:
        return ()
    value = claims[mapping.claim]
    # A single string is one group: identity providers that send a "role" do so.
    if isinstance(value, str):
        groups: list[str] = [value]
    elif isinstance(value, list) and all(isinstance(g, str) for g in value):
        groups = value
    else:
        raise EvaluationError(
            f"claim {mapping.claim!r} is not a string or a list of strings"
        )
    return tuple((mapping.prefix or "") + group for group in groups)


def _user_object(user: UserInfo) -> dict[str, Any]:
    """The ``authentication.k8s.io/v1`` ``UserInfo`` that user rules read."""
    return {
        "username": user.username,
        "uid": user.uid,
        "groups": list(user.groups),
        "extra": {key: list(values) for key, values in user.extra.items()},
    }
