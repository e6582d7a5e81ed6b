"""Discovery, version and OpenAPI documents, as much of them as clients read.

Discovery is the legacy kind (``staging/src/k8s.io/apiserver/pkg/endpoints/discovery/
{root,group,version}.go``): ``APIVersions`` at ``/api``, ``APIGroupList`` at
``/apis``, ``APIGroup`` and ``APIResourceList`` below. kubectl 1.32 first asks for
the aggregated form (``Accept: application/json;g=apidiscovery.k8s.io;v=v2;
as=APIGroupDiscoveryList,...,application/json``); a server without it answers with the
plain ``application/json`` documents, and client-go's ``discovery_client.go`` then
falls back to reading every group version, which is what happens here.

OpenAPI v3 (``.../pkg/endpoints/openapi``, ``kube-openapi/pkg/handler3``) is served as
a root listing each group version and one small document per group version. Each
document has, for every kind, a PATCH operation tagged with
``x-kubernetes-group-version-kind`` and declaring the ``fieldValidation`` query
parameter, because kubectl's ``resource/query_param_verifier_v3.go`` looks for exactly
that before it leaves validation to the server; and a permissive schema per kind, so
``kubectl explain`` has something to print. OpenAPI v2 is only served as JSON; a
client asking for protobuf alone gets 406, which kubectl tolerates.
"""

from __future__ import annotations

from typing import Any

from . import catalog
from .catalog import ResourceType

GIT_VERSION = "v1.32.0"


def version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str) -> dict[str, Any]:
    versions = [
        {"groupVersion": f"{group}/{version}", "version": version}
        for version in catalog.group_versions()[group]
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = [api_group(group) for group in catalog.group_versions() if group]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for resource in catalog.RESOURCES:
        if (resource.group, resource.version) == (group, version):
            resources.append(_api_resource(resource))
            resources += [_subresource(resource, sub) for sub in resource.subresources]
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _api_resource(resource: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(catalog.ALL_VERBS),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    return entry


_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "attach": ["create", "get"],
    "portforward": ["create", "get"],
    "eviction": ["create"],
}


def _subresource(resource: ResourceType, subresource: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{resource.plural}/{subresource}",
        "singularName": "",
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": _SUBRESOURCE_VERBS[subresource],
    }
    if subresource == "eviction":
        entry.update(group="policy", version="v1", kind="Eviction")
    elif subresource in ("exec", "attach", "portforward"):
        entry["kind"] = {
            "exec": "PodExecOptions",
            "attach": "PodAttachOptions",
            "portforward": "PodPortForwardOptions",
        }[subresource]
    return entry


def openapi_v3_root() -> dict[str, Any]:
    paths = {}
    for group, versions in catalog.group_versions().items():
        for version in versions:
            prefix = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={_HASH}"}
    return {"paths": paths}


_HASH = "0123456789ABCDEF"


def openapi_v3_document(group: str, version: str) -> dict[str, Any] | None:
    """One group version's OpenAPI v3 document, or ``None`` if it is not served."""
    served = [r for r in catalog.RESOURCES if (r.group, r.version) == (group, version)]
    if not served:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": {_object_path(r): _patch_path(r) for r in served},
        "components": {"schemas": {_schema_name(r): _schema(r) for r in served}},
    }


def openapi_v2_document() -> dict[str, Any]:
    definitions = {_schema_name(r): _schema(r) for r in catalog.RESOURCES}
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": {},
        "definitions": definitions,
    }


def _gvk(resource: ResourceType) -> list[dict[str, str]]:
    return [
        {"group": resource.group, "version": resource.version, "kind": resource.kind}
    ]


def _object_path(resource: ResourceType) -> str:
    prefix = (
        f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
    )
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    return f"{prefix}{scope}/{resource.plural}/{{name}}"


def _patch_path(resource: ResourceType) -> dict[str, Any]:
    query = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force")
    ]
    return {
        "patch": {
            "operationId": f"patch{resource.kind}",
            "parameters": query,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": _gvk(resource)[0],
        }
    }


def _schema_name(resource: ResourceType) -> str:
    group = resource.group or "core"
    return f"io.k8s.standin.{group}.{resource.version}.{resource.kind}"


def _schema(resource: ResourceType) -> dict[str, Any]:
    free_form = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "description": f"{resource.kind} as served by the kproxy API server stand-in.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema."},
            "kind": {"type": "string", "description": "The REST resource this is."},
            "metadata": {**free_form, "description": "Standard object metadata."},
            "spec": {**free_form, "description": "The desired state."},
            "status": {**free_form, "description": "The observed state."},
        },
        "x-kubernetes-group-version-kind": _gvk(resource),
        "x-kubernetes-preserve-unknown-fields": True,
    }
