"""``kproxy kubeconfig``: files kubectl and the kubernetes client accept as written."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.oidc.tls import ServingCertificate, issue_serving_certificate

ISSUER = "https://cilogon.org"
SERVER = "https://kproxy.uni-a.example:8443"


@pytest.fixture
def certificate(tmp_path: Path) -> ServingCertificate:
    return issue_serving_certificate(tmp_path, name="kproxy")


def _kubeconfig(kproxy_command: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kproxy_command), "kubeconfig", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _kubectl(kubeconfig: Path, *arguments: str) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_exec_kubeconfig_runs_kproxy_login_with_the_same_flags(
    kproxy_command: Path, certificate: ServingCertificate, tmp_path: Path
) -> None:
    path = tmp_path / "config"
    result = _kubeconfig(
        kproxy_command,
        f"--server={SERVER}",
        f"--certificate-authority={certificate.ca_file}",
        "--name=uni-a",
        "--namespace=physics",
        f"--issuer={ISSUER}",
        "--client-id=cilogon:/client_id/1234",
        "--flow=device",
        "--scope=openid",
        "--scope=email",
        "--scope=org.cilogon.userinfo",
        f"--output={path}",
    )
    assert result.returncode == 0, result.stderr

    view = json.loads(_kubectl(path, "config", "view", "-o", "json"))
    user = view["users"][0]["user"]["exec"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert view["clusters"][0]["cluster"] == {
        "server": SERVER,
        "certificate-authority": str(certificate.ca_file),
    }
    assert view["contexts"][0]["context"] == {
        "cluster": "uni-a",
        "user": "uni-a",
        "namespace": "physics",
    }
    assert user["apiVersion"] == "client.authentication.k8s.io/v1"
    assert user["command"] == "kproxy"
    assert user["interactiveMode"] == "IfAvailable"
    assert user["provideClusterInfo"] is False
    assert user["args"] == [
        "login",
        "--issuer", ISSUER,
        "--client-id", "cilogon:/client_id/1234",
        "--flow", "device",
        "--scope", "openid",
        "--scope", "email",
        "--scope", "org.cilogon.userinfo",
    ]  # fmt: skip
    contexts = _kubectl(path, "config", "get-contexts", "-o", "name")
    assert contexts.split() == ["uni-a"]


def test_token_file_kubeconfig_is_read_by_the_kubernetes_client(
    kproxy_command: Path, certificate: ServingCertificate, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-projected-token")
    result = _kubeconfig(
        kproxy_command,
        f"--server={SERVER}",
        f"--certificate-authority={certificate.ca_file}",
        "--embed-certs",
        f"--token-file={token_file}",
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config"
    path.write_text(result.stdout)

    document = yaml.safe_load(result.stdout)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(path), client_configuration=configuration
    )

    cluster = document["clusters"][0]["cluster"]
    assert document["users"][0]["user"] == {"tokenFile": str(token_file)}
    assert base64.b64decode(cluster["certificate-authority-data"]) == (
        certificate.ca_file.read_bytes()
    )
    assert configuration.api_key["BearerToken"] == "Bearer a-projected-token"
    assert configuration.host == SERVER


def test_relative_paths_for_the_plugin_are_made_absolute(
    kproxy_command: Path, certificate: ServingCertificate, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            str(kproxy_command),
            "kubeconfig",
            f"--server={SERVER}",
            f"--issuer={ISSUER}",
            "--client-id=kubectl",
            f"--issuer-certificate-authority={certificate.ca_file.name}",
            "--cache-dir=cache",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    arguments = yaml.safe_load(result.stdout)["users"][0]["user"]["exec"]["args"]
    ca = arguments[arguments.index("--issuer-certificate-authority") + 1]
    cache = arguments[arguments.index("--cache-dir") + 1]
    assert ca == str(certificate.ca_file)
    assert cache == str(tmp_path / "cache")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--server=http://kproxy:8080", "--token-file=/var/run/token"],
            "is not an https URL",
            id="plain-http-server",
        ),
        pytest.param(
            [f"--server={SERVER}", "--token-file=token"],
            "is not absolute",
            id="relative-token-file",
        ),
        pytest.param(
            [f"--server={SERVER}", "--token-file=/t", f"--issuer={ISSUER}"],
            "not both",
            id="token-file-and-issuer",
        ),
        pytest.param([f"--server={SERVER}"], "give --token-file", id="no-user"),
        pytest.param(
            [f"--server={SERVER}", "--token-file=/t", "--embed-certs"],
            "--embed-certs needs --certificate-authority",
            id="embed-without-ca",
        ),
        pytest.param(
            [f"--server={SERVER}", "--issuer=http://idp", "--client-id=x"],
            "--issuer 'http://idp' is not an https URL",
            id="plain-http-issuer",
        ),
        pytest.param(
            [f"--server={SERVER}", "--token-file=/t", "--certificate-authority=/nope"],
            "cannot read --certificate-authority",
            id="missing-ca",
        ),
    ],
)
def test_unusable_flags_are_refused_with_the_flag_named(
    kproxy_command: Path, flags: list[str], message: str
) -> None:
    result = _kubeconfig(kproxy_command, *flags)

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_file_that_is_not_pem_is_refused_as_certificate_authority(
    kproxy_command: Path, tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate")

    result = _kubeconfig(
        kproxy_command,
        f"--server={SERVER}",
        "--token-file=/var/run/token",
        f"--certificate-authority={not_pem}",
    )

    assert result.returncode == 2
    assert "holds no PEM certificate" in result.stderr
