"""A university whose people log in at a real OIDC provider, as kproxy sees it.

The provider is ``tests/oidc``'s ``oidc-provider``; kproxy trusts its ID tokens the
way a target's operator trusts a campus identity provider: an ``authentication.jwt``
entry with the provider's issuer URL and CA, the kubectl client's id as the audience
(an ID token's ``aud`` is the client it was issued to), the verified email as the
username and the ``groups`` claim as groups. The university's policy admits people
whose email is in its domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from kproxy.standins.federation import LocalFederation
from tests.oidc.harness import ACCOUNTS, PUBLIC_CLIENT_ID, OidcProvider

UNIVERSITY: Final = "uni-a"
NAMESPACE: Final = "uni-a"
IDP: Final = "campus-idp"
EMAIL_DOMAIN: Final = "uni-a.example"
ALICE_EMAIL: Final = ACCOUNTS["alice"]["email"]

POLICY: Final[dict[str, Any]] = {
    "apiVersion": "kproxy.io/v1alpha1",
    "kind": "UniversityPolicy",
    "metadata": {"name": UNIVERSITY},
    "identities": [
        {
            "name": "researchers",
            "issuer": IDP,
            "emailDomains": [EMAIL_DOMAIN],
            "groups": ["physics"],
            "user": {"username": "{email}"},
        }
    ],
    "rules": [
        {
            "name": "read-pods",
            "namespaces": [NAMESPACE],
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch"],
        }
    ],
    "clusterRules": [
        {
            "name": "discovery",
            "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version"],
            "verbs": ["get"],
        }
    ],
}


def provider_jwt_entry(provider: OidcProvider) -> dict[str, Any]:
    """The ``authentication.jwt`` entry that makes kproxy trust the provider."""
    return {
        "issuer": {
            "url": provider.issuer,
            "audiences": [PUBLIC_CLIENT_ID],
            "certificateAuthority": provider.ca_file.read_text(),
        },
        "claimMappings": {
            "username": {"claim": "email", "prefix": ""},
            "groups": {"claim": "groups", "prefix": ""},
        },
    }


def write_policy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{UNIVERSITY}.yaml"
    path.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    return path


def campus_federation_options(
    provider: OidcProvider, policy_dir: Path, **authentication: Any
) -> dict[str, Any]:
    """``LocalFederation`` options for the university, its namespace and provider.

    ``authentication`` adds settings to kproxy's ``authentication`` section.
    """
    write_policy(policy_dir)
    options: dict[str, Any] = {
        "policy_dir": policy_dir,
        "universities": {UNIVERSITY: (IDP,)},
        "namespaces": (NAMESPACE, "uni-b"),
        "external_issuers": {IDP: provider_jwt_entry(provider)},
    }
    if authentication:
        options["extra_settings"] = {"authentication": authentication}
    return options


def pods_requests(federation: LocalFederation, namespace: str) -> list[Any]:
    """What reached the API server stand-in for pods in ``namespace``."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    return [r for r in federation.apiserver.requests if r.path == path]
