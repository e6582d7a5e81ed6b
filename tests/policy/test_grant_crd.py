"""The NamespaceGrant CRD: a valid manifest whose schema agrees with kproxy's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kproxy.policy.grants import GROUP, KIND, PLURAL, VERSION, GrantError, compile_grant
from kproxy.policy.loading import compile_guardrails
from kproxy.policy.settings import FederationSettings

CRD = Path(__file__).parents[2] / "deploy" / "crds" / "namespacegrants.yaml"


def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


def test_the_crd_is_a_valid_kubernetes_manifest() -> None:
    kubernetes_validate.validate(crd(), "1.32.0", strict=True)


def test_the_crd_names_what_the_watcher_watches() -> None:
    spec = crd()["spec"]
    assert spec["group"] == GROUP
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == PLURAL
    assert spec["scope"] == "Namespaced"
    assert [v["name"] for v in spec["versions"]] == [VERSION]


def grant(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "g", "namespace": "team-a"},
        "spec": spec,
    }


RULE = {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
SPECS = [
    ({"subjects": [{"university": "beta"}], "rules": [RULE]}, True),
    ({"subjects": [{"issuer": "https://beta.example.edu/k8s"}], "rules": [RULE]}, True),
    (
        {
            "subjects": [{"group": "beta:lab"}, {"user": "beta:scheduler"}],
            "rules": [RULE],
        },
        True,
    ),
    ({"subjects": [{"university": "beta", "group": "x"}], "rules": [RULE]}, False),
    ({"subjects": [{}], "rules": [RULE]}, False),
    ({"subjects": [], "rules": [RULE]}, False),
    ({"subjects": [{"university": "beta"}], "rules": []}, False),
    (
        {
            "subjects": [{"university": "beta"}],
            "rules": [dict(RULE, verbs=["escalate"])],
        },
        False,
    ),
    ({"subjects": [{"university": "Beta!"}], "rules": [RULE]}, False),
]


@pytest.mark.parametrize(
    ("spec", "valid"), SPECS, ids=[str(i) for i in range(len(SPECS))]
)
def test_the_crd_schema_and_kproxy_accept_the_same_grants(
    settings: FederationSettings, spec: dict[str, Any], valid: bool
) -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    crd_accepts = jsonschema.Draft7Validator(schema).is_valid(grant(spec))
    try:
        compile_grant(grant(spec), compile_guardrails(settings))
        kproxy_accepts = True
    except GrantError:
        kproxy_accepts = False
    assert crd_accepts is valid
    assert kproxy_accepts is valid
