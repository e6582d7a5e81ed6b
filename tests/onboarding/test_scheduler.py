"""A source cluster's scheduler reaches the target with a projected token file.

This is Admiralty's path: ``kproxy kubeconfig --token-file`` writes a kubeconfig that
names the token file of a projected volume, and every client built from it sends
whatever token the file holds at the time. Alpha's scheduler may create
``PodChaperon``s in Alpha's namespace and nowhere else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kproxy.standins.federation import LocalFederation
from tests.onboarding.conftest import StartFederation
from tests.onboarding.projected import ProjectedTokenVolume
from tests.onboarding.running import kubectl, run

SCHEDULER = "alpha:admiralty:multicluster-scheduler"
PODCHAPERONS = "/apis/multicluster.admiralty.io/v1alpha1/namespaces/{}/podchaperons"


def _podchaperon(name: str) -> str:
    document: dict[str, Any] = {
        "apiVersion": "multicluster.admiralty.io/v1alpha1",
        "kind": "PodChaperon",
        "metadata": {"name": name, "labels": {"multicluster.admiralty.io/app": "x"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }
    return json.dumps(document)


def _created(federation: LocalFederation, namespace: str) -> list[Any]:
    path = PODCHAPERONS.format(namespace)
    return [
        request
        for request in federation.apiserver.requests
        if request.method == "POST" and request.path == path
    ]


async def _scheduler_kubeconfig(
    kproxy_command: Path, federation: LocalFederation, token_file: Path, output: Path
) -> Path:
    written = await run(
        kproxy_command,
        "kubeconfig",
        f"--server={federation.url}",
        f"--certificate-authority={federation.ca_file}",
        "--embed-certs",
        f"--token-file={token_file}",
        "--namespace=alpha",
        f"--output={output}",
    )
    assert written.returncode == 0, written.stderr
    return output


async def _create(kubeconfig: Path, name: str, *namespace: str) -> Any:
    return await kubectl(
        kubeconfig, "create", "-f", "-", *namespace, input_text=_podchaperon(name)
    )


async def test_the_scheduler_creates_podchaperons_in_its_namespace_only(
    start_federation: StartFederation, kproxy_command: Path, tmp_path: Path
) -> None:
    federation = await start_federation()
    volume = ProjectedTokenVolume(tmp_path / "kproxy-target")
    volume.write(federation.scheduler_token("alpha"))
    kubeconfig = await _scheduler_kubeconfig(
        kproxy_command, federation, volume.token_file, tmp_path / "target.kubeconfig"
    )

    allowed = await _create(kubeconfig, "chaperon-1")
    refused = await _create(kubeconfig, "chaperon-2", "--namespace", "beta")

    assert allowed.returncode == 0, allowed.stderr
    assert "podchaperon.multicluster.admiralty.io/chaperon-1 created" in allowed.stdout
    (created,) = _created(federation, "alpha")
    assert created.header_values("Impersonate-User") == [SCHEDULER]
    assert created.header_values("Impersonate-Group") == ["alpha:scheduler"]
    assert refused.returncode == 1
    assert "Error from server (Forbidden)" in refused.stderr
    assert (
        f'user "{SCHEDULER}" cannot create resource "podchaperons" in API group '
        '"multicluster.admiralty.io" in the namespace "beta"'
    ) in refused.stderr
    assert not _created(federation, "beta")


async def test_each_kubectl_call_sends_the_token_the_file_holds_now(
    start_federation: StartFederation, kproxy_command: Path, tmp_path: Path
) -> None:
    federation = await start_federation()
    volume = ProjectedTokenVolume(tmp_path / "kproxy-target")
    volume.write(federation.scheduler_token("alpha"))
    kubeconfig = await _scheduler_kubeconfig(
        kproxy_command, federation, volume.token_file, tmp_path / "target.kubeconfig"
    )
    first = await _create(kubeconfig, "before-rotation")

    # A rotation that went wrong: the file now holds a token that expired an hour ago.
    an_hour_ago = time.time() - 3600
    volume.write(federation.scheduler_token("alpha", now=an_hour_ago, lifetime=600))
    stale = await kubectl(kubeconfig, "get", "--raw", PODCHAPERONS.format("alpha"))

    volume.write(federation.scheduler_token("alpha"))
    rotated = await _create(kubeconfig, "after-rotation")

    assert first.returncode == 0, first.stderr
    assert stale.returncode == 1
    assert "You must be logged in to the server" in stale.stderr
    assert "expired" in stale.stderr
    assert rotated.returncode == 0, rotated.stderr
    assert len(_created(federation, "alpha")) == 2
