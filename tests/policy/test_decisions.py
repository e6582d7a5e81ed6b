"""Decisions on the example policies, layer by layer, and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from kproxy.auth.identity import Identity, UserInfo
from kproxy.policy.attributes import parse_request
from kproxy.policy.grants import GrantIndex, compile_grant
from kproxy.policy.loading import compile_guardrails, load_policy_set
from kproxy.policy.policyset import PolicySet
from kproxy.policy.settings import FederationSettings
from tests.policy.conftest import (
    ALPHA_CLUSTER,
    ALPHA_IDP,
    BETA_CLUSTER,
    BETA_IDP,
    GAMMA_CLUSTER,
    person_identity,
    service_account_identity,
)

SCHEDULER = service_account_identity(ALPHA_CLUSTER)
RESEARCHER = person_identity(email="ada@alpha.example.edu", idp=ALPHA_IDP)

# The Admiralty least-access table, for alpha's scheduler in namespace "alpha".
ADMIRALTY = [
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons",
        "labelSelector=x%3Dy",
        True,
    ),
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons",
        "watch=1&resourceVersion=5",
        True,
    ),
    (
        "POST",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons",
        "",
        True,
    ),
    (
        "PATCH",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
        "",
        True,
    ),
    (
        "PUT",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
        "",
        True,
    ),
    (
        "DELETE",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
        "",
        True,
    ),
    (
        "DELETE",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons",
        "labelSelector=a%3Db",
        True,
    ),
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/namespaces/alpha/podchaperons/c",
        "",
        False,
    ),
    ("POST", "/api/v1/namespaces/alpha/secrets", "", True),
    ("PUT", "/api/v1/namespaces/alpha/configmaps/c", "", True),
    ("PATCH", "/api/v1/namespaces/alpha/configmaps/c", "", False),
    ("GET", "/api/v1/namespaces/alpha/services", "watch=true", True),
    ("GET", "/apis/networking.k8s.io/v1/namespaces/alpha/ingresses", "", True),
    ("GET", "/api/v1/namespaces/alpha/pods", "labelSelector=a%3Db", True),
    ("GET", "/api/v1/namespaces/alpha/pods", "watch=1", False),
    ("POST", "/api/v1/namespaces/alpha/pods", "", False),
    ("GET", "/api/v1/namespaces/alpha/pods/p/log", "follow=true", True),
    ("POST", "/api/v1/namespaces/alpha/pods/p/exec", "command=ls", True),
    ("GET", "/api/v1/namespaces/alpha/pods/p/exec", "command=ls", True),
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries",
        "watch=1",
        True,
    ),
    (
        "GET",
        "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries/singleton",
        "",
        False,
    ),
    ("GET", "/api/v1/namespaces/beta/pods", "", False),
    ("GET", "/api/v1/pods", "", False),
    ("GET", "/apis/multicluster.admiralty.io/v1alpha1/podchaperons", "", False),
    ("GET", "/api/v1/nodes", "", False),
    ("GET", "/version", "", True),
    ("GET", "/apis", "", True),
    ("GET", "/metrics", "", False),
]


@pytest.mark.parametrize(
    ("method", "path", "query", "allowed"),
    ADMIRALTY,
    ids=[f"{m} {p}?{q}" for m, p, q, _ in ADMIRALTY],
)
def test_the_scheduler_gets_exactly_the_admiralty_least_access(
    policies: PolicySet, method: str, path: str, query: str, allowed: bool
) -> None:
    decision = policies.decide(SCHEDULER, parse_request(method, path, query))
    assert decision.allowed is allowed, decision
    assert decision.university == "alpha"


def test_an_allowed_decision_names_the_rule_and_the_mapped_user(
    policies: PolicySet,
) -> None:
    request = parse_request("GET", "/api/v1/namespaces/alpha/pods", "")
    decision = policies.decide(SCHEDULER, request)
    assert decision.decided_by == "policies/alpha.yaml: rules[3] (pod-list)"
    assert decision.user is not None
    assert decision.user.username == "alpha:admiralty:multicluster-scheduler"
    assert decision.user.groups == ("alpha:scheduler",)
    assert decision.user.uid == "u-1"


def test_a_denied_decision_says_no_rule_matched_in_the_api_servers_words(
    policies: PolicySet,
) -> None:
    decision = policies.decide(SCHEDULER, parse_request("GET", "/api/v1/pods", ""))
    assert decision.decided_by == "no rule matched"
    assert decision.message == (
        'user "alpha:admiralty:multicluster-scheduler" cannot list resource "pods" '
        'in API group "" at the cluster scope: no rule matched'
    )


def test_an_unknown_issuer_is_admitted_by_no_university(policies: PolicySet) -> None:
    stranger = service_account_identity("https://elsewhere.example.org")
    decision = policies.decide(stranger, parse_request("GET", "/version", ""))
    assert not decision.allowed
    assert decision.decided_by == "no university admits this identity"
    assert decision.university is None


def test_a_service_account_outside_the_admitted_namespace_is_not_admitted(
    policies: PolicySet,
) -> None:
    other = service_account_identity(ALPHA_CLUSTER, namespace="default", name="x")
    decision = policies.decide(other, parse_request("GET", "/version", ""))
    assert decision.decided_by == "no university admits this identity"


def test_a_service_account_claim_that_disagrees_with_the_subject_is_not_admitted(
    policies: PolicySet,
) -> None:
    forged = service_account_identity(ALPHA_CLUSTER)
    tampered = Identity(
        user=forged.user,
        issuer=forged.issuer,
        subject="system:serviceaccount:default:x",
        claims=forged.claims,
        expires_at=forged.expires_at,
    )
    assert not policies.decide(tampered, parse_request("GET", "/version", "")).allowed


@pytest.mark.parametrize(
    ("identity", "university"),
    [
        (person_identity(email="ada@alpha.example.edu", idp=ALPHA_IDP), "alpha"),
        (
            person_identity(
                email="bo@beta.example.edu", idp=BETA_IDP, groups=("beta-hpc-users",)
            ),
            "beta",
        ),
        (service_account_identity(BETA_CLUSTER), "beta"),
        (service_account_identity(GAMMA_CLUSTER, name="any"), "gamma"),
    ],
    ids=["alpha-person", "beta-person", "beta-scheduler", "gamma-scheduler"],
)
def test_each_identity_lands_in_its_own_university(
    policies: PolicySet, identity: Identity, university: str
) -> None:
    decision = policies.decide(identity, parse_request("GET", "/version", ""))
    assert decision.allowed
    assert decision.university == university
    assert decision.user is not None
    assert decision.user.username.startswith(f"{university}:")
    assert all(group.startswith(f"{university}:") for group in decision.user.groups)


@pytest.mark.parametrize(
    "identity",
    [
        person_identity(email="ada@beta.example.edu", idp=ALPHA_IDP),
        person_identity(email="ada@alpha.example.edu", idp=BETA_IDP),
        person_identity(
            email="ada@alpha.example.edu", idp=ALPHA_IDP, email_verified=False
        ),
        person_identity(email="bo@beta.example.edu", idp=BETA_IDP),
    ],
    ids=["wrong-domain", "wrong-idp", "unverified-email", "missing-group"],
)
def test_people_need_every_matcher_to_hold(
    policies: PolicySet, identity: Identity
) -> None:
    decision = policies.decide(identity, parse_request("GET", "/version", ""))
    assert decision.decided_by == "no university admits this identity"


def test_people_are_mapped_by_their_email_under_the_prefix(policies: PolicySet) -> None:
    decision = policies.decide(
        RESEARCHER, parse_request("GET", "/api/v1/namespaces/alpha-lab/pods", "")
    )
    assert decision.allowed
    assert decision.decided_by == "policies/alpha.yaml: rules[6] (researchers-read)"
    assert decision.user is not None
    assert decision.user.username == "alpha:ada@alpha.example.edu"


def test_explicit_deny_beats_a_rule_of_the_same_university(policies: PolicySet) -> None:
    # researchers-read does not list secrets, but the deny must win even where a rule
    # would allow: read configmaps is allowed, secrets denied by the deny.
    allowed = policies.decide(
        RESEARCHER, parse_request("GET", "/api/v1/namespaces/alpha/configmaps", "")
    )
    denied = policies.decide(
        RESEARCHER, parse_request("GET", "/api/v1/namespaces/alpha/secrets", "")
    )
    assert allowed.allowed
    assert not denied.allowed
    assert denied.decided_by == "policies/alpha.yaml: denies[0] (no-secrets-for-people)"


def test_reserved_namespace_beats_every_rule(policies: PolicySet) -> None:
    request = parse_request("GET", "/api/v1/namespaces/kube-system", "")
    decision = policies.decide(SCHEDULER, request)
    assert not decision.allowed
    assert decision.decided_by == "guardrail: namespace 'kube-system' is reserved"


def test_websocket_exec_needs_create_as_well_as_get(policies: PolicySet) -> None:
    exec_get = parse_request(
        "GET", "/api/v1/namespaces/alpha-lab/pods/p/exec", "command=sh"
    )
    assert policies.decide(RESEARCHER, exec_get).allowed


def _policies_with(
    tmp_path: Path, settings: FederationSettings, text: str
) -> PolicySet:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    (directory / "alpha.yaml").write_text(text)
    custom = settings.model_copy(update={"policy_directory": str(directory)})
    return load_policy_set(custom, base_dir=tmp_path)


WIDE = """\
apiVersion: kproxy.io/v1alpha1
kind: UniversityPolicy
metadata: {name: alpha}
identities:
  - name: scheduler
    issuer: cluster
    serviceAccount: {namespace: admiralty}
    user: {groups: [%s]}
