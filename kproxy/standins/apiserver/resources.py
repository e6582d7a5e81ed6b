"""The REST verbs on resources: get, list, create, update, patch, delete, deletecollection.

Shaped after ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/{get,create,update,
patch,delete}.go``. Lists carry ``metadata.resourceVersion`` (the store's current
version, whatever ``resourceVersion`` was asked, ``0`` included) and page with
``limit`` and an opaque ``continue`` token; a delete returns the object for pods (a
graceful deletion returns it) and a ``Success`` status otherwise; a deletecollection
returns the list of what it deleted. ``propagationPolicy``, ``fieldManager`` and
``fieldValidation`` are accepted and have no effect: there are no dependents, owners of
fields or schemas here.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import yaml
from aiohttp import web

from . import patching, selectors, statuses, tables
from .catalog import ResourceType
from .routing import Target
from .store import Object, Store


def respond(body: Any, status: int = 200) -> web.Response:
    # kube-apiserver sends no charset parameter; client-go's discovery client only
    # decodes a Status from a bare application/json.
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={"Content-Type": "application/json"},
    )


def scope(resource: ResourceType, target: Target) -> str:
    """The namespace an object of the resource lives in for this request."""
    return target.namespace if resource.namespaced else ""


async def handle(store: Store, request: web.Request, target: Target) -> web.Response:
    """Serve one resource request whose verb is not watch and not a stream."""
    assert target.resource is not None  # noqa: S101
    verb = target.verb
    if target.subresource and target.subresource != "status":
        raise statuses.method_not_supported(target.plural, target.api_group, verb)
    if verb == "get":
        return get(store, request, target)
    if verb == "list":
        return list_objects(store, request, target)
    if verb == "create":
        return create(store, target, await _body(request))
    if verb == "update":
        return update(store, request, target, await _body(request))
    if verb == "patch":
        return await patch(store, request, target)
    if verb == "delete":
        return delete(store, request, target)
    if verb == "deletecollection":
        return delete_collection(store, request, target)
    raise statuses.method_not_supported(target.plural, target.api_group, verb)


def get(store: Store, request: web.Request, target: Target) -> web.Response:
    resource = _resource(target)
    obj = store.get(resource, scope(resource, target), target.name)
    version = tables.wants_table(request.headers.get("Accept", ""))
    if version:
        return respond(_table(resource, request, [obj], version, store))
    return respond(obj)


def list_objects(store: Store, request: web.Request, target: Target) -> web.Response:
    resource = _resource(target)
    objects = select(store, request, target)
    objects, token = _page(objects, request.query, store.resource_version)
    version = tables.wants_table(request.headers.get("Accept", ""))
    if version:
        return respond(_table(resource, request, objects, version, store, token))
    metadata: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
    if token:
        metadata["continue"] = token
    return respond(
        {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": objects,
        }
    )


def select(store: Store, request: web.Request, target: Target) -> list[Object]:
    """The objects a list, watch or deletecollection is about, after its selectors."""
    resource = _resource(target)
    matches_labels = selectors.label_selector(request.query.get("labelSelector", ""))
    matches_fields = selectors.field_selector(
        request.query.get("fieldSelector", ""), resource.field_labels
    )
    return [
        obj
        for obj in store.objects(resource, scope(resource, target))
        if matches_labels(obj) and matches_fields(obj)
    ]


def create(store: Store, target: Target, body: Object) -> web.Response:
    resource = _resource(target)
    _check_kind(resource, body)
    return respond(store.create(resource, scope(resource, target), body), 201)


def update(
    store: Store, request: web.Request, target: Target, body: Object
) -> web.Response:
    resource = _resource(target)
    _check_kind(resource, body)
    sent_name = body.get("metadata", {}).get("name", "")
    if sent_name != target.name:
        raise statuses.bad_request(
            f"the name of the object ({sent_name}) does not match the name on the URL "
            f"({target.name})"
        )
    updated = store.update(
        resource, scope(resource, target), body, subresource=target.subresource
    )
    return respond(updated)


async def patch(store: Store, request: web.Request, target: Target) -> web.Response:
    resource = _resource(target)
    namespace = scope(resource, target)
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type not in patching.PATCH_TYPES:
        raise statuses.unsupported_media_type(patching.PATCH_TYPES)
    text = await request.text()
    if content_type == patching.APPLY_PATCH:
        return _apply(store, target, _parse(text, yaml_allowed=True))
    current = store.get(resource, namespace, target.name)
    patched = _patched(content_type, current, _parse(text, yaml_allowed=False))
    patched.setdefault("metadata", {})
    patched["metadata"].setdefault(
        "resourceVersion", current["metadata"]["resourceVersion"]
    )
    patched["metadata"]["name"] = target.name
    return respond(
        store.update(resource, namespace, patched, subresource=target.subresource)
    )


def delete(store: Store, request: web.Request, target: Target) -> web.Response:
    resource = _resource(target)
    removed = store.delete(resource, scope(resource, target), target.name)
    if resource.kind == "Pod":
        return respond(removed)
    metadata = removed["metadata"]
    return respond(
        statuses.success(resource.plural, resource.group, target.name, metadata["uid"])
    )


def delete_collection(
    store: Store, request: web.Request, target: Target
) -> web.Response:
    resource = _resource(target)
    removed = [
        store.delete(resource, scope(resource, target), obj["metadata"]["name"])
        for obj in select(store, request, target)
    ]
    return respond(
        {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(store.resource_version)},
            "items": removed,
        }
    )


def _resource(target: Target) -> ResourceType:
    assert target.resource is not None  # noqa: S101
    return target.resource


def _check_kind(resource: ResourceType, body: Object) -> None:
    kind = body.get("kind")
    if kind and kind != resource.kind:
        raise statuses.bad_request(
            f"the API version in the data ({body.get('apiVersion', '')}) does not match "
            f"the expected API version ({resource.api_version})"
            if body.get("apiVersion") != resource.api_version
            else f"the kind in the data ({kind}) does not match the expected kind "
            f"({resource.kind})"
        )


async def _body(request: web.Request) -> Object:
    body: Object = _parse(await request.text(), yaml_allowed=True)
    return body


def _parse(text: str, *, yaml_allowed: bool) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if not yaml_allowed:
            raise statuses.bad_request(f"error decoding patch: {exc}") from exc
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise statuses.bad_request(f"error decoding YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise statuses.bad_request("Object 'Kind' is missing in the request body")
    body: Object = parsed
    return body


def _patched(content_type: str, current: Object, patch_body: Any) -> Object:
    if content_type == patching.JSON_PATCH:
        result = patching.json_patch(current, patch_body)
    elif content_type == patching.STRATEGIC_MERGE_PATCH:
        result = patching.strategic_merge_patch(current, patch_body)
    else:
        result = patching.merge_patch(current, patch_body)
    if not isinstance(result, dict):
        raise statuses.bad_request("the patch did not produce an object")
    return result


def _apply(store: Store, target: Target, applied: Object) -> web.Response:
    resource = _resource(target)
    namespace = scope(resource, target)
    try:
        current = store.get(resource, namespace, target.name)
    except statuses.ApiError:
        applied.setdefault("metadata", {})["name"] = target.name
        return respond(store.create(resource, namespace, applied), 201)
    merged = patching.merge_patch(current, applied)
    merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return respond(
        store.update(resource, namespace, merged, subresource=target.subresource)
    )


def _page(objects: list[Object], query: Any, version: int) -> tuple[list[Object], str]:
    start = _continue_from(query.get("continue", ""))
    if start:
        objects = [o for o in objects if _sort_key(o) > start]
    limit = int(query.get("limit", "0") or 0)
    if limit <= 0 or len(objects) <= limit:
        return objects, ""
    page = objects[:limit]
    token = {"rv": version, "start": list(_sort_key(page[-1]))}
    return page, base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _continue_from(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
        return (str(start[0]), str(start[1]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError) as exc:
        raise statuses.bad_request(f"continue key is not valid: {exc}") from exc


def _sort_key(obj: Object) -> tuple[str, str]:
    metadata = obj.get("metadata", {})
    return (metadata.get("namespace", ""), metadata.get("name", ""))


def _table(
    resource: ResourceType,
    request: web.Request,
    objects: list[Object],
    version: str,
    store: Store,
    token: str = "",
) -> Object:
    return tables.table(
        resource,
        objects,
        version=version,
        resource_version=str(store.resource_version),
        include_object=request.query.get("includeObject", "Metadata"),
        continue_token=token,
    )
