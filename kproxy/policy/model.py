"""The ``UniversityPolicy`` file, as a schema.

The operator's side, the ``federation:`` section of the main configuration, is in
``kproxy.policy.settings``.

Each university's admins write one ``UniversityPolicy`` file. It admits identities
(an issuer plus matchers on verified claims), says which Kubernetes user each becomes,
and lists what those users may do. The operator's settings are guardrails around the
file: a university can narrow or extend the identity its issuer's claim mappings
produced, but only under its own prefixes, only for issuers the operator gave it, and
never into a reserved namespace or a forbidden group.

The schema derives from ``kproxy.configfile.Model``, so every problem is reported with
its file, line and field. Keys are camelCase, as in Kubernetes manifests.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator

from kproxy.configfile import Model

ResourceVerb = Literal[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "*",
]

ANY_VERB: Final[ResourceVerb] = "*"

_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_PATTERN: Final = re.compile(rf"^{_DNS_LABEL}$")
_NAMESPACE_GLOB: Final = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS: Final = frozenset(
    {
        "username",
        "uid",
        "subject",
        "email",
        "idp",
        "serviceAccountNamespace",
        "serviceAccountName",
    }
)

Name = Annotated[str, Field(pattern=_NAME_PATTERN.pattern, max_length=63)]
NamespacePattern = Annotated[
    str, Field(pattern=_NAMESPACE_GLOB.pattern, min_length=1, max_length=63)
]
NonEmpty = Annotated[str, Field(min_length=1, max_length=253)]


def check_template(template: str) -> str:
    """Refuse a username or extra template naming an unknown placeholder."""
    for placeholder in _PLACEHOLDER.findall(template):
        if placeholder.startswith("claims."):
            if not placeholder[len("claims.") :]:
                raise ValueError("'{claims.}' needs a claim name")
            continue
        if placeholder not in TEMPLATE_FIELDS:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(
                f"unknown placeholder {{{placeholder}}}; use one of {known} or "
                "{claims.NAME}"
            )
    if template.count("{") != template.count("}"):
        raise ValueError("unbalanced braces in template")
    return template


# A university's policy file.


class ServiceAccountMatcher(Model):
    """Matches the ``kubernetes.io`` claim of a service-account token."""

    namespace: NonEmpty
    name: NonEmpty = Field(default="*", description="A name or a '*' glob.")


class IdentityMapping(Model):
    """The Kubernetes user an admitted identity becomes."""

    username: NonEmpty = Field(
        default="{username}",
        description="Template under the university's forced prefix; placeholders: "
        "{username} (from the issuer's claim mappings), {uid}, {subject}, {email}, "
        "{idp}, {serviceAccountNamespace}, {serviceAccountName}, {claims.NAME}.",
    )
    groups: list[NonEmpty] = Field(
        default_factory=list,
        description="Fixed groups, under the forced group prefix. The entry's name "
        "is always added.",
    )
    keep_groups: list[NonEmpty] = Field(
        default_factory=list,
        description="Groups from the issuer's claim mappings to keep (exact or "
        "trailing '*'), placed under the forced group prefix.",
    )
    extra: dict[NonEmpty, list[NonEmpty]] = Field(
        default_factory=dict,
        description="Extra values (templates) to set, by key.",
    )
    keep_extra: list[NonEmpty] = Field(
        default_factory=list,
        description="Extra keys from the issuer's claim mappings to keep.",
    )

    @field_validator("username")
    @classmethod
    def _username_template(cls, template: str) -> str:
        return check_template(template)

    @field_validator("extra")
    @classmethod
    def _extra_templates(cls, extra: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, values in extra.items():
            if key != key.lower() or "/" not in key:
                raise ValueError(
                    f"extra key {key!r} must be lower-case and qualified by a domain"
                )
            if key.startswith(("authentication.kubernetes.io/", "kubernetes.io/")):
                raise ValueError(f"extra key {key!r} is reserved for Kubernetes")
            for value in values:
                check_template(value)
        return extra


class AdmittedIdentity(Model):
    """Which verified identities the university admits, and who they become.

    Every matcher that is set must hold; a list matches when any of its items does.
    """

    name: Name
    issuer: NonEmpty = Field(
        description="An issuer URL, or the short name the operator gave it."
    )
    subjects: list[NonEmpty] | None = Field(
        default=None, description="Subjects (exact, or a '*' glob)."
    )
    groups: list[NonEmpty] | None = Field(
        default=None,
        description="The identity must have one of these groups from the issuer's "
        "claim mappings.",
    )
    email_domains: list[NonEmpty] | None = Field(
        default=None, description="The verified email must be in one of these domains."
    )
    idps: list[NonEmpty] | None = Field(
        default=None, description="Values of CILogon's 'idp' claim."
    )
    service_account: ServiceAccountMatcher | None = None
    user: IdentityMapping = Field(default_factory=IdentityMapping)


class Rule(Model):
    """What admitted identities may do in namespaces."""

    name: Name | None = None
    identities: list[Name] | None = Field(
        default=None, description="Entries of 'identities' this rule applies to."
    )
    namespaces: list[NamespacePattern] = Field(min_length=1)
    api_groups: list[str] = Field(min_length=1)
    resources: list[NonEmpty] = Field(min_length=1)
    verbs: list[ResourceVerb] = Field(min_length=1)


class ClusterRule(Model):
    """What admitted identities may do across all namespaces or at cluster scope."""

    name: Name | None = None
    identities: list[Name] | None = None
    api_groups: list[str] = Field(default_factory=list)
    resources: list[NonEmpty] = Field(default_factory=list)
    verbs: list[ResourceVerb | Literal["head", "post", "put", "options"]] = Field(
        min_length=1
    )
    non_resource_urls: list[NonEmpty] = Field(
        default_factory=list,
        alias="nonResourceURLs",
        description="Paths such as '/version' or '/apis/*'.",
    )

    @model_validator(mode="after")
    def _resources_or_urls(self) -> ClusterRule:
        has_resources = bool(self.resources) and bool(self.api_groups)
        if has_resources == bool(self.non_resource_urls):
            raise ValueError(
                "set either apiGroups and resources, or nonResourceURLs, not both"
            )
        return self


class Deny(Model):
    """A request the university refuses even where a rule or grant would allow it."""

    name: Name | None = None
    identities: list[Name] | None = None
    namespaces: list[NamespacePattern] | None = Field(
        default=None, description="Omitted: every namespace and cluster scope."
    )
    api_groups: list[str] = Field(default_factory=lambda: ["*"])
    resources: list[NonEmpty] = Field(min_length=1)
    verbs: list[ResourceVerb] = Field(default_factory=lambda: [ANY_VERB])


class PolicyMetadata(Model):
    name: Name = Field(description="The university, as named in the guardrails.")


class UniversityPolicy(Model):
    """A ``UniversityPolicy`` file, written by one university's admins."""

    api_version: Literal["kproxy.io/v1alpha1"]
    kind: Literal["UniversityPolicy"]
    metadata: PolicyMetadata
    identities: list[AdmittedIdentity] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    cluster_rules: list[ClusterRule] = Field(default_factory=list)
    denies: list[Deny] = Field(default_factory=list)
