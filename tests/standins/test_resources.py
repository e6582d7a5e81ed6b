"""Resource semantics over plain HTTP: versions, paging, conflicts, patches, watches."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from kproxy.standins.apiserver import ApiServer, Credentials

from .conftest import bearer, pod

PODS = "/api/v1/namespaces/default/pods"


async def _json(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.read())


async def test_not_found_status_names_the_object(
    http: aiohttp.ClientSession, admin: Credentials
) -> None:
    async with http.get(
        "/apis/multicluster.admiralty.io/v1alpha1/clustersummaries/singleton",
        headers=bearer(admin),
    ) as response:
        body = await _json(response)

    assert response.status == 404
    assert (
        body["message"]
        == 'clustersummaries.multicluster.admiralty.io "singleton" not found'
    )
    assert body["details"] == {
        "name": "singleton",
        "group": "multicluster.admiralty.io",
        "kind": "clustersummaries",
    }


async def test_unauthenticated_request_gets_a_401_status(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/version") as response:
        body = await _json(response)

    assert (response.status, body["reason"]) == (401, "Unauthorized")


async def test_list_pages_with_limit_and_continue(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    for name in ("a", "b", "c"):
        apiserver.create(pod(name))

    async with http.get(
        f"{PODS}?limit=2&resourceVersion=0", headers=bearer(admin)
    ) as first:
        page = await _json(first)
    token = page["metadata"]["continue"]
    async with http.get(
        f"{PODS}?limit=2&continue={token}", headers=bearer(admin)
    ) as second:
        rest = await _json(second)

    assert [i["metadata"]["name"] for i in page["items"]] == ["a", "b"]
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    assert "continue" not in rest["metadata"]


async def test_update_with_a_stale_version_is_a_conflict(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    stale = apiserver.create(pod("p"))
    fresh = {**stale, "metadata": {**stale["metadata"], "labels": {"changed": "yes"}}}
    async with http.put(f"{PODS}/p", json=fresh, headers=bearer(admin)) as response:
        assert response.status == 200

    async with http.put(f"{PODS}/p", json=stale, headers=bearer(admin)) as response:
        body = await _json(response)

    assert (response.status, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith('Operation cannot be fulfilled on pods "p"')


async def test_merge_and_json_patches_apply(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.create(pod("p", keep="1", drop="1"))
    merge = bearer(admin, **{"Content-Type": "application/merge-patch+json"})
    json_patch = bearer(admin, **{"Content-Type": "application/json-patch+json"})

    async with http.patch(
        f"{PODS}/p",
        data=json.dumps({"metadata": {"labels": {"drop": None}}}),
        headers=merge,
    ) as response:
        assert response.status == 200
    async with http.patch(
        f"{PODS}/p",
        data=json.dumps([{"op": "add", "path": "/metadata/labels/new", "value": "2"}]),
        headers=json_patch,
    ) as response:
        patched = await _json(response)

    assert patched["metadata"]["labels"] == {"keep": "1", "new": "2"}


async def test_deletecollection_removes_only_selected_objects(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.create(pod("lose-1", parent="x"))
    apiserver.create(pod("lose-2", parent="x"))
    apiserver.create(pod("keep", parent="y"))

    async with http.delete(
        f"{PODS}?labelSelector=parent%3Dx", headers=bearer(admin)
    ) as response:
        deleted = await _json(response)
    async with http.get(PODS, headers=bearer(admin)) as response:
        left = await _json(response)

    assert sorted(i["metadata"]["name"] for i in deleted["items"]) == [
        "lose-1",
        "lose-2",
    ]
    assert [i["metadata"]["name"] for i in left["items"]] == ["keep"]


async def test_watch_from_a_compacted_version_sends_an_expired_error_event(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.create(pod("p"))
    apiserver.store.compact()

    async with http.get(
        f"{PODS}?watch=1&resourceVersion=101", headers=bearer(admin)
    ) as response:
        events = [json.loads(line) async for line in response.content]

    assert response.status == 200
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_watch_sends_bookmarks_and_ends_at_its_timeout(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.create(pod("p"))
    query = "watch=true&allowWatchBookmarks=true&timeoutSeconds=1"

    async with http.get(f"{PODS}?{query}", headers=bearer(admin)) as response:
        events = [json.loads(line) async for line in response.content]

    assert events[0]["type"] == "ADDED"
    assert "BOOKMARK" in {e["type"] for e in events[1:]}


async def test_discovery_lists_the_custom_resource_groups(
    http: aiohttp.ClientSession, admin: Credentials
) -> None:
    async with http.get("/apis", headers=bearer(admin)) as response:
        groups = {g["name"] for g in (await _json(response))["groups"]}

    assert {"multicluster.admiralty.io", "kproxy.io"} <= groups