rules:
  - namespaces: ["*"]
    apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
denies:
  - namespaces: [team-a]
    resources: [secrets]
"""


def test_a_namespace_deny_also_blocks_lists_across_all_namespaces(
    tmp_path: Path, settings: FederationSettings
) -> None:
    policies = _policies_with(tmp_path, settings, WIDE % "x")
    text = WIDE.replace(
        "rules:",
        "clusterRules:\n  - {apiGroups: ['*'], resources: ['*'], verbs: ['*']}\nrules:",
    )
    wide = _policies_with(tmp_path, settings, text % "x")
    across = parse_request("GET", "/api/v1/secrets", "")
    assert not policies.decide(SCHEDULER, across).allowed
    assert wide.decide(SCHEDULER, across).decided_by.endswith("denies[0]")
    assert wide.decide(
        SCHEDULER, parse_request("GET", "/api/v1/configmaps", "")
    ).allowed
    assert policies.decide(
        SCHEDULER, parse_request("GET", "/api/v1/namespaces/team-b/secrets", "")
    ).allowed


def test_a_wildcard_rule_still_cannot_reach_a_reserved_namespace(
    tmp_path: Path, settings: FederationSettings
) -> None:
    policies = _policies_with(tmp_path, settings, WIDE % "x")
    decision = policies.decide(
        SCHEDULER,
        parse_request("DELETE", "/api/v1/namespaces/kproxy-system/secrets/s", ""),
    )
    assert decision.decided_by.startswith("guardrail:")


def test_a_forbidden_group_denies_everything(
    tmp_path: Path, settings: FederationSettings
) -> None:
    custom = settings.model_copy(update={"forbidden_groups": ["alpha:ops"]})
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "alpha.yaml").write_text(WIDE % "x")
    policies = load_policy_set(
        custom.model_copy(update={"policy_directory": "p"}), base_dir=tmp_path
    )
    assert policies.decide(
        SCHEDULER, parse_request("GET", "/api/v1/namespaces/a/pods", "")
    ).allowed
    (directory / "alpha.yaml").write_text(
        (WIDE % "x").replace("{groups: [x]}", "{keepGroups: ['*']}")
    )
    kept = load_policy_set(
        custom.model_copy(
            update={
                "policy_directory": "p",
                "forbidden_groups": ["alpha:system:serviceaccounts"],
            }
        ),
        base_dir=tmp_path,
    )
    decision = kept.decide(
        SCHEDULER, parse_request("GET", "/api/v1/namespaces/a/pods", "")
    )
    assert not decision.allowed
    assert (
        decision.decided_by
        == "guardrail: group 'alpha:system:serviceaccounts' is forbidden"
    )


def test_an_identity_claimed_by_two_universities_is_refused(
    tmp_path: Path, settings: FederationSettings
) -> None:
    directory = tmp_path / "p"
    directory.mkdir()
    person = """\
