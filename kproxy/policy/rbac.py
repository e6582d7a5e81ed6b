"""RBAC objects that make the API server enforce what the policies say.

kproxy decides before forwarding, but the API server authorizes the impersonated user
again. Rendering the university rules as RBAC gives defence in depth: were kproxy
bypassed or wrong, the impersonated users still hold only what their policy grants.

- every namespaced rule becomes a ``Role`` in each namespace it names, bound by a
  ``RoleBinding`` to the groups of the identities it applies to (each identity entry's
  own group, ``<groupPrefix><entry name>``, is always present, which is why kproxy adds
  it);
- every cluster rule becomes a ``ClusterRole`` and a ``ClusterRoleBinding``;
- kproxy's own ``ClusterRole`` lets it impersonate only those groups, the usernames
  whose templates are fixed strings, and the extra keys the policies set.

RBAC cannot express everything a policy can. Explicit denies, namespace globs and
usernames rendered from claims have no RBAC equivalent; they are listed as comments at
the top of the output, and kproxy alone enforces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kproxy.auth.identity import PROVENANCE_EXTRA_KEYS
from kproxy.policy.model import AdmittedIdentity, UniversityPolicy
from kproxy.policy.settings import FederationSettings

RBAC_API_VERSION: Final = "rbac.authorization.k8s.io/v1"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "kproxy"}


@dataclass(slots=True)
class Rendering:
    """The objects to apply and the notes on what RBAC could not express."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render_rbac(
    settings: FederationSettings,
    policies: Mapping[str, UniversityPolicy],
    *,
    service_account: tuple[str, str] = ("kproxy-system", "kproxy"),
) -> Rendering:
    """Render Roles, bindings and kproxy's impersonation ClusterRole for ``policies``.

    ``policies`` maps university names to their validated files; ``service_account``
    is kproxy's own (namespace, name).
    """
    rendering = Rendering()
    for name in sorted(policies):
        _render_university(rendering, settings, name, policies[name])
    rendering.objects.extend(
        _impersonator(settings, policies, service_account, rendering)
    )
    return rendering


def _render_university(
    rendering: Rendering,
    settings: FederationSettings,
    name: str,
    policy: UniversityPolicy,
) -> None:
    prefix = settings.universities[name].group_prefix
    if policy.denies:
        rendering.notes.append(
            f"{name}: {len(policy.denies)} explicit denies are enforced by kproxy only"
        )
    for index, rule in enumerate(policy.rules):
        role = f"kproxy:{name}:{rule.name or f'rule-{index}'}"
        groups = _groups(prefix, policy.identities, rule.identities)
        policy_rule = _policy_rule(
            rule.api_groups, rule.resources, rule.verbs, rendering, role
        )
        for namespace in rule.namespaces:
            if "*" in namespace or "?" in namespace:
                rendering.notes.append(
                    f"{role}: namespace pattern {namespace!r} is enforced by kproxy only"
                )
                continue
            rendering.objects.append(_role("Role", role, [policy_rule], namespace))
            rendering.objects.append(_binding("RoleBinding", role, groups, namespace))
    for index, cluster_rule in enumerate(policy.cluster_rules):
        role = f"kproxy:{name}:{cluster_rule.name or f'cluster-rule-{index}'}"
        groups = _groups(prefix, policy.identities, cluster_rule.identities)
        if cluster_rule.non_resource_urls:
            rule_body: dict[str, Any] = {
                "nonResourceURLs": list(cluster_rule.non_resource_urls),
                "verbs": list(cluster_rule.verbs),
            }
        else:
            rule_body = _policy_rule(
                cluster_rule.api_groups,
                cluster_rule.resources,
                cluster_rule.verbs,
                rendering,
                role,
            )
        rendering.objects.append(_role("ClusterRole", role, [rule_body]))
        rendering.objects.append(_binding("ClusterRoleBinding", role, groups))


def _groups(
    prefix: str, entries: Iterable[AdmittedIdentity], selected: list[str] | None
) -> list[str]:
    return [
        prefix + entry.name
        for entry in entries
        if selected is None or entry.name in selected
    ]


def _policy_rule(
    api_groups: list[str],
    resources: list[str],
    verbs: Iterable[str],
    rendering: Rendering,
    role: str,
) -> dict[str, Any]:
    kept = []
    for resource in resources:
        if resource.endswith("/*") and resource != "*/*":
            rendering.notes.append(
                f"{role}: {resource!r} has no RBAC form and is enforced by kproxy only"
            )
            continue
        kept.append(resource)
    return {"apiGroups": list(api_groups), "resources": kept, "verbs": list(verbs)}


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(MANAGED_BY)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return metadata


def _role(
    kind: str, name: str, rules: list[dict[str, Any]], namespace: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": kind,
        "metadata": _metadata(name, namespace),
        "rules": rules,
    }


def _binding(
    kind: str, name: str, groups: list[str], namespace: str | None = None
) -> dict[str, Any]:
    role_kind = "Role" if kind == "RoleBinding" else "ClusterRole"
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": kind,
        "metadata": _metadata(name, namespace),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": name,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
            for group in groups
        ],
    }


def _impersonator(
    settings: FederationSettings,
    policies: Mapping[str, UniversityPolicy],
    service_account: tuple[str, str],
    rendering: Rendering,
) -> list[dict[str, Any]]:
    groups: list[str] = []
    users: list[str] = []
    # kproxy adds its provenance extras to every impersonated user.
    extras: set[str] = set(PROVENANCE_EXTRA_KEYS)
    for name in sorted(policies):
        university = settings.universities[name]
        for entry in policies[name].identities:
            mapping = entry.user
            groups.append(university.group_prefix + entry.name)
            groups.extend(university.group_prefix + group for group in mapping.groups)
            extras.update(mapping.extra, mapping.keep_extra)
            if mapping.keep_groups:
                rendering.notes.append(
                    f"{name}/{entry.name}: groups kept from tokens cannot be listed; "
                    "kproxy will not be able to impersonate them"
                )
            if "{" in mapping.username:
                rendering.notes.append(
                    f"{name}/{entry.name}: usernames come from claims, so "
                    "impersonating users cannot be limited by name"
                )
                users.append("*")
            else:
                users.append(university.username_prefix + mapping.username)
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "resources": ["groups"],
            "verbs": ["impersonate"],
            "resourceNames": sorted(set(groups)),
        },
        _user_rule(users),
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["uids"],
            "verbs": ["impersonate"],
        },
    ]
    if extras:
        rules.append(
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": [f"userextras/{key}" for key in sorted(extras)],
                "verbs": ["impersonate"],
            }
        )
    name = "kproxy:impersonator"
    namespace, account = service_account
    binding = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name, None),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        ],
    }
    return [_role("ClusterRole", name, rules), binding]


def _user_rule(users: list[str]) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "apiGroups": [""],
        "resources": ["users"],
        "verbs": ["impersonate"],
    }
    if "*" not in users:
        rule["resourceNames"] = sorted(set(users))
    return rule
