"""A small RBAC: rules bound to users and groups, cluster-wide or in one namespace.

The matching follows ``pkg/apis/rbac/v1/evaluation_helpers.go`` and
``plugin/pkg/auth/authorizer/rbac/rbac.go``: a verb, API group or resource ``*``
matches anything; a resource is matched as ``resource/subresource`` or through a
``*/subresource`` rule; ``resourceNames`` only match a request that names one of them
(so never a list or a create); a non-resource URL matches exactly or by a trailing
``*`` prefix. A namespaced binding (a ``RoleBinding``) only grants requests inside its
namespace and never non-resource URLs; a cluster binding grants everywhere. Everything
not granted is denied, and the denial reason is empty, as RBAC leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kproxy.auth.identity import UserInfo


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule of a role, with the fields of ``rbac.authorization.k8s.io/v1``."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Binding:
    """Rules granted to users and groups; ``namespace`` ``None`` is cluster-wide."""

    rules: tuple[PolicyRule, ...]
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    namespace: str | None = None

    def applies_to(self, user: UserInfo) -> bool:
        return user.username in self.users or any(g in self.groups for g in user.groups)


@dataclass(frozen=True, slots=True)
class Attributes:
    """What the authorizer is asked about: ``authorizer.AttributesRecord``."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        if self.subresource:
            return f"{self.resource}/{self.subresource}"
        return self.resource


def is_allowed(bindings: tuple[Binding, ...], attributes: Attributes) -> bool:
    """Answer whether any binding of the user grants the request."""
    for binding in bindings:
        if not binding.applies_to(attributes.user):
            continue
        if not _scope_matches(binding, attributes):
            continue
        if any(_rule_allows(rule, attributes) for rule in binding.rules):
            return True
    return False


def forbidden_detail(attributes: Attributes) -> str:
    """Explain a denial the way ``responsewriters.forbiddenMessage`` does."""
    username = attributes.user.username
    if not attributes.resource_request:
        return f'User "{username}" cannot {attributes.verb} path "{attributes.path}"'
    subject = (
        f'User "{username}" cannot {attributes.verb} resource '
        f'"{attributes.combined_resource}" in API group "{attributes.api_group}"'
    )
    if attributes.namespace:
        return f'{subject} in the namespace "{attributes.namespace}"'
    return f"{subject} at the cluster scope"


def _scope_matches(binding: Binding, attributes: Attributes) -> bool:
    if binding.namespace is None:
        return True
    return attributes.resource_request and attributes.namespace == binding.namespace


def _rule_allows(rule: PolicyRule, attributes: Attributes) -> bool:
    if not _matches(rule.verbs, attributes.verb):
        return False
    if not attributes.resource_request:
        return _url_matches(rule.non_resource_urls, attributes.path)
    return (
        _matches(rule.api_groups, attributes.api_group)
        and _resource_matches(rule.resources, attributes)
        and (not rule.resource_names or attributes.name in rule.resource_names)
    )


def _matches(allowed: tuple[str, ...], value: str) -> bool:
    return "*" in allowed or value in allowed


def _resource_matches(resources: tuple[str, ...], attributes: Attributes) -> bool:
    if _matches(resources, attributes.combined_resource):
        return True
    return bool(attributes.subresource) and f"*/{attributes.subresource}" in resources


def _url_matches(urls: tuple[str, ...], path: str) -> bool:
    for url in urls:
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


DISCOVERY_URLS: tuple[str, ...] = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
)


def default_bindings(proxy_username: str) -> tuple[Binding, ...]:
    """What a fresh cluster grants, plus impersonation rights for the proxy.

    Authenticated users may read discovery, as ``system:discovery`` and
    ``system:public-info-viewer`` allow; ``system:masters`` may do anything, as in a
    real cluster; the proxy's own identity may impersonate anyone and nothing else.
    """
    discovery = PolicyRule(verbs=("get",), non_resource_urls=DISCOVERY_URLS)
    everything = (
        PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)),
        PolicyRule(verbs=("*",), non_resource_urls=("*",)),
    )
    impersonation = (
        PolicyRule(
            verbs=("impersonate",),
            resources=("users", "groups", "serviceaccounts"),
        ),
        PolicyRule(
            verbs=("impersonate",),
            api_groups=("authentication.k8s.io",),
            resources=("*",),
        ),
    )
    return (
        Binding(rules=(discovery,), groups=("system:authenticated",)),
        Binding(rules=everything, groups=("system:masters",)),
        Binding(rules=impersonation, users=(proxy_username,)),
    )
