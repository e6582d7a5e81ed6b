"""The source cluster's side: a token file for the target's audience, no secret."""

from __future__ import annotations

import base64
import subprocess
from pathlib import PurePosixPath
from typing import Any, Final

import kubernetes_validate
import yaml

from kproxy.config import load_configuration
from tests.deploy.rendering import DEPLOY, KUBECTL, Manifest, kustomize, one

SOURCE: Final = DEPLOY / "source"

ADMIRALTY: Final = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: admiralty-controller-manager
  namespace: admiralty
spec:
  selector:
    matchLabels: {app: admiralty}
  template:
    metadata:
      labels: {app: admiralty}
    spec:
      containers:
        - name: controller-manager
          image: quay.io/admiralty/multicluster-scheduler-agent:0.17.0
"""


def kubeconfig(manifests: list[Manifest]) -> dict[str, Any]:
    secret = one(manifests, "Secret", "kproxy-target")
    config: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["config"]))
    return config


def target_audiences() -> set[str]:
    settings = load_configuration(DEPLOY / "target" / "base" / "config.yaml").settings
    return {
        audience
        for jwt in settings.authentication.jwt
        for audience in jwt.issuer.audiences
    }


def test_the_kubeconfig_names_a_token_file_and_holds_no_credential() -> None:
    config = kubeconfig(kustomize(SOURCE))

    (user,) = config["users"]
    assert set(user["user"]) == {"tokenFile"}
    (cluster,) = config["clusters"]
    assert cluster["cluster"]["server"].startswith("https://")


def test_the_admiralty_target_reads_that_kubeconfig() -> None:
    manifests = kustomize(SOURCE)

    target = one(manifests, "Target")

    assert target["spec"]["kubeconfigSecret"]["name"] == "kproxy-target"
    assert (
        target["metadata"]["namespace"]
        == one(manifests, "Secret")["metadata"]["namespace"]
    )


def test_the_example_client_mounts_a_projected_token_for_the_target_audience() -> None:
    manifests = kustomize(SOURCE)
    token_file = PurePosixPath(kubeconfig(manifests)["users"][0]["user"]["tokenFile"])
    pod = one(manifests, "Pod")["spec"]

    assert_projected_token(pod, pod["containers"][0], token_file)


def test_the_admiralty_patch_gives_the_controller_the_same_token(tmp_path) -> None:
    deployment = tmp_path / "admiralty.yaml"
    deployment.write_text(ADMIRALTY)
    patched = subprocess.run(
        [
            KUBECTL,
            "patch",
            "--local",
            "--type=strategic",
            f"--filename={deployment}",
            f"--patch-file={SOURCE / 'admiralty-token-patch.yaml'}",
            "--output=yaml",
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert patched.returncode == 0, patched.stderr
    manifest = yaml.safe_load(patched.stdout)
    kubernetes_validate.validate(manifest, "1.32", strict=True)
    token_file = PurePosixPath(
        kubeconfig(kustomize(SOURCE))["users"][0]["user"]["tokenFile"]
    )

    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "quay.io/admiralty/multicluster-scheduler-agent:0.17.0"
    assert_projected_token(pod, container, token_file)


def assert_projected_token(
    pod: dict[str, Any], container: dict[str, Any], token_file: PurePosixPath
) -> None:
    (mount,) = [
        m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent)
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["path"] == token_file.name
    assert token["audience"] in target_audiences()
    assert token["expirationSeconds"] <= 3600
