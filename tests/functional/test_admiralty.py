"""The Admiralty path: a source cluster's scheduler works with PodChaperons in a target.

The example universities (``policies/``) give their schedulers what Admiralty needs
in their own namespace: create, list, watch, merge-patch and collection-delete
``PodChaperon`` objects, and list ``ClusterSummary`` objects cluster-wide. Anything
else, another university's namespace or a list across all namespaces, is refused by
kproxy with a 403 that says no rule matched. Both the ``kubernetes`` Python client's
``CustomObjectsApi`` and kubectl are used, as Admiralty and its operators would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from kproxy.standins.federation import LocalFederation

from .clients import Kubectl, kubectl_for, python_client, read_line, status_of

GROUP: Final = "multicluster.admiralty.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "podchaperons"
UNIVERSITIES: Final = ("alpha", "beta", "gamma")
SCHEDULER_USER: Final = {
    "alpha": "alpha:admiralty:multicluster-scheduler",
    "beta": "beta:scheduler",
    "gamma": "gamma:multicluster-scheduler",
}


def chaperon(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PodChaperon",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def cluster_summary() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSummary",
        "metadata": {"name": "singleton"},
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1100"},
        "allocatable": {"cpu": "60", "memory": "240Gi", "pods": "1000"},
    }


@pytest.fixture
def custom(federation: LocalFederation) -> Iterator[client.CustomObjectsApi]:
    """alpha's scheduler, through kproxy, with the Python client."""
    token = federation.scheduler_token("alpha")
    with python_client(federation, token, name="alpha") as api_client:
        yield client.CustomObjectsApi(api_client)


@pytest.fixture
def kubectl(federation: LocalFederation) -> Kubectl:
    token = federation.scheduler_token("alpha")
    return kubectl_for(federation, token, name="alpha-kubectl", namespace="alpha")


def names(listing: dict[str, Any]) -> list[str]:
    return sorted(item["metadata"]["name"] for item in listing["items"])


def watched_events(
    custom: client.CustomObjectsApi, namespace: str, resource_version: str, count: int
) -> list[tuple[str, str]]:
    """Read ``count`` events of a watch from ``resource_version``, then stop it."""
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        resource_version=resource_version,
        allow_watch_bookmarks=False,
        timeout_seconds=20,
    )
    events: list[tuple[str, str]] = []
    try:
        for event in stream:
            events.append((event["type"], event["object"]["metadata"]["name"]))
            if len(events) == count:
                break
    finally:
        stream.close()
    return events


