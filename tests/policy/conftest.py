"""Fixtures: the example guardrails, the example policies and identities to try."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kproxy.auth.identity import Identity, UserInfo
from kproxy.configfile import load_document
from kproxy.policy.loading import federation_settings, load_policy_set
from kproxy.policy.policyset import PolicySet
from kproxy.policy.settings import FederationSettings

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parents[2] / "policies"
ALPHA_CLUSTER = "https://alpha.example.edu/k8s"
BETA_CLUSTER = "https://beta.example.edu/k8s"
GAMMA_CLUSTER = "https://gamma.example.edu/k8s"
CILOGON = "https://cilogon.org"


@pytest.fixture
def settings() -> FederationSettings:
    return federation_settings(load_document(DATA / "federation.yaml"))


@pytest.fixture
def policies(settings: FederationSettings) -> PolicySet:
    return load_policy_set(settings, base_dir=DATA)


def service_account_identity(
    issuer: str, namespace: str = "admiralty", name: str = "multicluster-scheduler"
) -> Identity:
    subject = f"system:serviceaccount:{namespace}:{name}"
    claims = {
        "iss": issuer,
        "sub": subject,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
    }
    return Identity(
        user=UserInfo(username=subject, uid="u-1", groups=("system:serviceaccounts",)),
        issuer=issuer,
        subject=subject,
        claims=claims,
        expires_at=4102444800,
    )


def person_identity(
    *,
    email: str,
    idp: str,
    subject: str = "http://cilogon.org/serverA/users/1",
    groups: tuple[str, ...] = (),
    **claims: Any,
) -> Identity:
    return Identity(
        user=UserInfo(username=f"cilogon:{subject}", groups=groups),
        issuer=CILOGON,
        subject=subject,
        claims={"sub": subject, "email": email, "idp": idp, **claims},
        expires_at=4102444800,
    )


ALPHA_IDP = "https://idp.alpha.example.edu/idp/shibboleth"
BETA_IDP = "https://login.beta.example.edu/idp/shibboleth"