apiVersion: kproxy.io/v1alpha1
kind: UniversityPolicy
metadata: {name: %s}
identities:
  - {name: people, issuer: cilogon, emailDomains: [alpha.example.edu]}
clusterRules:
  - {nonResourceURLs: [/version], verbs: [get]}
"""
    (directory / "alpha.yaml").write_text(person % "alpha")
    (directory / "beta.yaml").write_text(person % "beta")
    policies = load_policy_set(
        settings.model_copy(update={"policy_directory": "p"}), base_dir=tmp_path
    )
    decision = policies.decide(RESEARCHER, parse_request("GET", "/version", ""))
    assert not decision.allowed
    assert decision.decided_by == "guardrail: ambiguous identity"
    assert "beta" not in decision.message
    assert "alpha" not in decision.message


def _grant(
    namespace: str, subjects: list[dict[str, str]], resources: list[str]
) -> dict[str, object]:
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "NamespaceGrant",
        "metadata": {"namespace": namespace, "name": "open"},
        "spec": {
            "subjects": subjects,
            "rules": [
                {"apiGroups": [""], "resources": resources, "verbs": ["get", "list"]}
            ],
        },
    }


def test_a_grant_opens_a_namespace_after_the_universitys_rules(
    policies: PolicySet,
) -> None:
    request = parse_request("GET", "/api/v1/namespaces/team-a/pods", "")
    assert policies.decide(SCHEDULER, request).decided_by == "no rule matched"
    grant = compile_grant(
        _grant("team-a", [{"university": "alpha"}], ["pods"]), policies.guardrails
    )
    opened = policies.with_grants(GrantIndex.of([grant]))
    decision = opened.decide(SCHEDULER, request)
    assert decision.allowed
    assert decision.decided_by == "grant team-a/open"


def test_an_explicit_deny_beats_a_grant(policies: PolicySet) -> None:
    grant = compile_grant(
        _grant("team-a", [{"issuer": "https://cilogon.org"}], ["secrets", "pods"]),
        policies.guardrails,
    )
    opened = policies.with_grants(GrantIndex.of([grant]))
    assert opened.decide(
        RESEARCHER, parse_request("GET", "/api/v1/namespaces/team-a/pods", "")
    ).allowed
    denied = opened.decide(
        RESEARCHER, parse_request("GET", "/api/v1/namespaces/team-a/secrets", "")
    )
    assert denied.decided_by == "policies/alpha.yaml: denies[0] (no-secrets-for-people)"


def test_grants_do_not_apply_to_universities_the_operator_left_out(
    policies: PolicySet,
) -> None:
    gamma = service_account_identity(GAMMA_CLUSTER)
    grant = compile_grant(
        _grant(
            "team-a", [{"issuer": GAMMA_CLUSTER}, {"university": "gamma"}], ["pods"]
        ),
        policies.guardrails,
    )
    opened = policies.with_grants(GrantIndex.of([grant]))
    decision = opened.decide(
        gamma, parse_request("GET", "/api/v1/namespaces/team-a/pods", "")
    )
    assert decision.decided_by == "no rule matched"


def test_grants_are_ignored_when_the_operator_disables_them(
    settings: FederationSettings,
) -> None:
    off = settings.model_copy(
        update={
            "namespace_grants": settings.namespace_grants.model_copy(
                update={"enabled": False}
            )
        }
    )
    guardrails = compile_guardrails(off)
    assert not guardrails.grants_apply_to("alpha")
    assert compile_guardrails(settings).grants_apply_to("alpha")


def test_a_grant_never_allows_listing_across_namespaces(policies: PolicySet) -> None:
    grant = compile_grant(
        _grant("team-a", [{"university": "alpha"}], ["pods"]), policies.guardrails
    )
    opened = policies.with_grants(GrantIndex.of([grant]))
    assert not opened.decide(
        SCHEDULER, parse_request("GET", "/api/v1/pods", "")
    ).allowed


def test_mapping_is_cached_per_identity_object(policies: PolicySet) -> None:
    first = policies.map_identity(SCHEDULER)
    assert policies.map_identity(SCHEDULER) is first
    twin = service_account_identity(ALPHA_CLUSTER)
    assert policies.map_identity(twin) is not first
    assert policies.map_identity(twin) == first


def test_get_on_exec_without_create_is_denied_even_when_get_is_allowed(
    tmp_path: Path, settings: FederationSettings
) -> None:
    text = (WIDE % "x").replace('verbs: ["*"]', "verbs: [get]")
    policies = _policies_with(tmp_path, settings, text)
    exec_get = parse_request("GET", "/api/v1/namespaces/a/pods/p/exec", "command=sh")
    log_get = parse_request("GET", "/api/v1/namespaces/a/pods/p/log", "")
    assert policies.decide(SCHEDULER, log_get).allowed
    decision = policies.decide(SCHEDULER, exec_get)
    assert not decision.allowed
    assert "cannot create resource" in decision.message


MAPPING = """\
apiVersion: kproxy.io/v1alpha1
kind: UniversityPolicy
metadata: {name: alpha}
identities:
  - name: people
    issuer: cilogon
    emailDomains: [alpha.example.edu]
    user:
      username: "{claims.preferred_username}"
      groups: [staff]
      keepGroups: ["hpc-*"]
      extra: {example.edu/campus: ["{idp}"]}
      keepExtra: [authentication.kubernetes.io/credential-id]
