"""The authentication configuration: kube-apiserver's schema and rules, with lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kproxy.auth.config import (
    ASYMMETRIC_ALGORITHMS,
    AuthenticationSettings,
    load_authentication_configuration,
    resolve_authentication_settings,
)
from kproxy.errors import ConfigError

HEADER = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
"""

VALID = (
    HEADER
    + """\
    url: https://cluster-a.example
    audiences: [kproxy]
  claimMappings:
    username:
      claim: sub
      prefix: "cluster-a:"
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authentication.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_api_server_file_loads_with_kproxy_defaults(tmp_path: Path) -> None:
    settings = load_authentication_configuration(write(tmp_path, VALID))

    (entry,) = settings.jwt
    assert entry.issuer.url == "https://cluster-a.example"
    assert entry.issuer.discovery_document_url == (
        "https://cluster-a.example/.well-known/openid-configuration"
    )
    assert entry.allowed_algorithms == ASYMMETRIC_ALGORITHMS
    assert settings.allow_system_names is False


ERROR_CASES = [
    pytest.param(
        VALID.replace('      prefix: "cluster-a:"\n', ""),
        8,
        "jwt[0].claimMappings.username",
        "prefix is required",
        id="username-claim-without-prefix",
    ),
    pytest.param(
        VALID + "    groups: {claim: groups}\n",
        11,
        "jwt[0].claimMappings.groups",
        "prefix is required",
        id="groups-claim-without-prefix",
    ),
    pytest.param(
        VALID + "    colour: blue\n",
        11,
        "jwt[0].claimMappings.colour",
        "unknown field",
        id="unknown-field",
    ),
    pytest.param(
        VALID.replace(
            "      claim: sub\n", '      expression: "claims.sub +"\n'
        ).replace('      prefix: "cluster-a:"\n', ""),
        9,
        "jwt[0].claimMappings.username.expression",
        "invalid CEL expression",
        id="cel-syntax-error",
    ),
    pytest.param(
        VALID + "  allowedAlgorithms: [RS256, HS256]\n",
        11,
        "jwt[0].allowedAlgorithms",
        "'HS256' is never accepted",
        id="hmac-algorithm",
    ),
    pytest.param(
        VALID + "  allowedAlgorithms: [none]\n",
        11,
        "jwt[0].allowedAlgorithms",
        "'none' is never accepted",
        id="none-algorithm",
    ),
    pytest.param(
        VALID.replace("https://cluster-a", "http://cluster-a"),
        5,
        "jwt[0].issuer.url",
        "must be https",
        id="plain-http-issuer",
    ),
    pytest.param(
        VALID.replace("https://cluster-a.example", "https://cluster-a.example?x=1"),
        5,
        "jwt[0].issuer.url",
        "must not contain a query",
        id="issuer-with-query",
    ),
    pytest.param(
        VALID.replace("[kproxy]", "[kproxy, other]"),
        4,
        "jwt[0].issuer",
        "must be MatchAny",
        id="two-audiences-without-match-any",
    ),
    pytest.param(
        VALID.replace("[kproxy]", "[]"),
        6,
        "jwt[0].issuer.audiences",
        "at least one audience",
        id="no-audience",
    ),
    pytest.param(
        VALID.replace(
            "    audiences",
            "    discoveryURL: https://cluster-a.example/\n    audiences",
        ),
        4,
        "jwt[0].issuer",
        "discoveryURL must be different",
        id="discovery-url-equals-url",
    ),
    pytest.param(
        VALID.replace(
            "    audiences", "    certificateAuthority: nonsense\n    audiences"
        ),
        6,
        "jwt[0].issuer.certificateAuthority",
        "not PEM",
        id="certificate-authority-not-pem",
    ),
    pytest.param(
        VALID
        + "    extra:\n    - key: kubernetes.io/team\n      valueExpression: claims.team\n",
        12,
        "jwt[0].claimMappings.extra[0].key",
        "reserved for Kubernetes",
        id="extra-key-reserved",
    ),
    pytest.param(
        VALID.replace("      claim: sub\n", "      expression: claims.email\n").replace(
            '      prefix: "cluster-a:"\n', ""
        ),
        4,
        "jwt[0]",
        "claims.email_verified must be used",
        id="email-username-without-email-verified",
    ),
    pytest.param(
        VALID + "  claimValidationRules:\n  - claim: hd\n    message: nope\n",
        12,
        "jwt[0].claimValidationRules[0]",
        "message may not be specified",
        id="message-with-claim-rule",
    ),
    pytest.param(
        VALID + VALID[VALID.index("- issuer") :],
        3,
        "jwt",
        "appears more than once",
        id="duplicate-issuer",
    ),
    pytest.param(
        VALID.replace("kind: AuthenticationConfiguration", "kind: Authentication"),
        2,
        "kind",
        "",
        id="wrong-kind",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), ERROR_CASES)
def test_configuration_errors_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_authentication_configuration(path)

    problems = [(p.file, p.line, p.field) for p in caught.value.problems]
    assert (str(path), line, field) in problems
    assert message in str(caught.value)


def test_email_username_with_email_verified_rule_is_accepted(tmp_path: Path) -> None:
    text = (
        VALID.replace("      claim: sub\n", "      expression: claims.email\n").replace(
            '      prefix: "cluster-a:"\n', ""
        )
        + "  claimValidationRules:\n  - expression: claims.email_verified == true\n"
    )

    settings = load_authentication_configuration(write(tmp_path, text))

    assert settings.jwt[0].claim_mappings.username.expression is not None


def test_loopback_issuer_may_use_plain_http(tmp_path: Path) -> None:
    text = VALID.replace("https://cluster-a.example", "http://127.0.0.1:8443")

    settings = load_authentication_configuration(write(tmp_path, text))

    assert settings.jwt[0].issuer.url == "http://127.0.0.1:8443"


def test_configuration_file_is_read_relative_to_its_referrer(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    settings = AuthenticationSettings.model_validate(
        {"configurationFile": "authentication.yaml", "allowSystemNames": True}
    )

    resolved = resolve_authentication_settings(settings, base_dir=tmp_path)

    assert [a.issuer.url for a in resolved.jwt] == ["https://cluster-a.example"]
    assert resolved.allow_system_names is True


def test_configuration_file_and_inline_jwt_are_exclusive() -> None:
    entry = {
        "issuer": {"url": "https://a.example", "audiences": ["x"]},
        "claimMappings": {"username": {"claim": "sub", "prefix": ""}},
    }

    with pytest.raises(ValueError, match="mutually exclusive"):
        AuthenticationSettings.model_validate(
            {"configurationFile": "a.yaml", "jwt": [entry]}
        )


def test_missing_configuration_file_is_a_config_error(tmp_path: Path) -> None:
    settings = AuthenticationSettings.model_validate(
        {"configurationFile": "absent.yaml"}
    )

    with pytest.raises(ConfigError, match="cannot read file"):
        resolve_authentication_settings(settings, base_dir=tmp_path)
