"""The operator's guardrails: the ``federation:`` section of kproxy's configuration.

The operator says which universities exist, which token issuers each may claim (by a
short name a policy file can use, so policy files stay valid when URLs differ between
clusters), the username and group prefixes forced on everything a university maps, the
users, groups and namespaces no university may ever reach, and whether namespace owners
may open their namespaces to universities through ``NamespaceGrant`` objects. Nothing a
university's policy file or a grant says can go past these limits.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from kproxy.configfile import Model
from kproxy.policy.model import Name, NamespacePattern, NonEmpty


class University(Model):
    """One university the operator federates with, and what it may claim."""

    issuers: dict[Name, NonEmpty] = Field(
        min_length=1,
        description="Issuers this university may admit identities from, by a short "
        "name its policy file can use instead of the URL.",
    )
    username_prefix: NonEmpty = Field(
        description="Forced on every username the university maps, e.g. 'alpha:'."
    )
    group_prefix: NonEmpty = Field(
        description="Forced on every group the university maps, e.g. 'alpha:'."
    )

    @field_validator("issuers")
    @classmethod
    def _issuer_urls(cls, issuers: dict[str, str]) -> dict[str, str]:
        for url in issuers.values():
            if not url.startswith("https://"):
                raise ValueError(f"issuer {url!r} must be an https URL")
        return issuers

    @field_validator("username_prefix", "group_prefix")
    @classmethod
    def _prefix_outside_system(cls, prefix: str) -> str:
        if prefix.startswith("system:") or not prefix.endswith(":"):
            raise ValueError(
                f"prefix {prefix!r} must end with ':' and not start with 'system:'"
            )
        return prefix


class NamespaceGrantSettings(Model):
    """Whether namespace owners may admit universities with ``NamespaceGrant``."""

    enabled: bool = False
    universities: list[Name] | None = Field(
        default=None,
        description="Universities a grant may admit; all of them when omitted.",
    )


class FederationSettings(Model):
    """The ``federation:`` section of kproxy's configuration: the guardrails."""

    policy_directory: NonEmpty = Field(
        default="policies",
        description="Directory of UniversityPolicy files, relative to the "
        "configuration file.",
    )
    universities: dict[Name, University] = Field(default_factory=dict)
    forbidden_users: list[NonEmpty] = Field(
        default_factory=lambda: ["system:admin", "system:anonymous"],
        description="Usernames never impersonated; a trailing '*' matches a prefix.",
    )
    forbidden_groups: list[NonEmpty] = Field(
        default_factory=lambda: ["system:masters", "system:nodes"],
        description="Groups never impersonated; a trailing '*' matches a prefix.",
    )
    reserved_namespaces: list[NamespacePattern] = Field(
        default_factory=lambda: [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "kproxy-system",
        ],
        description="Namespaces no university and no grant may reach; globs allowed.",
    )
    namespace_grants: NamespaceGrantSettings = Field(
        default_factory=NamespaceGrantSettings
    )

    @model_validator(mode="after")
    def _prefixes_are_distinct(self) -> FederationSettings:
        for kind in ("username_prefix", "group_prefix"):
            seen: dict[str, str] = {}
            for name, university in self.universities.items():
                prefix = getattr(university, kind)
                for other_prefix, other in seen.items():
                    if prefix.startswith(other_prefix) or other_prefix.startswith(
                        prefix
                    ):
                        raise ValueError(
                            f"universities {other!r} and {name!r} have overlapping "
                            f"{kind.replace('_', ' ')}es"
                        )
                seen[prefix] = name
        return self
