"""Real kubectl 1.32 against the stand-in: the requests kproxy will carry must work."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from kproxy.auth.identity import UserInfo
from kproxy.standins.apiserver import ApiServer, Binding, PolicyRule

from .conftest import Kubectl, pod, write_kubeconfig

CHAPERON = """\
apiVersion: multicluster.admiralty.io/v1alpha1
kind: PodChaperon
metadata:
  name: chaperon-1
  namespace: default
  labels: {parent: abc}
spec:
  containers: [{name: main, image: busybox}]
"""


async def test_get_pods_prints_the_server_side_table(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("web-1"))

    result = await kubectl("get", "pods")

    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["web-1", "1/1", "Running", "0"]


async def test_list_as_json_filters_by_label(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("a", app="x"))
    apiserver.create(pod("b", app="y"))

    result = await kubectl("get", "pods", "-l", "app in (x)", "-o", "json")

    assert result.returncode == 0, result.stderr
    names = [item["metadata"]["name"] for item in result.json()["items"]]
    assert names == ["a"]


async def test_get_missing_object_prints_not_found(kubectl: Kubectl) -> None:
    result = await kubectl("get", "configmap", "nope")

    assert result.returncode == 1
    assert 'configmaps "nope" not found' in result.stderr


async def test_create_apply_and_delete_a_custom_resource(
    apiserver: ApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "chaperon.yaml"
    manifest.write_text(CHAPERON)

    created = await kubectl("create", "-f", str(manifest))
    manifest.write_text(CHAPERON.replace("parent: abc", "parent: abc, extra: 'yes'"))
    applied = await kubectl("apply", "-f", str(manifest))
    fetched = await kubectl("get", "podchaperons", "chaperon-1", "-o", "json")
    deleted = await kubectl("delete", "-f", str(manifest))
    after = await kubectl("get", "podchaperons", "-o", "json")

    assert created.returncode == 0, created.stderr
    assert applied.returncode == 0, applied.stderr
    assert fetched.json()["metadata"]["labels"] == {"parent": "abc", "extra": "yes"}
    assert deleted.returncode == 0, deleted.stderr
    assert after.json()["items"] == []


async def test_apply_creates_then_patches_a_pod(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod("applied", tier="one")))
    first = await kubectl("apply", "-f", str(manifest))
    manifest.write_text(json.dumps(pod("applied", tier="two")))

    second = await kubectl("apply", "-f", str(manifest))
    fetched = await kubectl("get", "pod", "applied", "-o", "json")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "pod/applied configured" in second.stdout
    assert fetched.json()["metadata"]["labels"] == {"tier": "two"}


async def test_create_in_a_missing_namespace_is_not_found(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod("p", namespace="ghost")))

    result = await kubectl("create", "-f", str(manifest))

    assert result.returncode == 1
    assert 'namespaces "ghost" not found' in result.stderr


async def test_watch_prints_events_as_they_happen(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("first"))
    process = await kubectl.start("get", "pods", "-w", "-o", "name")
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"pod/first\n"
        apiserver.create(pod("second"))
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"pod/second\n"
    finally:
        process.kill()
        await process.wait()


async def test_logs_follow_streams_appended_lines_until_the_pod_is_deleted(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("logger"))
    apiserver.append_log("default", "logger", "one\n")
    process = await kubectl.start("logs", "-f", "logger")
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"one\n"
        apiserver.append_log("default", "logger", "two\n")
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"two\n"
        await kubectl("delete", "pod", "logger", "--wait=false")
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_exec_runs_a_command_over_websocket(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("shell"))

    result = await kubectl("exec", "shell", "--", "echo", "hi")

    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr
    upgrade = apiserver.requests[-1]
    assert upgrade.path == "/api/v1/namespaces/default/pods/shell/exec"
    assert upgrade.header_values("Upgrade") == ["websocket"]
    assert "v5.channel.k8s.io" in upgrade.header_values("Sec-WebSocket-Protocol")[0]


async def test_exec_with_stdin_echoes_it_back(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("shell"))

    result = await kubectl("exec", "-i", "shell", "--", "cat", stdin=b"hello\nworld\n")

    assert (result.returncode, result.stdout) == (0, "hello\nworld\n"), result.stderr


async def test_exec_reports_a_non_zero_exit_code(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("shell"))

    result = await kubectl("exec", "shell", "--", "sh", "-c", "exit 3")

    assert result.returncode == 3
    assert "command terminated with exit code 3" in result.stderr


async def test_exec_whoami_prints_the_impersonated_user(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("shell"))

    result = await kubectl(
        "exec", "shell", "--as=alice", "--as-group=system:masters", "--", "whoami"
    )

    assert result.stdout == "alice\n", result.stderr


async def test_client_certificate_authenticates(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    credentials = apiserver.add_user(
        UserInfo(username="cert-user", groups=("system:masters",))
    )
    kubectl = Kubectl(
        write_kubeconfig(apiserver, credentials, tmp_path, use_certificate=True)
    )

    result = await kubectl("get", "namespaces", "-o", "name")

    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout.splitlines()
    assert apiserver.requests[-1].caller == UserInfo(
        username="cert-user", groups=("system:masters", "system:authenticated")
    )


async def test_unknown_token_is_unauthorized(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    credentials = apiserver.add_user(UserInfo(username="someone"))
    config = apiserver.kubeconfig(credentials)
    config["users"][0]["user"]["token"] = "not-a-token"
    path = tmp_path / "bad.kubeconfig"
    path.write_text(json.dumps(config))

    result = await Kubectl(path)("get", "pods")

    assert result.returncode == 1
    assert "error: You must be logged in to the server" in result.stderr
    assert apiserver.requests[-1].caller is None


async def test_rbac_denial_is_printed_as_the_api_server_words_it(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    reader = apiserver.add_user(UserInfo(username="reader"))
    apiserver.grant(
        Binding(
            rules=(PolicyRule(verbs=("get", "list"), resources=("configmaps",)),),
            users=("reader",),
            namespace="team",
        )
    )
    kubectl = Kubectl(write_kubeconfig(apiserver, reader, tmp_path))

    result = await kubectl("get", "pods", "-n", "team")

    assert result.returncode == 1
    assert (
        'pods is forbidden: User "reader" cannot list resource "pods" in API group "" '
        'in the namespace "team"'
    ) in result.stderr