clusterRules:
  - {nonResourceURLs: [/version], verbs: [get]}
"""


def test_the_mapping_narrows_and_extends_the_issuers_identity(
    tmp_path: Path, settings: FederationSettings
) -> None:
    policies = _policies_with(tmp_path, settings, MAPPING)
    person = person_identity(
        email="ada@alpha.example.edu",
        idp=ALPHA_IDP,
        groups=("hpc-users", "admins"),
        preferred_username="ada",
    )
    person = Identity(
        user=UserInfo(
            username=person.user.username,
            groups=person.user.groups,
            extra={
                "authentication.kubernetes.io/credential-id": ("JTI=1",),
                "other": ("x",),
            },
        ),
        issuer=person.issuer,
        subject=person.subject,
        claims=person.claims,
        expires_at=person.expires_at,
    )
    decision = policies.decide(person, parse_request("GET", "/version", ""))
    assert decision.allowed
    assert decision.user == UserInfo(
        username="alpha:ada",
        groups=("alpha:people", "alpha:staff", "alpha:hpc-users"),
        extra={
            "authentication.kubernetes.io/credential-id": ("JTI=1",),
            "example.edu/campus": (ALPHA_IDP,),
        },
    )


def test_a_missing_template_value_refuses_the_identity(
    tmp_path: Path, settings: FederationSettings
) -> None:
    policies = _policies_with(tmp_path, settings, MAPPING)
    person = person_identity(email="ada@alpha.example.edu", idp=ALPHA_IDP)
    decision = policies.decide(person, parse_request("GET", "/version", ""))
    assert not decision.allowed
    assert decision.decided_by == "policies/alpha.yaml: identities[0] (people)"
    assert (
        decision.message
        == "identity cannot be mapped: no value for {claims.preferred_username}"
    )
