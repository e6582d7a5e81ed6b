"""Admitting a verified identity into a university, and the user it becomes.

The input is an ``Identity``: the ``UserInfo`` the issuer's claim mappings produced plus
the verified claims. An ``identities`` entry of a university's policy admits it when the
issuer is the entry's and every matcher set on the entry holds. The entry then renders
the Kubernetes user: the username template under the university's forced prefix, the
entry's own group (its name) and fixed groups, the groups kept from the issuer's mapping,
all under the forced group prefix, and the extras.

Only verified values are read here. An email counts only when ``email_verified`` is not
false. A service account is read from the ``kubernetes.io`` claim and must agree with
the subject ``system:serviceaccount:NS:NAME``. Any value rendered into a username,
group or extra must be non-empty and free of control characters, or the identity is not
mapped at all: a half-rendered name could collide with another user's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from kproxy.auth.identity import Identity, UserInfo
from kproxy.policy.matching import Patterns

_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"


class MappingError(Exception):
    """The identity was admitted but a value it needs is missing or unusable."""


@dataclass(frozen=True, slots=True)
class MappedIdentity:
    """An identity admitted by one entry of one university, and its Kubernetes user."""

    university: str
    entry: str
    user: UserInfo
    source: str


@dataclass(frozen=True, slots=True)
class IdentityEntry:
    """One compiled ``identities`` entry: matchers plus the mapping it applies."""

    university: str
    name: str
    source: str
    issuer: str
    subjects: Patterns | None
    groups: frozenset[str] | None
    email_domains: frozenset[str] | None
    idps: frozenset[str] | None
    service_account_namespace: Patterns | None
    service_account_name: Patterns | None
    username_prefix: str
    group_prefix: str
    username_template: str
    fixed_groups: tuple[str, ...]
    keep_groups: Patterns | None
    extra_templates: Mapping[str, tuple[str, ...]]
    keep_extra: frozenset[str]

    def admits(self, identity: Identity) -> bool:
        """Whether every matcher set on this entry holds for the identity."""
        if identity.issuer != self.issuer:
            return False
        if self.subjects is not None and not self.subjects.matches(identity.subject):
            return False
        if self.groups is not None and self.groups.isdisjoint(identity.user.groups):
            return False
        if self.email_domains is not None and not self._email_matches(identity):
            return False
        if self.idps is not None and _claim_str(identity, "idp") not in self.idps:
            return False
        return self.service_account_namespace is None or self._sa_matches(identity)

    def _email_matches(self, identity: Identity) -> bool:
        email = verified_email(identity)
        if email is None or "@" not in email or self.email_domains is None:
            return False
        return email.rsplit("@", 1)[1].lower() in self.email_domains

    def _sa_matches(self, identity: Identity) -> bool:
        account = service_account(identity)
        namespaces, names = self.service_account_namespace, self.service_account_name
        if account is None or namespaces is None or names is None:
            return False
        return namespaces.matches(account[0]) and names.matches(account[1])

    def map(self, identity: Identity) -> MappedIdentity:
        """Render the Kubernetes user; raise ``MappingError`` when a value is missing."""
        username = self.username_prefix + render(self.username_template, identity)
        groups = [self.group_prefix + group for group in self.fixed_groups]
        if self.keep_groups is not None:
            groups.extend(
                self.group_prefix + group
                for group in identity.user.groups
                if self.keep_groups.matches(group)
            )
        for group in groups:
            _check_value(group, "group")
        user = UserInfo(
            username=username,
            uid=identity.user.uid,
            groups=tuple(dict.fromkeys(groups)),
            extra=MappingProxyType(self._extra(identity)),
        )
        return MappedIdentity(self.university, self.name, user, self.source)

    def _extra(self, identity: Identity) -> dict[str, tuple[str, ...]]:
        extra = {
            key: values
            for key, values in identity.user.extra.items()
            if key in self.keep_extra
        }
        for key, templates in self.extra_templates.items():
            extra[key] = tuple(render(template, identity) for template in templates)
        return extra


def render(template: str, identity: Identity) -> str:
    """Fill a template's placeholders from verified values.

    Raises ``MappingError`` naming the first placeholder without a usable value.
    """
    if "{" not in template:
        return _check_value(template, "template")

    def replace(match: re.Match[str]) -> str:
        placeholder = match.group(1)
        value = _placeholder_value(placeholder, identity)
        if value is None:
            raise MappingError(f"no value for {{{placeholder}}}")
        return _check_value(value, f"{{{placeholder}}}")

    return _check_value(_PLACEHOLDER.sub(replace, template), "template")


def _placeholder_value(placeholder: str, identity: Identity) -> str | None:
    if placeholder.startswith("claims."):
        return _claim_str(identity, placeholder[len("claims.") :])
    if placeholder == "username":
        return identity.user.username
    if placeholder == "uid":
        return identity.user.uid or None
    if placeholder == "subject":
        return identity.subject
    if placeholder == "email":
        return verified_email(identity)
    if placeholder == "idp":
        return _claim_str(identity, "idp")
    account = service_account(identity)
    if account is None:
        return None
    return account[0] if placeholder == "serviceAccountNamespace" else account[1]


def _check_value(value: str, what: str) -> str:
    if not value or _CONTROL.search(value):
        raise MappingError(f"{what} renders to an empty or unprintable value")
    return value


def _claim_str(identity: Identity, name: str) -> str | None:
    value = identity.claims.get(name)
    return value if isinstance(value, str) and value else None


def verified_email(identity: Identity) -> str | None:
    """Return the ``email`` claim unless the issuer says it is not verified."""
    if identity.claims.get("email_verified", True) is not True:
        return None
    return _claim_str(identity, "email")


def service_account(identity: Identity) -> tuple[str, str] | None:
    """Return (namespace, name) of a service-account token, when claims agree."""
    claim: Any = identity.claims.get("kubernetes.io")
    if not isinstance(claim, Mapping):
        return None
    namespace = claim.get("namespace")
    account = claim.get("serviceaccount")
    name = account.get("name") if isinstance(account, Mapping) else None
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    if identity.subject != f"{_SERVICE_ACCOUNT_PREFIX}{namespace}:{name}":
        return None
    return namespace, name


Ranked = tuple[int, IdentityEntry]


@dataclass(frozen=True, slots=True)
class EntryIndex:
    """Identity entries by issuer and by their most selective exact matcher.

    Many universities share an issuer (CILogon, or one cluster's issuer in a test
    federation), so the issuer alone leaves many candidates. Entries that require an
    exact service-account namespace or exact ``idp`` values are also filed under
    those, and only entries that could admit the identity are tried.
    """

    keyed: Mapping[tuple[str, str, str], tuple[Ranked, ...]]
    unkeyed: Mapping[str, tuple[Ranked, ...]]

    @classmethod
    def of(cls, entries: Iterable[IdentityEntry]) -> EntryIndex:
        """Index ``entries``; their order is the order candidates are returned in."""
        keyed: dict[tuple[str, str, str], list[Ranked]] = {}
        unkeyed: dict[str, list[Ranked]] = {}
        for ranked in enumerate(entries):
            keys = _entry_keys(ranked[1])
            if not keys:
                unkeyed.setdefault(ranked[1].issuer, []).append(ranked)
            for key in keys:
                keyed.setdefault(key, []).append(ranked)
        return cls(
            MappingProxyType({key: tuple(found) for key, found in keyed.items()}),
            MappingProxyType({key: tuple(found) for key, found in unkeyed.items()}),
        )

    def candidates(self, identity: Identity) -> list[IdentityEntry]:
        """Every entry that could admit ``identity``, in index order."""
        issuer = identity.issuer
        found = list(self.unkeyed.get(issuer, ()))
        account = service_account(identity)
        if account is not None:
            found.extend(self.keyed.get((issuer, "sa", account[0]), ()))
        idp = _claim_str(identity, "idp")
        if idp is not None:
            found.extend(self.keyed.get((issuer, "idp", idp), ()))
        found.sort(key=lambda ranked: ranked[0])
        return [entry for _, entry in found]


def _entry_keys(entry: IdentityEntry) -> list[tuple[str, str, str]]:
    namespaces = entry.service_account_namespace
    if (
        namespaces is not None
        and namespaces.pattern is None
        and not namespaces.everything
    ):
        return [(entry.issuer, "sa", namespace) for namespace in namespaces.exact]
    if entry.idps is not None:
        return [(entry.issuer, "idp", idp) for idp in sorted(entry.idps)]
    return []