async def refusal(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call the Python client expecting a 403, and return the ``Status`` body."""
    with pytest.raises(ApiException) as caught:
        await asyncio.to_thread(call, *args, **kwargs)
    assert caught.value.status == 403
    status = status_of(caught.value.body)
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    return status


async def test_the_scheduler_creates_lists_and_watches_podchaperons(
    federation: LocalFederation, custom: client.CustomObjectsApi
) -> None:
    created = await asyncio.to_thread(
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "alpha",
        PLURAL,
        chaperon("first", "alpha", parent="abc"),
    )
    listed = await asyncio.to_thread(
        custom.list_namespaced_custom_object, GROUP, VERSION, "alpha", PLURAL
    )
    federation.apiserver.create(chaperon("second", "alpha", parent="abc"))
    federation.apiserver.create(chaperon("third", "alpha", parent="def"))

    events = await asyncio.to_thread(
        watched_events, custom, "alpha", listed["metadata"]["resourceVersion"], 2
    )

    assert created["metadata"]["uid"]
    assert names(listed) == ["first"]
    assert events == [("ADDED", "second"), ("ADDED", "third")]


async def test_the_scheduler_merge_patches_and_collection_deletes(
    federation: LocalFederation, custom: client.CustomObjectsApi
) -> None:
    for name, parent in (("a", "abc"), ("b", "abc"), ("c", "other")):
        federation.apiserver.create(chaperon(name, "alpha", parent=parent))
    patch = {
        "metadata": {"annotations": {"multicluster.admiralty.io/is-reserved": "true"}}
    }

    patched = await asyncio.to_thread(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        "alpha",
        PLURAL,
        "a",
        patch,
    )
    patch_request = federation.apiserver.requests[-1]
    await asyncio.to_thread(
        custom.delete_collection_namespaced_custom_object,
        GROUP,
        VERSION,
        "alpha",
        PLURAL,
        label_selector="parent=abc",
    )
    delete_request = federation.apiserver.requests[-1]
    remaining = await asyncio.to_thread(
        custom.list_namespaced_custom_object, GROUP, VERSION, "alpha", PLURAL
    )

    assert patched["metadata"]["annotations"] == patch["metadata"]["annotations"]
    assert patched["metadata"]["labels"] == {"parent": "abc"}
    assert patch_request.method == "PATCH"
    assert patch_request.header_values("Content-Type") == [
        "application/merge-patch+json"
    ]
    assert (delete_request.method, delete_request.query_string) == (
        "DELETE",
        "labelSelector=parent%3Dabc",
    )
    assert names(remaining) == ["c"]


async def test_the_scheduler_lists_cluster_summaries_cluster_wide(
    federation: LocalFederation, custom: client.CustomObjectsApi
) -> None:
    federation.apiserver.create(cluster_summary())

    listed = await asyncio.to_thread(
        custom.list_cluster_custom_object, GROUP, VERSION, "clustersummaries"
    )

    assert names(listed) == ["singleton"]
    assert listed["items"][0]["allocatable"]["pods"] == "1000"


async def test_another_universitys_namespace_is_refused_naming_no_rule(
    federation: LocalFederation, custom: client.CustomObjectsApi
) -> None:
    federation.apiserver.create(chaperon("theirs", "beta"))

    created = await refusal(
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "beta",
        PLURAL,
        chaperon("mine", "beta"),
    )
    listed = await refusal(
        custom.list_namespaced_custom_object, GROUP, VERSION, "beta", PLURAL
    )

    user = SCHEDULER_USER["alpha"]
    assert created["message"] == (
        f'user "{user}" cannot create resource "podchaperons" in API group '
        f'"{GROUP}" in the namespace "beta": no rule matched'
    )
    assert listed["message"].endswith('in the namespace "beta": no rule matched')
    assert created["details"] == {"group": GROUP, "kind": PLURAL}
    assert [
        r.path for r in federation.apiserver.requests if "/namespaces/beta/" in r.path
    ] == []


async def test_listing_podchaperons_across_all_namespaces_is_refused(
    federation: LocalFederation, custom: client.CustomObjectsApi
) -> None:
    federation.apiserver.create(chaperon("mine", "alpha"))

    status = await refusal(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)

    assert status["message"] == (
        f'user "{SCHEDULER_USER["alpha"]}" cannot list resource "podchaperons" in '
        f'API group "{GROUP}" at the cluster scope: no rule matched'
    )


async def test_kubectl_drives_the_same_podchaperon_life_cycle(
    federation: LocalFederation, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "chaperon.json"
    manifest.write_text(json.dumps(chaperon("web", "alpha", parent="abc")))
    federation.apiserver.create(cluster_summary())

    async with kubectl.running("get", PLURAL, "-w", "-o", "name") as watching:
        created = await kubectl("create", "-f", str(manifest))
        added = await read_line(watching)
        deleted = await kubectl("delete", PLURAL, "-l", "parent=abc", "--wait=false")
        removed = await read_line(watching)
    summaries = await kubectl("get", "clustersummaries", "-o", "name")
    remaining = await kubectl("get", PLURAL, "-o", "json")

    assert created.stdout == "podchaperon.multicluster.admiralty.io/web created\n"
    assert deleted.stdout == 'podchaperon.multicluster.admiralty.io "web" deleted\n'
    assert added == removed == "podchaperon.multicluster.admiralty.io/web\n"
    assert summaries.stdout == "clustersummary.multicluster.admiralty.io/singleton\n"
    assert remaining.json()["items"] == []


async def test_kubectl_patch_is_refused_because_it_reads_first(
    federation: LocalFederation, kubectl: Kubectl
) -> None:
    federation.apiserver.create(chaperon("web", "alpha"))

    result = await kubectl("patch", PLURAL, "web", "--type=merge", "-p", "{}")

    # Admiralty patches without reading; its least access has no "get", so
    # kubectl's read before the patch is what kproxy refuses.
    assert result.returncode == 1
    assert 'cannot get resource "podchaperons"' in result.stderr
    assert result.stderr.rstrip().endswith("no rule matched")


async def test_kubectl_is_refused_in_another_namespace_and_across_all(
    kubectl: Kubectl,
) -> None:
    other = await kubectl("get", PLURAL, "-n", "beta")
    everywhere = await kubectl("get", PLURAL, "--all-namespaces")

    assert other.returncode == everywhere.returncode == 1
    assert other.stderr.strip() == (
        'Error from server (Forbidden): user "alpha:admiralty:multicluster-scheduler" '
        'cannot list resource "podchaperons" in API group "multicluster.admiralty.io" '
        'in the namespace "beta": no rule matched'
    )
    assert everywhere.stderr.startswith("Error from server (Forbidden): ")
    assert "at the cluster scope: no rule matched" in everywhere.stderr


@pytest.mark.parametrize("university", UNIVERSITIES)
async def test_each_example_university_works_in_its_own_namespace_only(
    federation: LocalFederation, university: str
) -> None:
    token = federation.scheduler_token(university)
    with python_client(federation, token, name=university) as api_client:
        custom = client.CustomObjectsApi(api_client)
        listed = await asyncio.to_thread(
            custom.list_namespaced_custom_object, GROUP, VERSION, university, PLURAL
        )
        await asyncio.to_thread(
            custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            university,
            PLURAL,
            chaperon("job-1", university),
        )
        events = await asyncio.to_thread(
            watched_events, custom, university, listed["metadata"]["resourceVersion"], 1
        )
        refusals = []
        for namespace in UNIVERSITIES:
            if namespace == university:
                continue
            refusals.append(
                await refusal(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                )
            )
            refusals.append(
                await refusal(
                    custom.create_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    chaperon("x", namespace),
                )
            )

    assert events == [("ADDED", "job-1")]
    created_by = [
        r.user.username
        for r in federation.apiserver.requests
        if r.method == "POST" and r.user is not None
    ]
    assert created_by == [SCHEDULER_USER[university]]
    assert len(refusals) == 4
    for status in refusals:
        assert status["message"].startswith(f'user "{SCHEDULER_USER[university]}" ')
        assert status["message"].endswith(": no rule matched")


@pytest.mark.parametrize("university", UNIVERSITIES)
async def test_each_scheduler_reads_pod_logs_as_admiralty_does(
    federation: LocalFederation, university: str
) -> None:
    other = "gamma" if university != "gamma" else "alpha"
    for namespace in (university, other):
        federation.apiserver.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "delegated", "namespace": namespace},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            }
        )
        federation.apiserver.append_log(namespace, "delegated", f"in {namespace}\n")
    token = federation.scheduler_token(university)

    with python_client(federation, token, name=university) as api_client:
        core = client.CoreV1Api(api_client)
        # Admiralty finds the delegate by label, then reads pods/log directly.
        pods = await asyncio.to_thread(core.list_namespaced_pod, university)
        log = await asyncio.to_thread(
            core.read_namespaced_pod_log, "delegated", university
        )
        refused = await refusal(core.read_namespaced_pod_log, "delegated", other)

    assert [p.metadata.name for p in pods.items] == ["delegated"]
    assert log == f"in {university}\n"
    assert refused["message"].endswith(": no rule matched")
