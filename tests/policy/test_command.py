"""``kproxy policy`` through the real command-line dispatcher."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml

from kproxy import cli
from kproxy.policy.schema import SCHEMA_FILE, policy_json_schema_text
from tests.policy.conftest import ALPHA_CLUSTER, ALPHA_IDP, DATA, EXAMPLES

CONFIG = str(DATA / "federation.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "check", "--config", CONFIG)
    assert code == 0
    assert "3 policy files" in out


def test_check_reports_each_problem_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(EXAMPLES / "beta.yaml", tmp_path / "beta.yaml")
    text = (EXAMPLES / "alpha.yaml").read_text()
    text = text.replace("issuer: cilogon", "issuer: https://evil.example.org")
    text = text.replace('namespaces: [alpha, "alpha-*"]', "namespaces: [kube-system]")
    text = text.replace("verbs: [list]\n", "verbs: [list]\n    colour: red\n")
    (tmp_path / "alpha.yaml").write_text(text)
    code, out, _ = run(capsys, "policy", "check", str(tmp_path), "--config", CONFIG)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'alpha.yaml'}:")
    assert "rules[3].colour: unknown field" in lines[0]

    (tmp_path / "alpha.yaml").write_text(text.replace("    colour: red\n", ""))
    code, out, _ = run(capsys, "policy", "check", str(tmp_path), "--config", CONFIG)
    assert code == 2
    assert "identities[1].issuer: issuer 'https://evil.example.org' is not one" in out
    assert "rules[6].namespaces[0]: namespace 'kube-system' is reserved" in out
    assert len(out.splitlines()) == 2


def test_check_without_config_accepts_issuer_short_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "policy", "check", str(EXAMPLES))
    assert code == 0, out
    assert "3 policy files" in out
    assert "guardrails were not checked" in err


def test_check_without_config_checks_the_schema_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.yaml").write_text("apiVersion: kproxy.io/v1alpha1\nkind: Policy\n")
    code, out, err = run(capsys, "policy", "check", str(tmp_path))
    assert code == 2
    assert f"{tmp_path / 'x.yaml'}:2: kind:" in out
    assert "guardrails were not checked" in err


def test_explain_shows_identity_decision_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps(
            {
                "iss": ALPHA_CLUSTER,
                "sub": "system:serviceaccount:admiralty:scheduler",
                "kubernetes.io": {
                    "namespace": "admiralty",
                    "serviceaccount": {"name": "scheduler"},
                },
            }
        )
    )
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--config",
        CONFIG,
        "--claims",
        str(claims),
        "watch",
        "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries",
    )
    assert code == 0
    assert "kubernetes user: alpha:admiralty:scheduler" in out
    assert "decision: allowed" in out
    assert "decided by: policies/alpha.yaml: clusterRules[0] (cluster-summaries)" in out
    assert "NOT verified" not in out

    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--config",
        CONFIG,
        "--claims",
        str(claims),
        "list",
        "/api/v1/pods",
    )
    assert code == 1
    assert "decision: denied" in out
    assert "decided by: no rule matched" in out


def test_explain_with_a_token_says_it_was_not_verified(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {
        "iss": "https://cilogon.org",
        "sub": "u1",
        "email": "ada@alpha.example.edu",
        "idp": ALPHA_IDP,
    }
    token = f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--config",
        CONFIG,
        "--token",
        token,
        "GET",
        "/api/v1/namespaces/alpha/secrets/s",
    )
    assert code == 1
    assert "NOT verified" in out
    assert "decided by: policies/alpha.yaml: denies[0] (no-secrets-for-people)" in out


def test_explain_refuses_an_ambiguous_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = tmp_path / "c.yaml"
    claims.write_text("iss: https://cilogon.org\nsub: u1\n")
    code, out, _ = run(
        capsys,
        "policy",
        "explain",
        "--config",
        CONFIG,
        "--claims",
        str(claims),
        "get",
        "/api/v1/namespaces/alpha/pods/%2e%2e",
    )
    assert code == 1
    assert "refused before any decision" in out


def test_a_broken_token_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "policy",
        "explain",
        "--config",
        CONFIG,
        "--token",
        "abc",
        "get",
        "/version",
    )
    assert code == 2
    assert "error: --token: not a JWT" in err


def test_rbac_renders_roles_bindings_and_a_narrow_impersonator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "policy", "rbac", "--config", CONFIG)
    assert code == 0
    objects = [o for o in yaml.safe_load_all(out) if o]
    by_key = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
    }
    role = by_key[("Role", "alpha", "kproxy:alpha:podchaperons")]
    assert role["rules"] == [
        {
            "apiGroups": ["multicluster.admiralty.io"],
            "resources": ["podchaperons"],
            "verbs": [
                "list",
                "watch",
                "create",
                "patch",
                "update",
                "delete",
                "deletecollection",
            ],
        }
    ]
    binding = by_key[("RoleBinding", "alpha", "kproxy:alpha:podchaperons")]
    assert [s["name"] for s in binding["subjects"]] == ["alpha:scheduler"]
    assert ("ClusterRole", None, "kproxy:gamma:cluster-summaries") in by_key
    impersonator = by_key[("ClusterRole", None, "kproxy:impersonator")]
    groups_rule = impersonator["rules"][0]
    assert groups_rule["resources"] == ["groups"]
    assert "alpha:scheduler" in groups_rule["resourceNames"]
    assert not any(name.startswith("system:") for name in groups_rule["resourceNames"])
    assert "# alpha: 1 explicit denies are enforced by kproxy only" in out
    assert ("Role", "alpha-*", "kproxy:alpha:researchers-read") not in by_key


def test_the_shipped_json_schema_matches_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert SCHEMA_FILE.read_text() == policy_json_schema_text()
    code, out, _ = run(capsys, "policy", "schema")
    assert code == 0
    assert json.loads(out)["properties"]["kind"]["const"] == "UniversityPolicy"


def test_the_documentation_carries_the_current_schema() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "policies.md").read_text()
    assert f"```json\n{policy_json_schema_text()}```" in docs


def test_explain_maps_claims_with_the_issuers_own_claim_mappings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((DATA / "federation.yaml").read_text())
    config["federation"]["policyDirectory"] = str(EXAMPLES)
    config["authentication"] = {
        "jwt": [
            {
                "issuer": {"url": ALPHA_CLUSTER, "audiences": ["target"]},
                "claimMappings": {
                    "username": {"claim": "sub", "prefix": "alpha-cluster:"}
                },
                "claimValidationRules": [
                    {
                        "expression": "claims.sub.startsWith('system:serviceaccount:')",
                        "message": "only service accounts",
                    }
                ],
            }
        ]
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    claims = {
        "iss": ALPHA_CLUSTER,
        "sub": "system:serviceaccount:admiralty:scheduler",
        "kubernetes.io": {
            "namespace": "admiralty",
            "serviceaccount": {"name": "scheduler", "uid": "u-1"},
        },
    }
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    argv = ("policy", "explain", "--config", str(path), "--claims")

    code, out, _ = run(capsys, *argv, str(tmp_path / "claims.json"), "list", PODS)

    assert code == 0
    assert "approximated" not in out
    assert "decided by: policies/alpha.yaml" in out.replace(str(EXAMPLES), "policies")

    claims["sub"] = "someone"
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    code, out, _ = run(capsys, *argv, str(tmp_path / "claims.json"), "list", PODS)

    assert code == 1
    assert (
        "claim rules refuse these claims: validation rule failed: only service" in out
    )


PODS = "/api/v1/namespaces/alpha/pods"
