"""Namespace grants: a namespace owner opening a namespace to federated identities.

A ``NamespaceGrant`` (``kproxy.io/v1alpha1``, namespaced) lives in the namespace it
opens. Its subjects name who is admitted: every identity of a university, every
identity from one issuer (a source cluster), or mapped users and groups. Its rules
name the API groups, resources and verbs, always within that namespace only.

Grants are written by people kproxy's operator does not control, so the guardrails bound
them: a grant in a reserved namespace is ignored entirely; a subject naming a university
the operator did not open to grants, or a forbidden group, is dropped; and grants only
ever apply to identities a university already admitted and mapped, after that
university's own explicit denies. A grant that does not validate is ignored and
reported; the rest keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from kproxy.configfile import Model
from kproxy.policy.attributes import RequestInfo
from kproxy.policy.matching import CompiledRule, compile_rule
from kproxy.policy.model import ResourceVerb

if TYPE_CHECKING:
    from kproxy.auth.identity import Identity
    from kproxy.policy.mapping import MappedIdentity
    from kproxy.policy.policyset import Guardrails

GROUP: Final = "kproxy.io"
VERSION: Final = "v1alpha1"
KIND: Final = "NamespaceGrant"
PLURAL: Final = "namespacegrants"
LIST_PATH: Final = f"/apis/{GROUP}/{VERSION}/{PLURAL}"

Text = Annotated[str, Field(min_length=1, max_length=253)]


class GrantError(ValueError):
    """A ``NamespaceGrant`` that cannot be used, and why."""


class GrantSubject(Model):
    university: Text | None = None
    issuer: Text | None = None
    user: Text | None = None
    group: Text | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> GrantSubject:
        set_fields = [name for name in type(self).model_fields if getattr(self, name)]
        if len(set_fields) != 1:
            raise ValueError(
                "a subject names exactly one of university, issuer, user, group"
            )
        return self


class GrantRule(Model):
    api_groups: list[str] = Field(min_length=1)
    resources: list[Text] = Field(min_length=1)
    verbs: list[ResourceVerb] = Field(min_length=1)


class GrantSpec(Model):
    subjects: list[GrantSubject] = Field(min_length=1)
    rules: list[GrantRule] = Field(min_length=1)


_SPEC: Final = TypeAdapter(GrantSpec)


@dataclass(frozen=True, slots=True)
class CompiledGrant:
    """One usable grant: who it admits and what it allows, in its namespace."""

    namespace: str
    name: str
    universities: frozenset[str]
    issuers: frozenset[str]
    users: frozenset[str]
    groups: frozenset[str]
    rules: tuple[CompiledRule, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def admits(self, identity: Identity, mapped: MappedIdentity) -> bool:
        return (
            mapped.university in self.universities
            or identity.issuer in self.issuers
            or mapped.user.username in self.users
            or not self.groups.isdisjoint(mapped.user.groups)
        )


@dataclass(frozen=True, slots=True)
class GrantIndex:
    """Every usable grant, by namespace."""

    by_namespace: Mapping[str, tuple[CompiledGrant, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def of(cls, grants: Iterable[CompiledGrant]) -> GrantIndex:
        index: dict[str, list[CompiledGrant]] = {}
        for grant in sorted(grants, key=lambda grant: grant.key):
            index.setdefault(grant.namespace, []).append(grant)
        return cls(MappingProxyType({ns: tuple(found) for ns, found in index.items()}))

    def __len__(self) -> int:
        return sum(len(grants) for grants in self.by_namespace.values())

    def allowing(
        self, identity: Identity, mapped: MappedIdentity, request: RequestInfo
    ) -> str | None:
        """Return ``grant NS/NAME`` for the first grant allowing the request, if any."""
        if not request.namespace:
            return None
        for grant in self.by_namespace.get(request.namespace, ()):
            if not grant.admits(identity, mapped):
                continue
            for rule in grant.rules:
                if rule.matches(request):
                    return f"grant {grant.namespace}/{grant.name}"
        return None


def compile_grant(obj: Mapping[str, Any], guardrails: Guardrails) -> CompiledGrant:
    """Turn a ``NamespaceGrant`` object from the API server into a usable grant.

    Raises ``GrantError`` when the object is malformed, sits in a reserved namespace,
    or has no subject left once the guardrails have dropped the ones they forbid.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise GrantError("object has no metadata")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace:
        raise GrantError("object has no namespace or name")
    if guardrails.reserved_namespaces.matches(namespace):
        raise GrantError(f"namespace {namespace!r} is reserved")
    try:
        spec = _SPEC.validate_python(obj.get("spec"))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise GrantError(f"spec.{where}: {first['msg']}") from exc
    return _compiled(namespace, name, spec, guardrails)


def _compiled(
    namespace: str, name: str, spec: GrantSpec, guardrails: Guardrails
) -> CompiledGrant:
    universities = {s.university for s in spec.subjects if s.university}
    if guardrails.grant_universities is not None:
        universities &= guardrails.grant_universities
    groups = {
        s.group
        for s in spec.subjects
        if s.group and not guardrails.forbidden_groups.matches(s.group)
    }
    issuers = {s.issuer for s in spec.subjects if s.issuer}
    users = {
        s.user
        for s in spec.subjects
        if s.user and not guardrails.forbidden_users.matches(s.user)
    }
    if not (universities or issuers or users or groups):
        raise GrantError("no subject is allowed by the operator's guardrails")
    rules = tuple(
        compile_rule(
            f"grant {namespace}/{name}",
            scope="namespaced",
            identities=None,
            namespaces=[namespace],
            api_groups=rule.api_groups,
            resources=rule.resources,
            verbs=rule.verbs,
        )
        for rule in spec.rules
    )
    return CompiledGrant(
        namespace=namespace,
        name=name,
        universities=frozenset(universities),
        issuers=frozenset(issuers),
        users=frozenset(users),
        groups=frozenset(groups),
        rules=rules,
    )
