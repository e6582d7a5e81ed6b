"""The target cluster's manifests: least privilege, hardened pods, consistent wiring."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Final

import pytest

from kproxy.cli import build_parser
from kproxy.config import load_configuration
from kproxy.policy.loading import load_policy_file, policy_files
from tests.deploy.rendering import DEPLOY, Manifest, all_of, kustomize, one

BASE: Final = DEPLOY / "target" / "base"
CONFIG_PATH: Final = "/etc/kproxy/config.yaml"


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def pod(base: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(base, "Deployment", "kproxy")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return only  # type: ignore[no-any-return]


def mount_of(container: dict[str, Any], volume: str) -> dict[str, Any]:
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return mount  # type: ignore[no-any-return]


def volume_of(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume  # type: ignore[no-any-return]


def test_everything_namespaced_lives_in_the_kproxy_namespace(
    base: list[Manifest],
) -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    }

    namespaces = {
        m["metadata"].get("namespace") for m in base if m["kind"] not in cluster_scoped
    }

    assert namespaces == {"kproxy"}
    assert one(base, "Namespace")["metadata"]["name"] == "kproxy"


def test_the_cluster_role_allows_only_impersonation_and_reading_grants(
    base: list[Manifest],
) -> None:
    rules = one(base, "ClusterRole", "kproxy")["rules"]

    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "users", "impersonate"),
        ("", "groups", "impersonate"),
        ("", "serviceaccounts", "impersonate"),
        ("authentication.k8s.io", "uids", "impersonate"),
        ("authentication.k8s.io", "userextras/kproxy.io/issuer", "impersonate"),
        ("authentication.k8s.io", "userextras/kproxy.io/subject", "impersonate"),
        (
            "authentication.k8s.io",
            "userextras/authentication.kubernetes.io/credential-id",
            "impersonate",
        ),
        ("kproxy.io", "namespacegrants", "list"),
        ("kproxy.io", "namespacegrants", "watch"),
    }
    assert all("resourceNames" not in rule for rule in rules)


def test_the_role_is_bound_to_the_pods_service_account(
    base: list[Manifest], pod: dict[str, Any]
) -> None:
    binding = one(base, "ClusterRoleBinding", "kproxy")

    assert binding["roleRef"]["name"] == "kproxy"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": "kproxy",
        }
    ]
    assert one(base, "ServiceAccount", pod["serviceAccountName"])


def test_the_deployment_is_highly_available(
    base: list[Manifest], pod: dict[str, Any]
) -> None:
    deployment = one(base, "Deployment", "kproxy")

    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (term,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )


def test_the_pod_runs_unprivileged_on_a_read_only_root(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in context


def test_only_tmp_is_writable(pod: dict[str, Any], container: dict[str, Any]) -> None:
    writable = [
        m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")
    ]

    assert writable == ["/tmp"]
    assert "emptyDir" in volume_of(pod, mount_of(container, "tmp")["name"])


def test_requests_and_limits_are_set(container: dict[str, Any]) -> None:
    resources = container["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_use_the_probe_port(container: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert ports == {"https": 8443, "probes": 8081}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "probes",
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "probes"}


def test_the_service_account_token_is_projected_and_no_secret_holds_one(
    base: list[Manifest], pod: dict[str, Any]
) -> None:
    assert pod["automountServiceAccountToken"] is True
    assert (
        one(base, "ServiceAccount", "kproxy")["automountServiceAccountToken"] is False
    )
    assert all_of(base, "Secret") == []
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == ["kproxy-serving-cert"]


def test_the_mounted_config_is_the_one_kproxy_is_started_with(
    base: list[Manifest], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    mount = mount_of(container, "config")
    config_map = one(base, "ConfigMap", volume_of(pod, "config")["configMap"]["name"])

    assert container["args"] == ["serve", "--config", CONFIG_PATH]
    assert mount["mountPath"] == CONFIG_PATH
    assert mount["subPath"] in config_map["data"]


def test_every_policy_config_map_is_mounted_in_the_policy_directory(
    base: list[Manifest], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    sources = volume_of(pod, "policies")["projected"]["sources"]
    mounted = {source["configMap"]["name"] for source in sources}
    labelled = {
        m["metadata"]["name"]
        for m in all_of(base, "ConfigMap")
        if m["metadata"].get("labels", {}).get("kproxy.io/policy") == "university"
    }

    assert mounted == labelled
    assert mount_of(container, "policies")["mountPath"] == "/etc/kproxy/policies"


def test_the_config_file_loads_and_its_paths_match_the_mounts(
    container: dict[str, Any],
) -> None:
    loaded = load_configuration(BASE / "config.yaml")
    settings = loaded.settings
    assert settings.serving.tls is not None

    in_pod = PurePosixPath(CONFIG_PATH).parent
    cert = in_pod / settings.serving.tls.cert_file
    key = in_pod / settings.serving.tls.key_file
    policies = in_pod / settings.federation.policy_directory
    tls_mount = PurePosixPath(mount_of(container, "serving-cert")["mountPath"])
    assert cert.parent == key.parent == tls_mount
    assert str(policies) == mount_of(container, "policies")["mountPath"]
    assert settings.serving.port == 8443
    assert settings.serving.probes.port == 8081
    assert settings.upstream.in_cluster
    assert "kproxy" in settings.federation.reserved_namespaces


def test_the_example_policies_load_under_the_example_guardrails() -> None:
    federation = load_configuration(BASE / "config.yaml").settings.federation

    files = policy_files(BASE / "policies")

    assert [path.name for path in files] == ["example.yaml"]
    for path in files:
        assert load_policy_file(path, federation).name == path.stem


def test_service_budget_autoscaler_and_network_policy_select_the_pods(
    base: list[Manifest],
) -> None:
    deployment = one(base, "Deployment", "kproxy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    service = one(base, "Service", "kproxy")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "https"
    budget = one(base, "PodDisruptionBudget", "kproxy")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = one(base, "HorizontalPodAutoscaler", "kproxy")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "kproxy"
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    network = one(base, "NetworkPolicy", "kproxy")
    assert network["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(network["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_the_load_balancer_overlay_keeps_client_addresses() -> None:
    service = one(kustomize(DEPLOY / "target" / "overlays" / "loadbalancer"), "Service")

    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"


def test_cert_manager_writes_the_secret_the_pods_mount() -> None:
    manifests = kustomize(DEPLOY / "target" / "overlays" / "cert-manager")

    certificate = one(manifests, "Certificate")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert certificate["metadata"]["namespace"] == "kproxy"
    assert (
        certificate["spec"]["secretName"]
        == volume_of(pod, "serving-cert")["secret"]["secretName"]
    )
    assert one(manifests, "Service")["spec"]["type"] == "LoadBalancer"


def test_the_policy_directory_of_the_base_holds_policy_files_only() -> None:
    assert {path.suffix for path in Path(BASE / "policies").iterdir()} == {".yaml"}


def test_the_config_map_is_a_configuration_kproxy_serve_loads(
    base: list[Manifest], pod: dict[str, Any], container: dict[str, Any], tmp_path: Path
) -> None:
    config_map = one(base, "ConfigMap", volume_of(pod, "config")["configMap"]["name"])
    mounted = tmp_path / PurePosixPath(CONFIG_PATH).name
    mounted.write_text(config_map["data"][mount_of(container, "config")["subPath"]])

    arguments = build_parser(container["args"]).parse_args(container["args"])
    settings = load_configuration(mounted).settings

    assert arguments.command == "serve"
    assert str(arguments.config) == CONFIG_PATH
    assert arguments.workers is None
    assert settings == load_configuration(BASE / "config.yaml").settings


def test_ports_annotations_and_grace_periods_agree_with_the_configuration(
    pod: dict[str, Any], container: dict[str, Any], base: list[Manifest]
) -> None:
    serving = load_configuration(BASE / "config.yaml").settings.serving
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    annotations = one(base, "Deployment", "kproxy")["spec"]["template"]["metadata"][
        "annotations"
    ]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]

    assert ports["https"] == serving.port
    assert ports["probes"] == serving.probes.port
    assert annotations["prometheus.io/port"] == str(serving.probes.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The kubelet kills the container at the end of terminationGracePeriodSeconds,
    # which counts the preStop pause: kproxy's drain must fit after it.
    assert (
        pod["terminationGracePeriodSeconds"]
        >= pre_stop + serving.shutdown_grace_period_seconds + 1
    )
    # One process per pod: audit to stdout and scale with replicas.
    assert serving.workers == 1
