"""kubectl itself, with a kubeconfig from ``kproxy kubeconfig``, sends our tokens."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes

from tests.login.driving import DeviceLoginInThread, provider_flags, provider_settings
from tests.login.recording import recording_server
from tests.oidc.browser import Person
from tests.oidc.harness import OidcProvider
from tests.oidc.tls import issue_serving_certificate


def _kubectl(kubeconfig: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _write_kubeconfig(
    kproxy_command: Path, path: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kproxy_command), "kubeconfig", "--output", str(path), *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_kubectl_runs_kproxy_login_and_sends_the_providers_id_token(
    oidc_provider: OidcProvider,
    kproxy_command: Path,
    cache_home: Path,
    person: Person,
    tmp_path: Path,
) -> None:
    settings = provider_settings(oidc_provider, flow="device")
    credential = DeviceLoginInThread(settings).run(person)
    certificate = issue_serving_certificate(tmp_path, name="kproxy")
    kubeconfig = tmp_path / "kubeconfig"

    with recording_server(certificate) as server:
        written = _write_kubeconfig(
            kproxy_command,
            kubeconfig,
            f"--server=https://127.0.0.1:{server.server_port}",
            f"--certificate-authority={certificate.ca_file}",
            f"--login-command={kproxy_command}",
            *provider_flags(oidc_provider, "--flow", "device"),
        )
        assert written.returncode == 0, written.stderr
        result = _kubectl(kubeconfig, "get", "--raw", "/version")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gitVersion"] == "v1.32.0"
    assert ("/version", f"Bearer {credential.token}") in server.requests
    assert {authorization for _, authorization in server.requests} == {
        f"Bearer {credential.token}"
    }


def test_the_kubernetes_client_runs_the_same_exec_user(
    oidc_provider: OidcProvider,
    kproxy_command: Path,
    cache_home: Path,
    person: Person,
    tmp_path: Path,
) -> None:
    settings = provider_settings(oidc_provider, flow="device")
    credential = DeviceLoginInThread(settings).run(person)
    certificate = issue_serving_certificate(tmp_path, name="kproxy")
    kubeconfig = tmp_path / "kubeconfig"
    written = _write_kubeconfig(
        kproxy_command,
        kubeconfig,
        "--server=https://127.0.0.1:6443",
        f"--certificate-authority={certificate.ca_file}",
        "--embed-certs",
        f"--login-command={kproxy_command}",
        *provider_flags(oidc_provider, "--flow", "device"),
    )
    assert written.returncode == 0, written.stderr

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )

    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.api_key["BearerToken"] == f"Bearer {credential.token}"
    assert (
        Path(configuration.ssl_ca_cert).read_bytes() == certificate.ca_file.read_bytes()
    )


def test_kubectl_sends_the_token_file_of_a_token_file_kubeconfig(
    kproxy_command: Path, tmp_path: Path
) -> None:
    certificate = issue_serving_certificate(tmp_path, name="kproxy")
    token_file = tmp_path / "token"
    token_file.write_text("projected-service-account-token\n")
    kubeconfig = tmp_path / "kubeconfig"

    with recording_server(certificate) as server:
        written = _write_kubeconfig(
            kproxy_command,
            kubeconfig,
            f"--server=https://127.0.0.1:{server.server_port}",
            f"--certificate-authority={certificate.ca_file}",
            f"--token-file={token_file}",
        )
        assert written.returncode == 0, written.stderr
        result = _kubectl(kubeconfig, "get", "--raw", "/version")

    assert result.returncode == 0, result.stderr
    assert server.requests
    assert {authorization for _, authorization in server.requests} == {
        "Bearer projected-service-account-token"
    }
